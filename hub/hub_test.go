package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeHub serves files in the Hugging Face layout
// (/owner/repo/resolve/main/file) with the Hub's headers.
type fakeHub struct {
	files map[string][]byte // URL path → content

	mu        sync.Mutex
	noRange   bool   // ignore Range (answer 200 with everything)
	lfs       bool   // redirect to /cdn/... with X-Linked-Etag/X-Linked-Size, as the Hub does for LFS files
	noETag    bool   // send no checksum at all
	badETag   bool   // announce the sha256 of other bytes
	dropAfter int64  // > 0: the next dropCount GETs die after this many body bytes
	dropCount int    //
	needToken string // answer 401 unless "Authorization: Bearer <needToken>"
	requests  []seen
	served    int64         // body bytes written, all requests
	started   chan struct{} // if set, a GET of a file signals here ...
	release   chan struct{} // ... and waits for this before sending the body
}

type seen struct{ method, path, rng, auth string }

func newFakeHub(t *testing.T) (*fakeHub, *httptest.Server) {
	h := &fakeHub{files: map[string][]byte{}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *fakeHub) add(path string, data []byte) { h.files[path] = data }

func (h *fakeHub) log() []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seen(nil), h.requests...)
}

func (h *fakeHub) bytesServed() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.served
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.requests = append(h.requests, seen{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("Authorization")})
	lfs, noRange, noETag, badETag, needToken := h.lfs, h.noRange, h.noETag, h.badETag, h.needToken
	h.mu.Unlock()

	if needToken != "" && r.Header.Get("Authorization") != "Bearer "+needToken {
		http.Error(w, "Access to this model is restricted", http.StatusUnauthorized)
		return
	}
	path := r.URL.Path
	fromCDN := strings.HasPrefix(path, "/cdn/")
	if fromCDN {
		path = strings.TrimPrefix(path, "/cdn")
	}
	data, ok := h.files[path]
	if !ok {
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	}
	etag := sum(data)
	if badETag {
		etag = sum(append([]byte("other"), data...))
	}
	if lfs && !fromCDN {
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(data)))
		if !noETag {
			w.Header().Set("X-Linked-Etag", `"`+etag+`"`)
		}
		w.Header().Set("ETag", `W/"0123456789abcdef0123456789abcdef01234567"`) // a git blob id, not the file's sha256
		http.Redirect(w, r, "/cdn"+path, http.StatusFound)
		return
	}
	switch {
	case fromCDN:
		w.Header().Set("ETag", `"cdn-object-42"`)
	case !noETag:
		w.Header().Set("ETag", `"`+etag+`"`)
	}
	if h.started != nil {
		h.started <- struct{}{}
		<-h.release
	}
	start := int64(0)
	if rng := r.Header.Get("Range"); rng != "" && !noRange {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"), 10, 64)
		if err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= int64(len(data)) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(data)-1, len(data)))
	}
	body := data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Accept-Ranges", "bytes")
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	}
	if r.Method == http.MethodHead {
		return
	}
	h.mu.Lock()
	drop := h.dropCount > 0 && h.dropAfter > 0 && h.dropAfter < int64(len(body))
	if drop {
		h.dropCount--
		body = body[:h.dropAfter]
	}
	h.mu.Unlock()
	for len(body) > 0 {
		n := min(len(body), 64<<10)
		k, err := w.Write(body[:n])
		h.mu.Lock()
		h.served += int64(k)
		h.mu.Unlock()
		if err != nil {
			return
		}
		body = body[n:]
	}
	if drop {
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection dies mid-body
	}
}

// testData is n deterministic pseudo-random bytes.
func testData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

const testSize = 3<<20 + 12345

func setup(t *testing.T) (*fakeHub, Options, Model, []byte) {
	t.Helper()
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	h, srv := newFakeHub(t)
	data := testData(testSize, 1)
	h.add("/acme/tiny-model/resolve/main/weights/model.safetensors", data)
	m := Model{Repo: "acme/tiny-model", File: "weights/model.safetensors"}
	return h, Options{CacheDir: t.TempDir(), Endpoint: srv.URL}, m, data
}

