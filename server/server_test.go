package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/internal/pngtext"
	"github.com/gophotomaker/photomaker/photomaker"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestGenerateWithIDPhotos(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, true), Options{})
	res := postForm(t, ts.URL+"/api/generate", map[string]string{
		"prompt": "a photo of a man img, wearing a spacesuit", "style": "photographic",
		"width": "64", "height": "64", "steps": "2", "seed": "7", "style_strength": "0", "guidance": "0", "timestep_spacing": "Trailing",
	}, facePNG(t))
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.NotEmpty(t, v.ID)
	require.Equal(t, "/api/jobs/"+v.ID, res.Header.Get("Location"))
	require.Equal(t, int64(7), v.Seed)
	require.Equal(t, 1, v.Request.IDImages)
	require.Equal(t, "Photographic (Default)", v.Request.Style)
	require.Equal(t, "trailing", v.Request.Spacing)

	events, views := readEvents(t, ts.URL+"/api/jobs/"+v.ID+"/events")
	require.NotEmpty(t, events)
	require.Equal(t, "end", events[len(events)-1])
	last := views[len(views)-1]
	require.Equal(t, stateDone, last.Status, last.Error)
	require.Equal(t, 1.0, last.Progress.Fraction)
	sawDenoise := false
	for _, pv := range views {
		if pv.Progress.Stage == "denoise" && pv.Progress.Total == 2 {
			sawDenoise = true
		}
	}
	require.True(t, sawDenoise, "no denoise progress among %d events", len(views))
	require.Len(t, last.Images, 1)

	b, img := getPNG(t, ts.URL+last.Images[0])
	require.Equal(t, image.Rect(0, 0, 64, 64), img.Bounds())
	text, err := pngtext.Read(b)
	require.NoError(t, err)
	params := text["parameters"]
	require.Contains(t, params, "cinematic photo a photo of a man img, wearing a spacesuit")
	require.Contains(t, params, "Seed: 7")
	require.Contains(t, params, "Steps: 2")
	require.Contains(t, params, "PhotoMaker: photomaker-v1-tiny.safetensors")
	require.Contains(t, params, "ID images: 1")
	// Zeros asked are zeros, not the defaults: no guidance, the ID from
	// the first step.
	require.Contains(t, params, "CFG scale: 0,")
	require.Contains(t, params, "Style strength: 0,")
	require.Contains(t, params, "Timestep spacing: trailing")

	// The job stays available.
	got := getJob(t, ts.URL, v.ID)
	require.Equal(t, stateDone, got.Status)
	require.Len(t, got.Images, 1)
}

func TestGeneratePlainJSONWait(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, false), Options{})
	// One image: the PNG itself.
	res := postJSON(t, ts.URL+"/api/generate?wait=1", map[string]any{
		"prompt": "a lighthouse at dusk", "width": 32, "height": 64, "steps": 1, "seed": 42})
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s: %s", res.Status, b)
	}
	require.Equal(t, "image/png", res.Header.Get("Content-Type"))
	require.Equal(t, "42", res.Header.Get("X-Seed"))
	require.NotEmpty(t, res.Header.Get("X-Job-Id"))
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 32, 64), img.Bounds())
	text, err := pngtext.Read(b)
	require.NoError(t, err)
	require.Contains(t, text["parameters"], "a lighthouse at dusk\nNegative prompt: \nSteps: 1")
	require.NotContains(t, text["parameters"], "PhotoMaker:")

	// Two images, as JSON; a random seed is reported.
	res = postJSON(t, ts.URL+"/api/generate?wait=1&format=json", map[string]any{
		"prompt": "a lighthouse at dusk", "width": 32, "height": 32, "steps": 1, "n": 2, "seed": -1, "style": "neonpunk"})
	require.Equal(t, http.StatusOK, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, stateDone, v.Status)
	require.Len(t, v.Images, 2)
	require.GreaterOrEqual(t, v.Seed, int64(0))
	require.Equal(t, "Neonpunk", v.Request.Style)
	for i, u := range v.Images {
		b, img := getPNG(t, ts.URL+u)
		require.Equal(t, 32, img.Bounds().Dx())
		text, err := pngtext.Read(b)
		require.NoError(t, err)
		require.Contains(t, text["parameters"], fmt.Sprintf(", Batch size: 2, Batch pos: %d", i), "the images share the seed")
	}
	for _, name := range []string{"2.png", "+0.png", "00.png", "-1.png", "1", "1.PNG"} { // one name per image
		res, err = http.Get(ts.URL + "/api/jobs/" + v.ID + "/images/" + name)
		require.NoError(t, err)
		require.Equal(t, http.StatusNotFound, res.StatusCode, name)
		res.Body.Close()
	}

	// A form without photos works too on plain SDXL.
	res = postForm(t, ts.URL+"/api/generate?wait=1", map[string]string{"prompt": "a cat", "width": "32", "height": "32", "steps": "1"})
	require.Equal(t, http.StatusOK, res.StatusCode)
	res.Body.Close()
}

