package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// pullServer serves files in the Hugging Face layout with their sha256 as
// ETag, and records the paths asked for.
func pullServer(t *testing.T, files map[string][]byte) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		data, ok := files[r.URL.Path]
		if !ok {
			http.Error(w, "Entry not found", http.StatusNotFound)
			return
		}
		s := sha256.Sum256(data)
		w.Header().Set("ETag", `"`+hex.EncodeToString(s[:])+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), asked...) }
}

func pullEnv(t *testing.T, endpoint string) string {
	t.Helper()
	cache := t.TempDir()
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_ENDPOINT", "")
	t.Setenv("PHOTOMAKER_HF_ENDPOINT", endpoint)
	t.Setenv("PHOTOMAKER_CACHE", "")
	t.Setenv("PHOTOMAKER_CACHE_DIR", cache)
	return cache
}

func TestPullCommand(t *testing.T) {
	adapter := bytes.Repeat([]byte("photomaker adapter bytes "), 50_000)
	other := []byte("a small file")
	srv, asked := pullServer(t, map[string][]byte{
		"/TencentARC/PhotoMaker/resolve/main/photomaker-v1.bin": adapter,
		"/acme/tiny/resolve/main/sub/tiny.safetensors":          other,
	})
	cache := pullEnv(t, srv.URL)

	// Not downloaded yet: generate's lookup says what to do.
	_, err := resolveModelPath("photomaker-v1")
	require.EqualError(t, err, "model photomaker-v1 is not downloaded yet: run `photomaker pull photomaker-v1`")

	code, out, errOut := runCLI(t, "pull", "photomaker-v1", "acme/tiny/sub/tiny.safetensors")
	require.Equal(t, 0, code, errOut)
	want := filepath.Join(cache, "models", "TencentARC", "PhotoMaker", "photomaker-v1.bin")
	require.Contains(t, out, "photomaker-v1: "+want)
	require.Contains(t, out, "verified")
	require.Contains(t, errOut, "MB")
	got, err := os.ReadFile(want)
	require.NoError(t, err)
	require.Equal(t, adapter, got)
	require.Len(t, asked(), 2)

	// Second pull: from the cache, no request.
	code, out, errOut = runCLI(t, "pull", "photomaker-v1")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "already downloaded")
	require.Len(t, asked(), 2)

	p, err := resolveModelPath("photomaker-v1")
	require.NoError(t, err)
	require.Equal(t, want, p)
	p, err = resolveModelPath("acme/tiny/sub/tiny.safetensors")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(cache, "models", "acme", "tiny", "sub", "tiny.safetensors"), p)

	code, out, errOut = runCLI(t, "pull", "--list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "cache: "+cache)
	for _, name := range []string{"sdxl", "realvisxl-v4", "photomaker-v1", "photomaker-v2"} {
		require.Contains(t, out, name)
	}
	lines := strings.Split(out, "\n")
	status := map[string]string{}
	for _, l := range lines {
		if f := strings.Split(l, "  "); len(f) >= 2 {
			status[strings.TrimSpace(f[0])] = strings.TrimSpace(f[len(f)-1])
		}
	}
	require.Equal(t, "downloaded", status["photomaker-v1"])
	require.Equal(t, "not downloaded", status["sdxl"])
	require.Contains(t, out, "acme/tiny/sub/tiny.safetensors")

	code, out, _ = runCLI(t, "pull", "--list", "--json")
	require.Equal(t, 0, code)
	var doc struct {
		CacheDir string `json:"cache_dir"`
		Models   []struct{ Name, Status, Path string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Equal(t, cache, doc.CacheDir)
	require.Len(t, doc.Models, 5)

	code, out, _ = runCLI(t, "pull", "photomaker-v1", "--json", "--quiet") // flags after NAME too
	require.Equal(t, 0, code)
	var rows []struct {
		Name   string
		Path   string
		Cached bool
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Equal(t, want, rows[0].Path)
	require.True(t, rows[0].Cached)
}

func TestPullCommandErrors(t *testing.T) {
	srv, asked := pullServer(t, map[string][]byte{})
	cache := pullEnv(t, srv.URL)

	code, _, errOut := runCLI(t, "pull", "acme/tiny/missing.bin")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not found")
	require.NotContains(t, errOut, "hub:")

	// No NAME: the defaults, sdxl first.
	code, _, errOut = runCLI(t, "pull", "--quiet")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors")
	require.Equal(t, "/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors", asked()[1])
	require.Len(t, asked(), 2, "stops at the first error")

	code, _, _ = runCLI(t, "pull", "no-such-model")
	require.Equal(t, 2, code)
	code, _, errOut = runCLI(t, "pull", "--hf-endpoint", "notaurl", "sdxl")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--hf-endpoint "notaurl": want a server's URL`)
	// A server that cannot be reached: the network, not the file.
	code, _, errOut = runCLI(t, "pull", "--quiet", "--hf-endpoint", "http://127.0.0.1:1", "sdxl")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "check the connection (or point --hf-endpoint / $HF_ENDPOINT at a mirror)")
	code, _, _ = runCLI(t, "pull", "--list", "sdxl")
	require.Equal(t, 2, code)

	// --cache-dir wins over the environment.
	other := t.TempDir()
	code, out, _ := runCLI(t, "pull", "--list", "--cache-dir", other)
	require.Equal(t, 0, code)
	require.Contains(t, out, "cache: "+other)
	require.NotContains(t, out, cache)
}

func TestResolveModelPath(t *testing.T) {
	pullEnv(t, "http://127.0.0.1:1")
	existing := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o644))
	for _, s := range []string{"", existing, "/nonexistent/model.safetensors", "model.safetensors", "./a/b/c.safetensors"} {
		got, err := resolveModelPath(s)
		require.NoError(t, err, s)
		require.Equal(t, s, got)
	}
	_, err := resolveModelPath("sdxl")
	require.EqualError(t, err, "model sdxl is not downloaded yet: run `photomaker pull sdxl`")
	_, err = resolveModelPath("acme/model/x.safetensors")
	require.ErrorContains(t, err, "run `photomaker pull acme/model/x.safetensors`")
}