func requireFile(t *testing.T, res Result, data []byte) {
	t.Helper()
	got, err := os.ReadFile(res.Path)
	require.NoError(t, err)
	require.Equal(t, len(data), len(got))
	require.True(t, string(data) == string(got), "content differs")
	require.Equal(t, sum(data), res.SHA256)
	side, err := os.ReadFile(res.Path + ".sha256")
	require.NoError(t, err)
	require.Equal(t, sum(data)+"  model.safetensors\n", string(side))
	require.NoFileExists(t, res.Path+".partial")
	require.NoFileExists(t, res.Path+".partial.json")
}

func TestPullFresh(t *testing.T) {
	h, opts, m, data := setup(t)
	var calls int
	var last [2]int64
	opts.Progress = func(done, total int64) { calls++; last = [2]int64{done, total} }
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(opts.CacheDir, "models", "acme", "tiny-model", "weights", "model.safetensors"), res.Path)
	requireFile(t, res, data)
	require.True(t, res.Verified)
	require.False(t, res.Cached)
	require.Equal(t, int64(testSize), res.Size)
	require.Greater(t, calls, 2)
	require.Equal(t, [2]int64{testSize, testSize}, last)
	require.Len(t, h.log(), 1)
	require.Equal(t, "", h.log()[0].rng)
	require.Equal(t, "", h.log()[0].auth)

	// The second pull finds it in the cache and asks nothing.
	res2, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	require.True(t, res2.Cached)
	require.Equal(t, res.Path, res2.Path)
	require.Equal(t, res.SHA256, res2.SHA256)
	require.Len(t, h.log(), 1)

	p, ok := ResolveIn(opts.CacheDir, "acme/tiny-model/weights/model.safetensors")
	require.True(t, ok)
	require.Equal(t, res.Path, p)
	_, ok = ResolveIn(opts.CacheDir, "acme/tiny-model/other.safetensors")
	require.False(t, ok)

	list, err := List(opts.CacheDir)
	require.NoError(t, err)
	require.Equal(t, []Entry{{Repo: "acme/tiny-model", File: "weights/model.safetensors", Path: res.Path, Size: testSize, SHA256: sum(data), Total: -1}}, list)
}

func TestPullLFSRedirect(t *testing.T) {
	h, opts, m, data := setup(t)
	h.lfs = true
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.True(t, res.Verified, "the sha256 comes from X-Linked-Etag on the redirect")
	log := h.log()
	require.Len(t, log, 2)
	require.True(t, strings.HasPrefix(log[1].path, "/cdn/"))

	// Resuming works through the redirect too (Range is forwarded).
	h3, opts3, m3, _ := setup(t)
	h3.lfs, h3.dropAfter, h3.dropCount = true, 100_000, 1
	res, err = PullModel(context.Background(), m3, opts3)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.Equal(t, int64(100_000), res.Resumed)
	require.Equal(t, int64(testSize), h3.bytesServed())

	// A wrong X-Linked-Etag is caught even though the CDN's ETag is not a sha256.
	h2, opts2, m2, _ := setup(t)
	h2.lfs, h2.badETag = true, true
	_, err = PullModel(context.Background(), m2, opts2)
	require.ErrorIs(t, err, ErrChecksum)
}

func TestPullResumesAfterDrop(t *testing.T) {
	h, opts, m, data := setup(t)
	const cut = 1<<20 + 777
	h.dropAfter, h.dropCount = cut, 1
	opts.Retries = -1
	_, err := PullModel(context.Background(), m, opts)
	require.Error(t, err)
	partial := Path(opts.CacheDir, m) + ".partial"
	st, err := os.Stat(partial)
	require.NoError(t, err, "the partial download is kept")
	require.Equal(t, int64(cut), st.Size())
	require.NoFileExists(t, Path(opts.CacheDir, m))
	list, err := List(opts.CacheDir)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.True(t, list[0].Partial)
	require.Equal(t, int64(testSize), list[0].Total)

	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.Equal(t, int64(cut), res.Resumed)
	log := h.log()
	require.Len(t, log, 2)
	require.Equal(t, fmt.Sprintf("bytes=%d-", cut), log[1].rng)
	require.Equal(t, int64(testSize), h.bytesServed(), "only the missing bytes were sent again")
}