func TestInfoAndPage(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, true), Options{MaxQueue: 3})
	res, err := http.Get(ts.URL + "/api/info")
	require.NoError(t, err)
	var info struct {
		Kind       string
		PhotoMaker bool
		Device     string
		Styles     []string
		Sizes      []photomaker.SizePreset
		Defaults   map[string]any
		Limits     map[string]any
		VRAM       *string
	}
	decodeBody(t, res, &info)
	require.NotNil(t, info.VRAM, "the VRAM mode is reported")
	require.Empty(t, *info.VRAM) // on the CPU
	require.Contains(t, info.Kind, "PhotoMaker v1")
	require.True(t, info.PhotoMaker)
	require.NotEmpty(t, info.Device)
	require.Len(t, info.Styles, len(photomaker.Styles))
	require.Len(t, info.Sizes, 14)
	require.Equal(t, "img", info.Defaults["trigger_word"])
	require.Equal(t, float64(photomaker.DefaultSteps), info.Defaults["steps"])
	require.Equal(t, photomaker.DefaultGuidance, info.Defaults["guidance"])
	require.Equal(t, 3.0, info.Limits["max_queue"])

	for _, path := range []string{"/", "/static/app.js", "/static/style.css"} {
		res, err := http.Get(ts.URL + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, path)
		require.NotEmpty(t, b, path)
		require.Contains(t, res.Header.Get("Content-Security-Policy"), "default-src 'self'")
	}
	for _, path := range []string{"/nope", "/api/nope", "/static/", "/api/jobs/abc", "/api/jobs/abc/events"} {
		res, err := http.Get(ts.URL + path)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusNotFound, res.StatusCode, path)
	}
}

// hugePNG is a valid PNG header announcing a w×h canvas (the pixels are
// missing: the server must refuse it from the header alone).
func hugePNG(t *testing.T, w, h uint32) []byte {
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))))
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestBadRequests(t *testing.T) {
	_, pm := startServer(t, tinyPipeline(t, true), Options{MaxImages: 2})
	_, plain := startServer(t, tinyPipeline(t, false), Options{})
	face := facePNG(t)
	ok := map[string]string{"prompt": "a photo of a man img", "width": "64", "height": "64", "steps": "1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range ok {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name   string
		url    string
		fields map[string]string
		photos [][]byte
		status int
		want   string
	}{
		{"unknown style", pm.URL, with("style", "vaporwave-deluxe"), [][]byte{face}, 400, `unknown style "vaporwave-deluxe"`},
		{"size not multiple of 8", pm.URL, with("width", "65"), [][]byte{face}, 400, "multiples of 8"},
		{"size too big", pm.URL, with("width", "4096"), [][]byte{face}, 400, "limit of 2048"},
		{"no trigger word", pm.URL, with("prompt", "a photo of a man"), [][]byte{face}, 400, "trigger word img"},
		{"trigger twice", pm.URL, with("prompt", "a man img and a man img"), [][]byte{face}, 400, "appears 2 times"},
		{"no photos", pm.URL, ok, nil, 400, "upload at least one ID photo"},
		{"too many photos", pm.URL, ok, [][]byte{face, face, face}, 400, "at most 2"},
		{"photos without adapter", plain.URL, with("prompt", "a cat"), [][]byte{face}, 400, "restart it with --photomaker"},
		{"empty prompt", plain.URL, with("prompt", "  "), nil, 400, "prompt is empty"},
		{"bad number", plain.URL, with("steps", "many"), nil, 400, `field "steps": want a whole number`},
		{"too many steps", plain.URL, with("steps", "100000"), nil, 400, "steps must be between 1 and 200"},
		{"bad seed", plain.URL, with("seed", "-5"), nil, 400, "seed must be -1"},
		{"bad spacing", plain.URL, with("timestep_spacing", "spread"), nil, 400, `timestep_spacing: unknown timestep spacing "spread" (want leading, linspace, trailing)`},
		{"seed beyond JSON's exact numbers", plain.URL, with("seed", "9007199254740992"), nil, 400, "a whole number from 0 to 9007199254740991"},
		{"bad strength", pm.URL, with("style_strength", "150"), [][]byte{face}, 400, "percentage"},
		{"unknown field", plain.URL, with("widht", "64"), nil, 400, `unknown field "widht"`},
		{"bad negative prompt", plain.URL, with("negative_prompt", "blurry \xff"), nil, 400, "negative prompt is not valid UTF-8"},
		{"corrupt photo", pm.URL, ok, [][]byte{[]byte("not an image at all")}, 400, "not a PNG, JPEG, WebP or GIF"},
		{"huge canvas photo", pm.URL, ok, [][]byte{hugePNG(t, 100000, 100000)}, 413, "image too large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := postForm(t, c.url+"/api/generate", c.fields, c.photos...)
			require.Equal(t, c.status, res.StatusCode)
			require.Contains(t, errorOf(t, res), c.want)
		})
	}

	t.Run("json", func(t *testing.T) {
		res, err := http.Post(plain.URL+"/api/generate", "application/json", strings.NewReader(`{"prompt": "a cat", "stpes": 3}`))
		require.NoError(t, err)
		require.Equal(t, 400, res.StatusCode)
		require.Contains(t, errorOf(t, res), "stpes")
		res, err = http.Post(plain.URL+"/api/generate", "application/json", strings.NewReader(`{"prompt": `))
		require.NoError(t, err)
		require.Equal(t, 400, res.StatusCode)
		res.Body.Close()
	})
	t.Run("content type", func(t *testing.T) {
		res, err := http.Post(plain.URL+"/api/generate", "text/plain", strings.NewReader("a cat"))
		require.NoError(t, err)
		require.Equal(t, http.StatusUnsupportedMediaType, res.StatusCode)
		require.Contains(t, errorOf(t, res), "multipart/form-data")
	})
	t.Run("method", func(t *testing.T) {
		res, err := http.Get(plain.URL + "/api/generate")
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
	})
	t.Run("base64 photo in JSON", func(t *testing.T) {
		res := postJSON(t, pm.URL+"/api/generate", map[string]any{"prompt": "a photo of a man", "id_images": []string{
			"data:image/png;base64," + base64.StdEncoding.EncodeToString(face)}})
		require.Equal(t, 400, res.StatusCode) // decoded fine, then the missing trigger word is reported
		require.Contains(t, errorOf(t, res), "trigger word img")
	})
	// Nothing was queued by any of these.
	res, err := http.Get(pm.URL + "/api/jobs")
	require.NoError(t, err)
	var list struct{ Jobs []jobView }
	decodeBody(t, res, &list)
	require.Empty(t, list.Jobs)
}

