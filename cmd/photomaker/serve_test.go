package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeOccupiedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()
	code, _, errOut := runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--device", "cpu", "--addr", addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "address "+addr+" is in use; pick another with --addr")
}

func TestServeBadArguments(t *testing.T) {
	code, _, errOut := runCLI(t, "serve")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "model")

	code, _, errOut = runCLI(t, "serve", "--model", "/no/such/model.safetensors", "--addr", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--model /no/such/model.safetensors: no such file or directory")

	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--photomaker", "/no/adapter.bin", "--addr", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--photomaker /no/adapter.bin")

	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--max-queue", "0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--max-queue must be at least 1")

	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--addr", "not-an-address")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot listen on not-an-address")

	// A lower --max-steps lowers the default --steps; an explicit one above it is refused.
	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--max-steps", "10", "--addr", "not-an-address")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "cannot listen on not-an-address", "past the flags' checks")
	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("tiny-sdxl.safetensors"), "--max-steps", "10", "--steps", "20")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--steps must be 1 to --max-steps (10), got 20")

	// An adapter given as the model is refused with the loader's message.
	code, _, errOut = runCLI(t, "serve", "--model", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--device", "cpu", "--addr", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "PhotoMaker adapter, not an SDXL checkpoint")
}

// TestServeRunsAndStops starts the command on a free port, generates an
// image through the API and stops it as Ctrl-C would.
func TestServeRunsAndStops(t *testing.T) {
	serveStop = make(chan struct{})
	defer func() { serveStop = nil }()
	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"photomaker", "serve", "--model", golden.Path("tiny-sdxl.safetensors"),
			"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"),
			"--device", "cpu", "--threads", "1", "--addr", "127.0.0.1:0", "--max-queue", "2", "--steps", "4", "--guidance", "0"}, &stdout, &stderr)
	}()
	urlRE := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/`)
	var base string
	deadline := time.Now().Add(time.Minute)
	for base == "" {
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d: %s", code, stderr.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "serve did not start: %s", stderr.String())
		if m := urlRE.FindStringSubmatch(stdout.String()); m != nil {
			base = "http://" + m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.Contains(t, stdout.String(), "PhotoMaker v1 adapter")

	res, err := http.Get(base + "/api/info")
	require.NoError(t, err)
	var info struct {
		Kind     string
		Limits   map[string]any
		Defaults map[string]any
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&info))
	res.Body.Close()
	require.Contains(t, info.Kind, "PhotoMaker")
	require.Equal(t, 2.0, info.Limits["max_queue"])
	require.Equal(t, 4.0, info.Defaults["steps"])
	require.Equal(t, 0.0, info.Defaults["guidance"], "--guidance 0: off")

	// A synchronous generation with one ID photo.
	res, err = http.Get(base + "/")
	require.NoError(t, err)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Contains(t, string(page), "<title>PhotoMaker</title>")

	body := `{"prompt": "a photo of a man img", "width": 32, "height": 32, "steps": 1, "seed": 3, "id_images": ["` + faceBase64(t) + `"]}`
	res, err = http.Post(base+"/api/generate?wait=1", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, 32, img.Bounds().Dx())

	close(serveStop)
	select {
	case code := <-exit:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	require.Contains(t, stderr.String(), "shutting down")
	// The port is free again.
	ln, err := net.Listen("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	ln.Close()
}

func faceBase64(t *testing.T) string {
	b, err := os.ReadFile(golden.Path("faces/astronaut_0.png"))
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(b)
}