func TestPullRetriesByItself(t *testing.T) {
	h, opts, m, data := setup(t)
	h.dropAfter, h.dropCount = 500_000, 2
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	log := h.log()
	require.Len(t, log, 3)
	require.Equal(t, "bytes=500000-", log[1].rng)
	require.Equal(t, "bytes=1000000-", log[2].rng)
	require.Equal(t, int64(testSize), h.bytesServed())
}

func TestPullServerWithoutRange(t *testing.T) {
	h, opts, m, data := setup(t)
	h.noRange = true
	h.dropAfter, h.dropCount = 1<<20, 1
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.Equal(t, int64(0), res.Resumed, "the server sent everything again")
	log := h.log()
	require.Len(t, log, 2)
	require.Equal(t, "bytes=1048576-", log[1].rng)
	require.Equal(t, int64(1<<20+testSize), h.bytesServed())
}

func TestPullChecksumMismatch(t *testing.T) {
	h, opts, m, _ := setup(t)
	h.badETag = true
	_, err := PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrChecksum)
	require.Contains(t, err.Error(), "deleted")
	require.NoFileExists(t, Path(opts.CacheDir, m))
	require.NoFileExists(t, Path(opts.CacheDir, m)+".partial")
	_, ok := Cached(opts.CacheDir, m)
	require.False(t, ok)

	// The catalog's checksum wins when the server sends none.
	h.badETag, h.noETag = false, true
	m.SHA256 = strings.Repeat("ab", 32)
	_, err = PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrChecksum)
	require.NoFileExists(t, Path(opts.CacheDir, m)+".partial")

	// The catalog's size is checked before anything is downloaded.
	m.SHA256, m.Size = "", 1234
	_, err = PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrChecksum)
}

func TestPullWithoutChecksum(t *testing.T) {
	h, opts, m, data := setup(t)
	h.noETag = true
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.False(t, res.Verified, "nothing to verify against: the sha256 is only recorded")
}

func TestPullAuth(t *testing.T) {
	h, opts, m, data := setup(t)
	h.needToken = "hf_secret"
	_, err := PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrAuth)
	require.Contains(t, err.Error(), "set HF_TOKEN")
	require.NoFileExists(t, Path(opts.CacheDir, m)+".partial")

	t.Setenv("HF_TOKEN", "hf_wrong")
	_, err = PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrAuth)
	require.Contains(t, err.Error(), "license")

	t.Setenv("HF_TOKEN", "hf_secret")
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	log := h.log()
	require.Equal(t, "Bearer hf_secret", log[len(log)-1].auth)
}

func TestPullNotFound(t *testing.T) {
	_, opts, _, _ := setup(t)
	_, err := Pull(context.Background(), "acme/tiny-model/missing.bin", opts)
	require.ErrorIs(t, err, ErrNotFound)
	require.Contains(t, err.Error(), "/acme/tiny-model/resolve/main/missing.bin")
	entries, err := List(opts.CacheDir)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestPullCancel(t *testing.T) {
	h, opts, m, data := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts.Progress = func(done, total int64) {
		if done >= 1<<20 {
			cancel()
		}
	}
	_, err := PullModel(ctx, m, opts)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), "resume")
	st, err := os.Stat(Path(opts.CacheDir, m) + ".partial")
	require.NoError(t, err)
	have := st.Size()
	require.GreaterOrEqual(t, have, int64(1<<20))
	require.Less(t, have, int64(testSize))

	opts.Progress = nil
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.Equal(t, have, res.Resumed)
	log := h.log()
	require.Equal(t, fmt.Sprintf("bytes=%d-", have), log[len(log)-1].rng)
}