func TestUploadTooLarge(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, true), Options{MaxUploadBytes: 64 << 10})
	big := make([]byte, 200<<10)
	fields := map[string]string{"prompt": "a photo of a man img"}
	// With a Content-Length: refused before reading.
	res := postForm(t, ts.URL+"/api/generate", fields, big)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	require.Contains(t, errorOf(t, res), "upload limit of 64 KiB")
	// Chunked (no length): refused once the limit is crossed.
	body, ct := multipartBody(t, fields, big)
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/api/generate", io.MultiReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	req.ContentLength = -1
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	require.Contains(t, errorOf(t, res), "upload limit")
}

func TestQueueFullAndCancel(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, false), Options{MaxQueue: 1, MaxSteps: 1000})
	// A keeps the worker busy, B waits, C is refused.
	res := postForm(t, ts.URL+"/api/generate", longRequest())
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var a jobView
	decodeBody(t, res, &a)
	waitFor(t, ts.URL, a.ID, time.Minute, func(v jobView) bool { return v.Status == stateRunning && v.Progress.Stage == "denoise" })

	res = postForm(t, ts.URL+"/api/generate", longRequest())
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var b jobView
	decodeBody(t, res, &b)
	require.Equal(t, stateQueued, b.Status)
	require.Equal(t, 1, b.QueuePosition)

	res = postForm(t, ts.URL+"/api/generate", longRequest())
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	require.NotEmpty(t, res.Header.Get("Retry-After"))
	require.Contains(t, errorOf(t, res), "the queue is full (1 job waiting)")

	// Cancel the queued one: at once.
	del := func(id string) jobView {
		req, _ := http.NewRequest(http.MethodDelete, ts.URL+"/api/jobs/"+id, nil)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode)
		var v jobView
		decodeBody(t, res, &v)
		return v
	}
	vb := del(b.ID)
	require.Equal(t, stateCanceled, vb.Status)
	require.Contains(t, vb.Error, "canceled by request")

	// There is room again.
	res = postForm(t, ts.URL+"/api/generate", map[string]string{"prompt": "a cat", "width": "32", "height": "32", "steps": "1"})
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var c jobView
	decodeBody(t, res, &c)

	// Cancel the running one: it stops at the next step and keeps nothing.
	va := del(a.ID)
	require.Equal(t, stateCanceled, va.Status)
	require.Empty(t, va.Images)
	res, err := http.Get(ts.URL + "/api/jobs/" + a.ID + "/images/0.png")
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	require.Contains(t, errorOf(t, res), "canceled")

	// The queue moves on; deleting a finished job changes nothing.
	vc := waitFor(t, ts.URL, c.ID, time.Minute, ended)
	require.Equal(t, stateDone, vc.Status, vc.Error)
	require.Equal(t, stateDone, del(c.ID).Status)
}