func TestResolveModelFlags(t *testing.T) {
	srv, _ := pullServer(t, map[string][]byte{"/TencentARC/PhotoMaker/resolve/main/photomaker-v1.bin": []byte("adapter")})
	cache := pullEnv(t, srv.URL)
	code, _, errOut := runCLI(t, "pull", "-q", "photomaker-v1")
	require.Equal(t, 0, code, errOut)

	existing := filepath.Join(t.TempDir(), "sdxl.safetensors")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o644))
	call := func(args ...string) (model, adapter string, err error) {
		app := &cli.App{Commands: []*cli.Command{{
			Name:  "gen",
			Flags: []cli.Flag{&cli.StringFlag{Name: "model"}, &cli.StringFlag{Name: "photomaker"}},
			Action: func(c *cli.Context) error {
				if err := resolveModelFlags(c); err != nil {
					return err
				}
				model, adapter = c.String("model"), c.String("photomaker")
				return nil
			},
		}}}
		err = app.Run(append([]string{"x", "gen"}, args...))
		return
	}
	model, adapter, err := call("--model", existing, "--photomaker", "photomaker-v1")
	require.NoError(t, err)
	require.Equal(t, existing, model)
	require.Equal(t, filepath.Join(cache, "models", "TencentARC", "PhotoMaker", "photomaker-v1.bin"), adapter)
	model, adapter, err = call("--model", existing)
	require.NoError(t, err)
	require.Equal(t, existing, model)
	require.Equal(t, "", adapter)
	_, _, err = call("--model", "sdxl", "--photomaker", "photomaker-v1")
	require.EqualError(t, err, "model sdxl is not downloaded yet: run `photomaker pull sdxl`")
}

func TestDownloadBar(t *testing.T) {
	var buf bytes.Buffer
	b := newDownloadBar(&buf, "sdxl", true)
	now := time.Unix(0, 0)
	b.now = func() time.Time { return now }
	b.update(1_000_000, 10_000_000)
	now = now.Add(time.Second)
	b.update(6_000_000, 10_000_000)
	now = now.Add(10 * time.Millisecond)
	b.update(6_100_000, 10_000_000) // too soon: not drawn
	b.update(10_000_000, 10_000_000)
	b.done()
	out := buf.String()
	require.Contains(t, out, "6.00 MB / 10.00 MB  5.0 MB/s")
	require.NotContains(t, out, "6.10 MB")
	require.Contains(t, out, "[==============================] 10.00 MB / 10.00 MB")
	require.True(t, strings.HasSuffix(out, "\n"))

	buf.Reset()
	off := newDownloadBar(&buf, "sdxl", false)
	off.update(1, 2)
	off.done()
	require.Empty(t, buf.String())
}

// Every command that reads a model takes the names pull fetched them under,
// as generate does; a name not fetched yet says to pull it.
func TestPulledNamesInEveryCommand(t *testing.T) {
	read := func(p string) []byte {
		b, err := os.ReadFile(golden.Path(p))
		require.NoError(t, err)
		return b
	}
	srv, _ := pullServer(t, map[string][]byte{
		"/acme/tiny/resolve/main/sdxl.safetensors": read("tiny-sdxl.safetensors"),
		"/acme/tiny/resolve/main/pm.safetensors":   read("photomaker/photomaker-v1-tiny.safetensors"),
	})
	pullEnv(t, srv.URL)
	const model, adapter = "acme/tiny/sdxl.safetensors", "acme/tiny/pm.safetensors"
	code, _, errOut := runCLI(t, "info", model)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "run `photomaker pull "+model+"`")
	code, _, errOut = runCLI(t, "pull", "-q", model, adapter)
	require.Equal(t, 0, code, errOut)

	code, out, errOut := runCLI(t, "info", model)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "SDXL")
	require.Contains(t, out, "(estimates, without a PhotoMaker adapter)")
	merged := filepath.Join(t.TempDir(), "pm.gguf")
	code, _, errOut = runCLI(t, "convert", model, "--photomaker", adapter, "--type", "q8_0", "-o", merged)
	require.Equal(t, 0, code, errOut)
	code, out, errOut = runCLI(t, "info", merged)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "(estimates, with its PhotoMaker adapter)")
	code, _, errOut = runCLI(t, "bench", "--model", model, "--photomaker", adapter, "--device", "cpu", "--width", "64", "--height", "64",
		"--steps", "1", "--id-images", "1", "--json")
	require.Equal(t, 0, code, errOut)
	// serve finds the files before it takes its address.
	code, _, errOut = runCLI(t, "serve", "--model", model, "--photomaker", adapter, "--addr", "not-an-address")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot listen on not-an-address")
}
