package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/photomaker"
)

// The tiny models are loaded once per test binary and shared: a pipeline
// runs one generation at a time whatever the number of servers on it.
var (
	pipeMu sync.Mutex
	pipes  = map[string]*photomaker.Pipeline{}
)

func tinyPipeline(t testing.TB, withAdapter bool) *photomaker.Pipeline {
	t.Helper()
	pipeMu.Lock()
	defer pipeMu.Unlock()
	key := "sdxl"
	cfg := photomaker.Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", Threads: 1}
	if withAdapter {
		key = "pm"
		cfg.PhotoMaker = golden.Path("photomaker/photomaker-v1-tiny.safetensors")
	}
	if p := pipes[key]; p != nil {
		return p
	}
	p, err := photomaker.Load(context.Background(), cfg)
	require.NoError(t, err)
	pipes[key] = p
	return p
}

// startServer serves p on a loopback test server; both are closed at the
// end of the test (the job server first, so its streams end).
func startServer(t testing.TB, p *photomaker.Pipeline, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.ModelName == "" {
		opts.ModelName = golden.Path("tiny-sdxl.safetensors")
		if isPhotoMaker(p.Kind()) {
			opts.AdapterName = golden.Path("photomaker/photomaker-v1-tiny.safetensors")
		}
	}
	srv := New(p, opts)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return srv, ts
}

func facePNG(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(golden.Path("faces/astronaut_0.png"))
	require.NoError(t, err)
	return b
}

// multipartBody builds a generation form.
func multipartBody(t testing.TB, fields map[string]string, photos ...[]byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		require.NoError(t, mw.WriteField(k, v))
	}
	for i, p := range photos {
		fw, err := mw.CreateFormFile("id_image[]", "face"+string(rune('0'+i))+".png")
		require.NoError(t, err)
		_, err = fw.Write(p)
		require.NoError(t, err)
	}
	require.NoError(t, mw.Close())
	return &buf, mw.FormDataContentType()
}

func postForm(t testing.TB, url string, fields map[string]string, photos ...[]byte) *http.Response {
	t.Helper()
	body, ct := multipartBody(t, fields, photos...)
	res, err := http.Post(url, ct, body)
	require.NoError(t, err)
	return res
}

func postJSON(t testing.TB, url string, v any) *http.Response {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	res, err := http.Post(url, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	return res
}

// decodeBody reads a JSON response into v and closes it.
func decodeBody(t testing.TB, res *http.Response, v any) {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), "body: %s", b)
}

// errorOf returns the error message of a JSON error response.
func errorOf(t testing.TB, res *http.Response) string {
	t.Helper()
	var e errorBody
	decodeBody(t, res, &e)
	return e.Error
}

func getJob(t testing.TB, base, id string) jobView {
	t.Helper()
	res, err := http.Get(base + "/api/jobs/" + id)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	return v
}

// waitFor polls the job until cond holds (or fails the test after d).
func waitFor(t testing.TB, base, id string, d time.Duration, cond func(jobView) bool) jobView {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := getJob(t, base, id)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: condition not met after %s; last state %+v", id, d, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ended(v jobView) bool {
	return v.Status == stateDone || v.Status == stateError || v.Status == stateCanceled
}

// readEvents reads a job's SSE stream to its end.
func readEvents(t testing.TB, url string) (events []string, views []jobView) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var v jobView
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v))
			events = append(events, event)
			views = append(views, v)
		}
	}
	require.NoError(t, sc.Err())
	return events, views
}

func getPNG(t testing.TB, url string) ([]byte, image.Image) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "image/png", res.Header.Get("Content-Type"))
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	return b, img
}

// longRequest keeps the worker busy until it is canceled.
func longRequest() map[string]string {
	return map[string]string{"prompt": "a lighthouse", "width": "32", "height": "32", "steps": "1000", "guidance": "1"}
}