func TestClientDisconnectCancels(t *testing.T) {
	srv, ts := startServer(t, tinyPipeline(t, false), Options{MaxSteps: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, ct := multipartBody(t, longRequest())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/api/generate?wait=1", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	done := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("unexpected answer %s", res.Status)
		}
		done <- err
	}()

	// Find the job once it runs.
	var id string
	deadline := time.Now().Add(time.Minute)
	for id == "" {
		require.True(t, time.Now().Before(deadline), "the job never started")
		res, err := http.Get(ts.URL + "/api/jobs")
		require.NoError(t, err)
		var list struct{ Jobs []jobView }
		decodeBody(t, res, &list)
		for _, j := range list.Jobs {
			if j.Status == stateRunning && j.Progress.Done > 0 {
				id = j.ID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	v := waitFor(t, ts.URL, id, time.Minute, ended)
	require.Equal(t, stateCanceled, v.Status)
	require.Contains(t, v.Error, "client disconnected")
	require.Empty(t, v.Images)
	srv.mu.Lock()
	require.Nil(t, srv.running)
	require.Empty(t, srv.pending)
	srv.mu.Unlock()
}

func TestJobTimeout(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, false), Options{MaxSteps: 1000, JobTimeout: 300 * time.Millisecond})
	res := postForm(t, ts.URL+"/api/generate?wait=1", longRequest())
	require.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, stateError, v.Status)
	require.Contains(t, v.Error, "longer than the server's limit of 300ms")
	require.Empty(t, v.Images)
}

// invalidGen refuses every request as the pipeline refuses a bad one.
type invalidGen struct{}

func (invalidGen) Generate(context.Context, photomaker.Request) (*photomaker.Result, error) {
	return nil, fmt.Errorf("%w: something the server could not check", photomaker.ErrInvalidRequest)
}

func TestPipelineErrorIs400InWaitMode(t *testing.T) {
	srv := newServer(invalidGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	res := postJSON(t, ts.URL+"/api/generate?wait=1", map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 1})
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, stateError, v.Status)
	require.Contains(t, v.Error, "could not check")
	// An unknown sampler is refused at once, before it takes a queue slot.
	res = postJSON(t, ts.URL+"/api/generate?wait=1", map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 1, "sampler": "no-such-sampler"})
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	var e errorBody
	decodeBody(t, res, &e)
	require.Contains(t, e.Error, `unknown sampler "no-such-sampler"`)
}