func TestPullPartialAlreadyComplete(t *testing.T) {
	// A crash after the last byte but before the rename: the server answers
	// 416 and the partial is checked as it is.
	h, opts, m, data := setup(t)
	p := Path(opts.CacheDir, m)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p+".partial", data, 0o644))
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	require.True(t, res.Verified)
	require.Equal(t, int64(0), h.bytesServed())
}

func TestPullStalePartialOfOtherVersion(t *testing.T) {
	h, opts, m, data := setup(t)
	p := Path(opts.CacheDir, m)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p+".partial", []byte("old bytes"), 0o644))
	require.NoError(t, os.WriteFile(p+".partial.json", []byte(`{"url":"`+m.ResolveURL(opts.Endpoint)+`","size":99,"sha256":"`+strings.Repeat("0", 64)+`"}`), 0o644))
	res, err := PullModel(context.Background(), m, opts)
	require.NoError(t, err)
	requireFile(t, res, data)
	log := h.log()
	require.Len(t, log, 2)
	require.Equal(t, "", log[1].rng)
}

func TestPullConcurrent(t *testing.T) {
	h, opts, m, data := setup(t)
	h.started, h.release = make(chan struct{}, 4), make(chan struct{})
	var wg sync.WaitGroup
	results := make([]Result, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = PullModel(context.Background(), m, opts)
		}()
	}
	<-h.started // one pull is downloading; the others wait on the lock
	close(h.release)
	wg.Wait()
	cached := 0
	for i := range results {
		require.NoError(t, errs[i])
		requireFile(t, results[i], data)
		if results[i].Cached {
			cached++
		}
	}
	require.Equal(t, 2, cached)
	require.Len(t, h.log(), 1, "one download for all")
	require.Equal(t, int64(testSize), h.bytesServed())
}

func TestPullLockWaitCancelled(t *testing.T) {
	_, opts, m, _ := setup(t)
	p := Path(opts.CacheDir, m)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	unlock, err := lockFile(context.Background(), p+".lock")
	require.NoError(t, err)
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = PullModel(ctx, m, opts)
	require.ErrorIs(t, err, context.Canceled)
}

func TestPullDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	_, opts, m, _ := setup(t)
	p := Path(opts.CacheDir, m)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.Symlink("/dev/full", p+".partial")) // every write fails with ENOSPC
	_, err := PullModel(context.Background(), m, opts)
	require.ErrorIs(t, err, ErrDiskFull)
	require.Contains(t, err.Error(), "free some space")
}

func TestDiskErr(t *testing.T) {
	require.ErrorIs(t, diskErr(&os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), ErrDiskFull)
	require.NotErrorIs(t, diskErr(errors.New("other")), ErrDiskFull)
}

func TestPullByNameUsesEndpointEnv(t *testing.T) {
	h, _, _, _ := setup(t)
	data := testData(1000, 2)
	h.add("/TencentARC/PhotoMaker/resolve/main/photomaker-v1.bin", data)
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("PHOTOMAKER_HF_ENDPOINT", srv.URL+"/")
	cache := t.TempDir()
	t.Setenv("PHOTOMAKER_CACHE", cache)
	res, err := Pull(context.Background(), "photomaker-v1", Options{})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(cache, "models", "TencentARC", "PhotoMaker", "photomaker-v1.bin"), res.Path)
	p, ok := Resolve("photomaker-v1")
	require.True(t, ok)
	require.Equal(t, res.Path, p)
	p, ok = Resolve(srv.URL + "/TencentARC/PhotoMaker/resolve/main/photomaker-v1.bin")
	require.True(t, ok, "a URL in the Hub layout maps to the same cache file")
	require.Equal(t, res.Path, p)
	_, ok = Resolve("photomaker-v2")
	require.False(t, ok)
}

