package server

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A generation request from anyone is a job or a 4xx *httpError, never a
// panic (the fuzzer draws the body; the first byte picks the content type).
func FuzzParseRequest(f *testing.F) {
	srv := newServer(&fakeGen{}, "PhotoMaker v1 adapter", "CPU", Options{Logger: quietLogger(), MaxUploadBytes: 1 << 20})
	f.Cleanup(func() { srv.Close() })
	types := []string{"application/json", "multipart/form-data; boundary=b", "application/x-www-form-urlencoded", ""}
	f.Add([]byte("\x00{\"prompt\": \"a photo of a man img\", \"width\": 64, \"height\": 64, \"id_images\": [\"aGVsbG8=\"]}"))
	f.Add([]byte("\x01--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na man img\r\n--b\r\nContent-Disposition: form-data; name=\"id_image[]\"; filename=\"a.png\"\r\n\r\n\x89PNG\r\n--b--\r\n"))
	f.Add([]byte("\x02prompt=a+man+img&steps=3&guidance=0&style_strength=1e309"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		r := httptest.NewRequest(http.MethodPost, "/api/generate", bytes.NewReader(b[1:]))
		if ct := types[int(b[0])%len(types)]; ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		j, err := srv.parseRequest(httptest.NewRecorder(), r)
		var he *httpError
		switch {
		case err == nil && j == nil:
			t.Fatal("no job and no error")
		case err != nil && (!errors.As(err, &he) || he.status < 400 || he.status > 499):
			t.Fatalf("error %v is not a 4xx", err)
		}
	})
}