func TestCloseCancelsWork(t *testing.T) {
	srv, ts := startServer(t, tinyPipeline(t, false), Options{MaxSteps: 1000})
	res := postForm(t, ts.URL+"/api/generate", longRequest())
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var a jobView
	decodeBody(t, res, &a)
	res = postForm(t, ts.URL+"/api/generate", longRequest())
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	var b jobView
	decodeBody(t, res, &b)
	waitFor(t, ts.URL, a.ID, time.Minute, func(v jobView) bool { return v.Status == stateRunning })

	// An event stream open on the running job ends when the server closes.
	streamDone := make(chan []jobView, 1)
	go func() {
		_, views := readEvents(t, ts.URL+"/api/jobs/"+a.ID+"/events")
		streamDone <- views
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	require.NoError(t, srv.Close())
	t.Logf("Close took %s", time.Since(start))
	for _, id := range []string{a.ID, b.ID} {
		v := getJob(t, ts.URL, id)
		require.Equal(t, stateCanceled, v.Status)
		require.Contains(t, v.Error, "shutting down")
	}
	select {
	case views := <-streamDone:
		require.Equal(t, stateCanceled, views[len(views)-1].Status)
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream did not end")
	}
	res = postForm(t, ts.URL+"/api/generate", map[string]string{"prompt": "a cat"})
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Contains(t, errorOf(t, res), "shutting down")
}

// fakeGen is a pipeline stand-in for the store's bookkeeping tests.
type fakeGen struct{ calls atomic.Int64 }

func (f *fakeGen) Generate(ctx context.Context, req photomaker.Request) (*photomaker.Result, error) {
	f.calls.Add(1)
	if req.Progress != nil {
		for i := 1; i <= req.Steps; i++ {
			req.Progress(photomaker.Progress{Stage: "denoise", Done: i, Total: req.Steps})
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, req.Width, req.Height))
	img.Set(0, 0, color.White)
	res := &photomaker.Result{Seed: req.Seed, Request: req}
	for i := 0; i < req.N; i++ {
		res.Images = append(res.Images, img)
	}
	return res, ctx.Err()
}

func TestFinishedJobsAreEvicted(t *testing.T) {
	gen := &fakeGen{}
	srv := newServer(gen, "SDXL single-file checkpoint", "CPU", Options{KeepJobs: 3, Logger: quietLogger()})
	defer srv.Close()
	var ids []string
	for i := 0; i < 5; i++ {
		jr := &jsonRequest{Prompt: "x", Width: 8, Height: 8, Steps: 2}
		j, err := srv.buildJob(jr, nil)
		require.NoError(t, err)
		j.id, j.created, j.end = fmt.Sprint(i), time.Now(), make(chan struct{})
		j.ctx, j.cancel = context.WithCancelCause(srv.ctx)
		require.NoError(t, srv.submit(j))
		<-j.end
		ids = append(ids, j.id)
	}
	require.Equal(t, int64(5), gen.calls.Load())
	for i, id := range ids {
		if i < 2 {
			require.Nil(t, srv.lookup(id), "job %s should be evicted", id)
		} else {
			require.NotNil(t, srv.lookup(id), "job %s should be kept", id)
		}
	}
	srv.mu.Lock()
	require.Len(t, srv.finished, 3)
	require.Len(t, srv.jobs, 3)
	srv.mu.Unlock()
}

func TestPanicBecomesJobError(t *testing.T) {
	srv := newServer(panicGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	j, err := srv.buildJob(&jsonRequest{Prompt: "x", Width: 8, Height: 8, Steps: 1}, nil)
	require.NoError(t, err)
	j.id, j.created, j.end = "p", time.Now(), make(chan struct{})
	j.ctx, j.cancel = context.WithCancelCause(srv.ctx)
	require.NoError(t, srv.submit(j))
	<-j.end
	v := srv.view(j)
	require.Equal(t, stateError, v.Status)
	require.Contains(t, v.Error, "internal error: boom")
}

type panicGen struct{}

func (panicGen) Generate(context.Context, photomaker.Request) (*photomaker.Result, error) {
	panic("boom")
}

func TestJobViewJSON(t *testing.T) {
	// The documented field names stay stable.
	b, err := json.Marshal(jobView{Images: []string{}})
	require.NoError(t, err)
	for _, k := range []string{`"id"`, `"status"`, `"progress"`, `"seed"`, `"images"`, `"request"`} {
		require.Contains(t, string(b), k)
	}
}

// While denoising, a job's view says how long the remaining steps of all
// its images will take at the pace so far.
func TestDenoiseTimeLeft(t *testing.T) {
	s := &Server{}
	j := &job{req: photomaker.Request{N: 2}, state: stateRunning, changed: make(chan struct{})}
	s.progress(j, photomaker.Progress{Stage: "encode", Done: 1, Total: 1})
	require.Zero(t, s.viewLocked(j).Progress.SecondsLeft, "not denoising yet")
	for d := 0; d <= 4; d++ { // the first image
		s.progress(j, photomaker.Progress{Stage: "denoise", Done: d, Total: 4})
	}
	s.progress(j, photomaker.Progress{Stage: "denoise", Done: 0, Total: 4}) // the second image's loop
	s.progress(j, photomaker.Progress{Stage: "denoise", Done: 1, Total: 4})
	require.Equal(t, 5, j.stepsDone)
	j.denoiseStart = j.denoiseLast.Add(-10 * time.Second) // 2 s a step
	require.InDelta(t, 6, s.viewLocked(j).Progress.SecondsLeft, 1e-9)

	b, err := json.Marshal(s.viewLocked(j).Progress)
	require.NoError(t, err)
	require.Contains(t, string(b), `"seconds_left":6`)
	s.progress(j, photomaker.Progress{Stage: "decode", Done: 0, Total: 1})
	require.Zero(t, s.viewLocked(j).Progress.SecondsLeft)
	s.progress(j, photomaker.Progress{Stage: "denoise", Done: 2, Total: 4})
	require.NotZero(t, s.viewLocked(j).Progress.SecondsLeft)
	j.state = stateCanceled // while denoising
	require.Zero(t, s.viewLocked(j).Progress.SecondsLeft, "an ended job has nothing left")
}

// The progress bar of a job of several images only grows: the second
// image's loop does not start it again from zero.
func TestProgressFractionGrows(t *testing.T) {
	for _, order := range []string{"decode after all loops", "decode after each loop"} {
		s := &Server{}
		j := &job{req: photomaker.Request{N: 2}, state: stateRunning, changed: make(chan struct{})}
		var fractions []float64
		send := func(stage string, done, total int) {
			s.progress(j, photomaker.Progress{Stage: stage, Done: done, Total: total})
			fractions = append(fractions, j.fraction)
		}
		decode := func() { send("decode", 0, 1); send("decode", 1, 1) }
		send("encode", 1, 1)
		for img := 0; img < 2; img++ {
			for d := 0; d <= 4; d++ {
				send("denoise", d, 4)
			}
			if order == "decode after each loop" {
				decode()
			}
		}
		if order == "decode after all loops" {
			decode()
			decode()
		}
		for i := 1; i < len(fractions); i++ {
			require.GreaterOrEqual(t, fractions[i], fractions[i-1], "%s: fractions %v", order, fractions)
		}
		require.InDelta(t, 1, fractions[len(fractions)-1], 1e-9, order)
	}
}

// oomGen fails like a pipeline whose request does not fit the memory.
type oomGen struct{}

func (oomGen) Generate(context.Context, photomaker.Request) (*photomaker.Result, error) {
	return nil, fmt.Errorf("denoising step 1 of 4: %w; try a smaller image size or closing other programs",
		&ggml.ComputeMemoryError{Device: "CPU", CPU: true, Need: 5 << 30, Free: 1 << 30})
}

// A job too large for the server's memory fails with 507 and the advice.
func TestOutOfMemoryIs507(t *testing.T) {
	srv := newServer(oomGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	res := postJSON(t, ts.URL+"/api/generate?wait=1", map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 4})
	require.Equal(t, http.StatusInsufficientStorage, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, stateError, v.Status)
	require.Contains(t, v.Error, "needs 5.0 GiB of working memory on CPU but only 1.0 GiB is free; try a smaller image size")
}

// What only another site or a hostile client sends is refused before any
// work, and refusals close the connection (an unread body is not drained).
func TestRefusesHostileRequests(t *testing.T) {
	srv := newServer(&fakeGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	ts := httptest.NewServer(srv) // on 127.0.0.1
	defer ts.Close()
	good := `{"prompt": "a cat", "width": 32, "height": 32, "steps": 1}`
	for _, tc := range []struct {
		name, method, path, body, host, origin string
		status                                 int
		msg                                    string
	}{
		{"DNS rebinding", "GET", "/api/jobs", "", "evil.example:8080", "", 403, `host "evil.example:8080" is not this server's`},
		{"cross-site POST", "POST", "/api/generate", good, "", "http://evil.example", 403, "cross-origin POST from http://evil.example"},
		{"cross-site DELETE", "DELETE", "/api/jobs/x", "", "", "http://evil.example", 403, "cross-origin DELETE"},
		{"body on GET", "GET", "/api/info", "x", "", "", 400, "GET /api/info takes no request body"},
		{"long JSON prompt", "POST", "/api/generate", `{"prompt": "` + strings.Repeat("a", maxFieldBytes+1) + `"}`, "", "", 400, `field "prompt" is longer than`},
		{"JSON trailing data", "POST", "/api/generate", good + " garbage", "", "", 400, "more after its object"},
		{"bad JSON", "POST", "/api/generate", "{", "", "", 400, "cannot read the JSON body"},
	} {
		req, err := http.NewRequest(tc.method, ts.URL+tc.path, strings.NewReader(tc.body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if tc.host != "" {
			req.Host = tc.host
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.status, res.StatusCode, tc.name)
		require.True(t, res.Close, "%s: the connection closes", tc.name)
		require.Contains(t, errorOf(t, res), tc.msg, tc.name)
	}
	// Same-origin and loopback names pass.
	for _, host := range []string{"", "localhost:1", "[::1]:1"} {
		req, err := http.NewRequest("POST", ts.URL+"/api/generate", strings.NewReader(good))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if host != "" {
			req.Host = host
		}
		req.Header.Set("Origin", "http://"+req.Host)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusAccepted, res.StatusCode, host)
		res.Body.Close()
	}
	// Some clients send empty bodies chunked: that is no body. A chunked
	// body that is not empty is refused as any other.
	for _, body := range []string{"", "x"} {
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/api/info", io.NopCloser(strings.NewReader(body)))
		require.NoError(t, err)
		req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		want := map[string]int{"": http.StatusOK, "x": http.StatusBadRequest}[body]
		require.Equal(t, want, res.StatusCode, "chunked body %q", body)
		res.Body.Close()
	}
	// A known route with another method says which it takes.
	req, err := http.NewRequest("PUT", ts.URL+"/api/jobs/x", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
	require.Equal(t, "GET, HEAD, DELETE", res.Header.Get("Allow"))
	res.Body.Close()
}

// A running job holds each ID photo as what the ID encoder reads of it
// (224×224), not decoded whole: a 300 KB PNG can decode to 36 megapixels
// of 16-bit RGBA. The encoder sees the same pixels either way.
func TestPhotosReducedWhenDecoded(t *testing.T) {
	src := image.NewNRGBA64(image.Rect(0, 0, 400, 300))
	for i := range src.Pix {
		src.Pix[i] = byte(i * 37 % 251)
	}
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, src))
	imgs, err := decodePhotos([][]byte{buf.Bytes(), facePNG(t)}, 1<<20)
	require.NoError(t, err)
	for i, b := range [][]byte{buf.Bytes(), facePNG(t)} {
		require.Equal(t, image.Rect(0, 0, 224, 224), imgs[i].Bounds())
		direct, err := imageproc.Decode(bytes.NewReader(b), imageproc.Limits{})
		require.NoError(t, err)
		require.Greater(t, direct.Bounds().Dx(), 224)
		require.Equal(t, imageproc.CLIPPixels(direct), imageproc.CLIPPixels(imgs[i]))
	}
}

// Queued jobs keep their photos' files, not the decoded pixels: a small
// file can decode to gigabytes.
func TestQueuedJobsKeepPhotoFiles(t *testing.T) {
	srv := newServer(&fakeGen{}, "PhotoMaker v1 adapter", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	face := facePNG(t)
	j, err := srv.buildJob(&jsonRequest{Prompt: "a photo of a man img", Width: 8, Height: 8, Steps: 1}, [][]byte{face})
	require.NoError(t, err)
	require.Empty(t, j.req.IDImages)
	require.Equal(t, [][]byte{face}, j.photos)
	_, err = srv.buildJob(&jsonRequest{Prompt: "a photo of a man img", Width: 8, Height: 8, Steps: 1}, [][]byte{face[:100]})
	require.ErrorContains(t, err, "ID photo 1")
}

// A client that stops reading an image loses its connection after
// DownloadTimeout instead of holding it (and the image) for good.
func TestStalledDownloadIsCut(t *testing.T) {
	srv, ts := startServer(t, tinyPipeline(t, false), Options{DownloadTimeout: 200 * time.Millisecond})
	big := make([]byte, 64<<20) // far more than the sockets' buffers hold
	j := &job{id: newJobID(), created: time.Now(), end: make(chan struct{}), state: stateDone, images: [][]byte{big}, changed: make(chan struct{})}
	close(j.end)
	srv.mu.Lock()
	srv.jobs[j.id] = j
	srv.finished = append(srv.finished, j)
	srv.mu.Unlock()

	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /api/jobs/%s/images/0.png HTTP/1.1\r\nHost: %s\r\n\r\n", j.id, ts.Listener.Addr())
	require.NoError(t, err)
	time.Sleep(time.Second) // reading nothing, well past the timeout
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	got, err := io.Copy(io.Discard, conn)
	require.NoError(t, err, "the server closes the connection (EOF), not the read deadline")
	require.Less(t, got, int64(len(big)), "the server stopped sending")
}

// A server's own defaults (serve --steps, --guidance: a few-step model's)
// reach the page through /api/info and fill requests that leave them out;
// a request's own values win.
func TestServerDefaults(t *testing.T) {
	_, ts := startServer(t, tinyPipeline(t, false), Options{Steps: 3, Guidance: photomaker.NoGuidance})
	res, err := http.Get(ts.URL + "/api/info")
	require.NoError(t, err)
	var info struct{ Defaults map[string]any }
	decodeBody(t, res, &info)
	require.Equal(t, 3.0, info.Defaults["steps"])
	require.Equal(t, 0.0, info.Defaults["guidance"])

	res = postJSON(t, ts.URL+"/api/generate?wait=1&format=json", map[string]any{"prompt": "a cat", "width": 32, "height": 32})
	require.Equal(t, http.StatusOK, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, 3, v.Request.Steps)
	require.Equal(t, 0.0, v.Request.Guidance)
	res = postJSON(t, ts.URL+"/api/generate?wait=1&format=json", map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 1, "guidance": 2})
	require.Equal(t, http.StatusOK, res.StatusCode)
	decodeBody(t, res, &v)
	require.Equal(t, 1, v.Request.Steps)
	require.Equal(t, 2.0, v.Request.Guidance)
}

// Request bodies are read a few at a time (each is held whole while it is
// read): a request that finds every slot taken waits, then gets 429; one
// that finds room goes through.
func TestUploadsReadAFewAtATime(t *testing.T) {
	srv := newServer(&fakeGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	srv.uploadWait = 100 * time.Millisecond
	ts := httptest.NewServer(srv)
	defer ts.Close()
	for range uploadSlots {
		srv.uploads <- struct{}{} // bodies being read
	}
	req := map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 1}
	res := postJSON(t, ts.URL+"/api/generate", req)
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	require.NotEmpty(t, res.Header.Get("Retry-After"))
	require.Contains(t, errorOf(t, res), "busy receiving other uploads")
	<-srv.uploads // one body read
	res = postJSON(t, ts.URL+"/api/generate", req)
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	res.Body.Close()
	require.Len(t, srv.uploads, uploadSlots-1, "the slot is given back once the body is read")
}

// Below SDXL's 1024, MaxSide scales the page's presets and the default
// size down to fit, so that a request leaving the size out is not refused.
func TestSmallMaxSide(t *testing.T) {
	side, sizes := fitSizes(DefaultMaxSide)
	require.Equal(t, photomaker.DefaultSize, side)
	require.Equal(t, photomaker.SizePresets, sizes)

	srv := newServer(&fakeGen{}, "SDXL single-file checkpoint", "CPU", Options{MaxSide: 516, Logger: quietLogger()})
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	res, err := http.Get(ts.URL + "/api/info")
	require.NoError(t, err)
	var info struct {
		Sizes    []photomaker.SizePreset
		Defaults map[string]any
	}
	decodeBody(t, res, &info)
	require.Equal(t, 512.0, info.Defaults["width"])
	require.Equal(t, 512.0, info.Defaults["height"])
	require.Len(t, info.Sizes, len(photomaker.SizePresets))
	for i, p := range info.Sizes {
		want := photomaker.SizePresets[i]
		require.Equal(t, want.Ratio, p.Ratio)
		require.LessOrEqual(t, max(p.Width, p.Height), 512, p.Name)
		require.Equal(t, 512, max(p.Width, p.Height), p.Name)
		require.Zero(t, p.Width%8+p.Height%8, p.Name)
		ratio := float64(want.Width) / float64(want.Height) // kept up to rounding the short side by 4 pixels
		require.InEpsilon(t, ratio, float64(p.Width)/float64(p.Height), 4/float64(min(p.Width, p.Height)-4), p.Name)
	}
	res = postJSON(t, ts.URL+"/api/generate?wait=1&format=json", map[string]any{"prompt": "a cat", "steps": 1})
	require.Equal(t, http.StatusOK, res.StatusCode)
	var v jobView
	decodeBody(t, res, &v)
	require.Equal(t, [2]int{512, 512}, [2]int{v.Request.Width, v.Request.Height})

	require.Equal(t, 10, Options{MaxSteps: 10}.withDefaults().Steps, "the default steps within a lower MaxSteps")
	require.Equal(t, photomaker.DefaultSteps, Options{}.withDefaults().Steps)
}

// blockGen runs until its job is canceled.
type blockGen struct{}

func (blockGen) Generate(ctx context.Context, req photomaker.Request) (*photomaker.Result, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A queued job's event stream says at once when the job moves up the
// queue (a job ahead of it canceled, or started), not at the next
// keep-alive.
func TestQueuePositionStreams(t *testing.T) {
	srv := newServer(blockGen{}, "SDXL single-file checkpoint", "CPU", Options{Logger: quietLogger()})
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var ids []string
	for range 4 {
		res := postJSON(t, ts.URL+"/api/generate", map[string]any{"prompt": "a cat", "width": 32, "height": 32, "steps": 1})
		require.Equal(t, http.StatusAccepted, res.StatusCode)
		var v jobView
		decodeBody(t, res, &v)
		ids = append(ids, v.ID)
	}
	waitFor(t, ts.URL, ids[0], 10*time.Second, func(v jobView) bool { return v.Status == stateRunning })
	res, err := http.Get(ts.URL + "/api/jobs/" + ids[3] + "/events")
	require.NoError(t, err)
	defer res.Body.Close()
	positions := make(chan int, 10)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var v jobView
				if json.Unmarshal([]byte(line), &v) == nil {
					positions <- v.QueuePosition
				}
			}
		}
		close(positions)
	}()
	next := func() int {
		select {
		case p := <-positions:
			return p
		case <-time.After(5 * time.Second): // the keep-alive comes at 15 s
			t.Fatal("no event after the queue moved")
			return 0
		}
	}
	require.Equal(t, 3, next())
	del := func(id string) {
		req, _ := http.NewRequest(http.MethodDelete, ts.URL+"/api/jobs/"+id, nil)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
	}
	del(ids[1]) // a queued job ahead
	require.Equal(t, 2, next())
	del(ids[0]) // the running one: the next starts
	require.Equal(t, 1, next())
}