func TestDefaults(t *testing.T) {
	t.Setenv("PHOTOMAKER_HF_ENDPOINT", "")
	t.Setenv("HF_ENDPOINT", "")
	require.Equal(t, "https://huggingface.co", DefaultEndpoint())
	t.Setenv("HF_ENDPOINT", "https://mirror.example/")
	require.Equal(t, "https://mirror.example", DefaultEndpoint())
	t.Setenv("PHOTOMAKER_HF_ENDPOINT", "http://127.0.0.1:9")
	require.Equal(t, "http://127.0.0.1:9", DefaultEndpoint())

	t.Setenv("PHOTOMAKER_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	require.Equal(t, filepath.Join("/xdg", "photomaker"), DefaultCacheDir())
	t.Setenv("PHOTOMAKER_CACHE", "/pm")
	require.Equal(t, "/pm", DefaultCacheDir())
	t.Setenv("PHOTOMAKER_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	require.Equal(t, filepath.Join("/home/u", ".cache", "photomaker"), DefaultCacheDir())
}

func TestParse(t *testing.T) {
	m, err := Parse("sdxl")
	require.NoError(t, err)
	require.Equal(t, "stabilityai/stable-diffusion-xl-base-1.0", m.Repo)
	require.Equal(t, "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors", m.ResolveURL("https://huggingface.co"))
	for _, name := range []string{"SDXL", "realvisxl-v4", "photomaker-v1", "photomaker-v2"} {
		_, err := Parse(name)
		require.NoError(t, err, name)
	}

	m, err = Parse("acme/model@v1.2/sub dir/x.bin")
	require.NoError(t, err)
	require.Equal(t, Model{Repo: "acme/model", Revision: "v1.2", File: "sub dir/x.bin"}, m)
	require.Equal(t, "http://h/acme/model/resolve/v1.2/sub%20dir/x.bin", m.ResolveURL("http://h/"))
	require.Equal(t, filepath.Join("/c", "models", "acme", "model@v1.2", "sub dir", "x.bin"), Path("/c", m))

	m, err = Parse("https://hf-mirror.example/acme/model/resolve/main/x.safetensors?download=true")
	require.NoError(t, err)
	require.Equal(t, "acme/model", m.Repo)
	require.Equal(t, "x.safetensors", m.File)
	require.Equal(t, "https://hf-mirror.example/acme/model/resolve/main/x.safetensors?download=true", m.ResolveURL("ignored"))

	m, err = Parse("https://files.example:8443/models/x.bin")
	require.NoError(t, err)
	require.Equal(t, "files.example:8443", m.Repo)
	require.Equal(t, "models/x.bin", m.File)

	for _, bad := range []string{"", "nosuch", "a/b", "../../etc/passwd", "a/b/../../../x", "a/../b/c", "/abs/path/x", `a\b\c`, "a/b/c/", "a/b@../c", "https://", "https://h/"} {
		_, err := Parse(bad)
		require.Error(t, err, bad)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		in           string
		first, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes */100", -1, 100, true},
		{"bytes 0-9/*", 0, -1, true},
		{"bytes x-9/10", 0, 0, false},
		{"items 0-9/10", 0, 0, false},
		{"", 0, 0, false},
	} {
		first, total, ok := parseContentRange(c.in)
		require.Equal(t, c.ok, ok, c.in)
		if ok {
			require.Equal(t, [2]int64{c.first, c.total}, [2]int64{first, total}, c.in)
		}
	}
}

func TestEtagSHA256(t *testing.T) {
	s := strings.Repeat("aB", 32)
	require.Equal(t, strings.ToLower(s), etagSHA256(`"`+s+`"`))
	require.Equal(t, strings.ToLower(s), etagSHA256(`W/"`+s+`"`))
	require.Equal(t, "", etagSHA256(`"0123456789abcdef0123456789abcdef01234567"`))
	require.Equal(t, "", etagSHA256(""))
}

func TestFormatBytes(t *testing.T) {
	require.Equal(t, "999 B", FormatBytes(999))
	require.Equal(t, "6.94 GB", FormatBytes(6938078334))
	require.Equal(t, "1.50 MB", FormatBytes(1_500_000))
}
