package hub

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors wrapped by Pull; test with errors.Is.
var (
	ErrAuth     = errors.New("this model needs a Hugging Face token: set HF_TOKEN")
	ErrNotFound = errors.New("not found on the server")
	ErrChecksum = errors.New("checksum mismatch")
	ErrDiskFull = errors.New("disk full")
)

// DefaultEndpointURL is the Hugging Face Hub.
const DefaultEndpointURL = "https://huggingface.co"

// DefaultEndpoint is $PHOTOMAKER_HF_ENDPOINT, else $HF_ENDPOINT, else
// https://huggingface.co.
func DefaultEndpoint() string {
	for _, k := range []string{"PHOTOMAKER_HF_ENDPOINT", "HF_ENDPOINT"} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			return strings.TrimRight(v, "/")
		}
	}
	return DefaultEndpointURL
}

// DefaultCacheDir is $PHOTOMAKER_CACHE, else $XDG_CACHE_HOME/photomaker,
// else ~/.cache/photomaker.
func DefaultCacheDir() string {
	if v := os.Getenv("PHOTOMAKER_CACHE"); v != "" {
		return v
	}
	if v := os.Getenv("XDG_CACHE_HOME"); v != "" {
		return filepath.Join(v, "photomaker")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "photomaker")
	}
	return filepath.Join(os.TempDir(), "photomaker-cache")
}

// Options configure Pull. The zero value uses the defaults.
type Options struct {
	// CacheDir is the cache ("" = DefaultCacheDir()).
	CacheDir string
	// Endpoint is the server ("" = DefaultEndpoint()).
	Endpoint string
	// Token is sent as a bearer token ("" = $HF_TOKEN).
	Token string
	// Client does the requests (nil = a client with no overall timeout).
	Client *http.Client
	// Progress, if set, is called as bytes arrive with the bytes on disk
	// (resumed bytes included) and the total (-1 when unknown).
	Progress func(done, total int64)
	// Retries is how many times an interrupted transfer is resumed before
	// giving up (0 = 3; negative = none).
	Retries int
}

func (o *Options) cacheDir() string {
	if o.CacheDir != "" {
		return o.CacheDir
	}
	return DefaultCacheDir()
}

func (o *Options) token() string {
	if o.Token != "" {
		return o.Token
	}
	if t := os.Getenv("HF_TOKEN"); t != "" {
		return t
	}
	return os.Getenv("HUGGING_FACE_HUB_TOKEN")
}

// Result describes a pulled file.
type Result struct {
	Model  Model
	Path   string // the cached file
	Size   int64
	SHA256 string
	// Cached reports that the file was already in the cache (no request made).
	Cached bool
	// Verified reports that the SHA-256 was checked against a known value
	// (the catalog's or the server's); otherwise it was only recorded.
	Verified bool
	// Resumed is how many bytes were already on disk from an earlier attempt.
	Resumed int64
}

// Path is where m is cached under cacheDir: models/<repo>/<file>, with
// "@<revision>" after the repository for revisions other than main.
func Path(cacheDir string, m Model) string {
	repo := m.Repo
	if m.Revision != "" && m.Revision != DefaultRevision {
		repo += "@" + m.Revision
	}
	return filepath.Join(cacheDir, "models", filepath.FromSlash(repo), filepath.FromSlash(m.File))
}

// sidecar is the file holding the verified checksum of a cached file, in
// sha256sum's format.
func sidecar(p string) string { return p + ".sha256" }

// Cached reports whether m is completely in cacheDir: the file and its
// checksum sidecar exist and agree with the catalog's size and checksum.
// It does not re-read the file.
func Cached(cacheDir string, m Model) (string, bool) {
	p := Path(cacheDir, m)
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	sum, err := readSidecar(p)
	if err != nil {
		return "", false
	}
	if m.Size > 0 && st.Size() != m.Size || m.SHA256 != "" && !strings.EqualFold(sum, m.SHA256) {
		return "", false
	}
	return p, true
}

// Resolve finds a model in the default cache by catalog name, repo/file or
// URL.
func Resolve(name string) (string, bool) { return ResolveIn(DefaultCacheDir(), name) }

// ResolveIn is Resolve with a given cache directory.
func ResolveIn(cacheDir, name string) (string, bool) {
	m, err := Parse(name)
	if err != nil {
		return "", false
	}
	return Cached(cacheDir, m)
}

func readSidecar(p string) (string, error) {
	b, err := os.ReadFile(sidecar(p))
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || !isSHA256(f[0]) {
		return "", fmt.Errorf("%s: not a sha256 sidecar", sidecar(p))
	}
	return strings.ToLower(f[0]), nil
}

var sha256Re = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func isSHA256(s string) bool { return sha256Re.MatchString(s) }

// etagSHA256 returns the SHA-256 in an ETag header value (`"<hex>"`,
// `W/"<hex>"`), or "" if it holds something else (a git blob id, ...).
func etagSHA256(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	if isSHA256(v) {
		return strings.ToLower(v)
	}
	return ""
}

// Pull downloads the model name (see Parse) into the cache, or finds it
// there.
func Pull(ctx context.Context, name string, opts Options) (Result, error) {
	m, err := Parse(name)
	if err != nil {
		return Result{}, err
	}
	return PullModel(ctx, m, opts)
}

// PullModel downloads m into the cache unless it is already there. The
// file is written to <file>.partial and renamed once its size and SHA-256
// are checked; an interrupted download (network error, cancelled ctx)
// leaves the .partial, and the next pull asks the server only for the
// missing bytes. Pulls of the same file, in this process or others, take
// turns through a lock file.
func PullModel(ctx context.Context, m Model, opts Options) (Result, error) {
	if err := m.check(); err != nil {
		return Result{}, err
	}
	dir := opts.cacheDir()
	res := Result{Model: m, Path: Path(dir, m)}
	if p, ok := Cached(dir, m); ok {
		return cachedResult(res, p)
	}
	if err := os.MkdirAll(filepath.Dir(res.Path), 0o755); err != nil {
		return res, fmt.Errorf("hub: cache directory: %w", err)
	}
	unlock, err := lockFile(ctx, res.Path+".lock")
	if err != nil {
		return res, fmt.Errorf("hub: %s: waiting for the lock: %w", m, err)
	}
	defer unlock()
	if p, ok := Cached(dir, m); ok { // another pull finished it meanwhile
		return cachedResult(res, p)
	}
	retries := opts.Retries
	if retries == 0 {
		retries = 3
	}
	for attempt := 0; ; attempt++ {
		err = download(ctx, m, &opts, &res)
		var te transientError
		if err == nil || !errors.As(err, &te) || ctx.Err() != nil || attempt >= retries {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	if err != nil && ctx.Err() != nil {
		return res, fmt.Errorf("hub: %s: download interrupted (run pull again to resume): %w", m, ctx.Err())
	}
	return res, err
}

func cachedResult(res Result, p string) (Result, error) {
	st, err := os.Stat(p)
	if err != nil {
		return res, err
	}
	sum, err := readSidecar(p)
	if err != nil {
		return res, err
	}
	res.Path, res.Size, res.SHA256, res.Cached, res.Verified = p, st.Size(), sum, true, true
	return res, nil
}

// transientError marks failures worth resuming: the connection dropped.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// partialMeta is kept next to a .partial so a resumed download can tell
// whether the server's file changed in between.
type partialMeta struct {
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func (o *Options) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return http.DefaultClient
}

// download does one attempt.
func download(ctx context.Context, m Model, opts *Options, res *Result) error {
	partial := res.Path + ".partial"
	metaPath := partial + ".json"
	url := m.ResolveURL(opts.Endpoint)

	var start int64
	if st, err := os.Stat(partial); err == nil {
		start = st.Size()
	}
	var meta partialMeta
	if b, err := os.ReadFile(metaPath); err == nil {
		_ = json.Unmarshal(b, &meta)
	}
	if start > 0 && meta.URL != "" && meta.URL != url {
		start = 0
	}
	res.Resumed = 0

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("hub: %s: %w", m, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "photomaker-go")
	if tok := opts.token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if start > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", start))
	}
	// The Hub answers a resolve URL of an LFS file with a redirect to its
	// storage carrying X-Linked-Size and X-Linked-Etag (the SHA-256): note
	// them on the way.
	var linkedSize int64 = -1
	var linkedSHA string
	note := func(h http.Header) {
		if v := h.Get("X-Linked-Size"); v != "" && linkedSize < 0 {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				linkedSize = n
			}
		}
		if linkedSHA == "" {
			linkedSHA = etagSHA256(h.Get("X-Linked-Etag"))
		}
	}
	base := opts.client()
	client := *base
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if r.Response != nil {
			note(r.Response.Header)
		}
		if base.CheckRedirect != nil {
			return base.CheckRedirect(r, via)
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return transientError{fmt.Errorf("hub: %s: %w", m, err)}
	}
	defer resp.Body.Close()
	note(resp.Header)

	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
	case http.StatusUnauthorized, http.StatusForbidden:
		if opts.token() != "" {
			return fmt.Errorf("hub: %s: %s: access denied with the HF_TOKEN given (check the token, and accept the model's license on its page): %w", m, resp.Status, ErrAuth)
		}
		return fmt.Errorf("hub: %s: %s: %w", m, resp.Status, ErrAuth)
	case http.StatusNotFound:
		return fmt.Errorf("hub: %s: %s: %w (check the name; a private or gated repository also answers 404 without HF_TOKEN)", m, url, ErrNotFound)
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial is as long as the file (or longer): check it as it is,
		// or start over.
		total := int64(-1)
		if _, t, ok := parseContentRange(resp.Header.Get("Content-Range")); ok {
			total = t
		}
		if start > 0 && (total == start || total < 0 && linkedSize == start) {
			return finish(m, opts, res, partial, metaPath, start, nil, expectedSHA(m, meta, linkedSHA, resp.Header), start)
		}
		removePartial(partial)
		return transientError{fmt.Errorf("hub: %s: server refused to resume; starting over", m)}
	default:
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return transientError{fmt.Errorf("hub: %s: %s", m, resp.Status)}
		}
		return fmt.Errorf("hub: %s: %s", m, resp.Status)
	}

	// Where the body starts and how long the file is.
	offset, total := int64(0), int64(-1)
	if resp.StatusCode == http.StatusPartialContent {
		first, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != start {
			// Not the range asked for: start over without Range.
			removePartial(partial)
			return transientError{fmt.Errorf("hub: %s: server sent bytes from %d, asked for %d; starting over", m, first, start)}
		}
		offset, total = start, t
	} else if resp.ContentLength >= 0 {
		total = resp.ContentLength
	}
	if linkedSize >= 0 {
		total = linkedSize
	}
	if m.Size > 0 {
		if total >= 0 && total != m.Size {
			return fmt.Errorf("hub: %s: server reports %d bytes, the catalog expects %d: %w", m, total, m.Size, ErrChecksum)
		}
		total = m.Size
	}
	want := expectedSHA(m, meta, linkedSHA, resp.Header)
	if m.SHA256 != "" {
		if s := firstSHA(linkedSHA, resp.Header); s != "" && s != strings.ToLower(m.SHA256) {
			return fmt.Errorf("hub: %s: server reports sha256 %s, the catalog expects %s: %w", m, s, m.SHA256, ErrChecksum)
		}
	}
	// A partial of another version of the file is of no use.
	if offset > 0 && (meta.SHA256 != "" && want != "" && meta.SHA256 != want || meta.Size > 0 && total >= 0 && meta.Size != total) {
		removePartial(partial)
		return transientError{fmt.Errorf("hub: %s: the file changed on the server since the partial download; starting over", m)}
	}
	if total >= 0 && offset > total {
		removePartial(partial)
		return transientError{fmt.Errorf("hub: %s: partial download is longer than the file; starting over", m)}
	}
	if err := checkFreeSpace(filepath.Dir(res.Path), total-offset); err != nil {
		return fmt.Errorf("hub: %s: %w", m, err)
	}
	if b, err := json.Marshal(partialMeta{URL: url, Size: total, SHA256: want}); err == nil {
		_ = os.WriteFile(metaPath, b, 0o644)
	}

	flags := os.O_CREATE | os.O_WRONLY
	if offset == 0 {
		flags |= os.O_TRUNC // a server that ignores Range sends everything again
	}
	f, err := os.OpenFile(partial, flags, 0o644)
	if err != nil {
		return fmt.Errorf("hub: %s: %w", m, diskErr(err))
	}
	defer f.Close()
	h := sha256.New()
	if offset > 0 {
		if err := hashPrefix(h, partial, offset); err != nil {
			return fmt.Errorf("hub: %s: reading the partial download: %w", m, err)
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return fmt.Errorf("hub: %s: %w", m, err)
		}
		res.Resumed = offset
	}
	done, err := copyBody(ctx, f, h, resp.Body, offset, total, opts.Progress)
	if err != nil {
		_ = f.Sync()
		if errors.Is(err, ErrDiskFull) {
			return fmt.Errorf("hub: %s: writing %s: %w (free some space or set PHOTOMAKER_CACHE to another disk; the partial download is kept and resumes)", m, partial, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var we writeError
		if errors.As(err, &we) {
			return fmt.Errorf("hub: %s: writing %s: %w", m, partial, we.err)
		}
		return transientError{fmt.Errorf("hub: %s: connection lost after %d bytes: %w", m, done, err)}
	}
	if total >= 0 && done < total {
		return transientError{fmt.Errorf("hub: %s: connection closed after %d of %d bytes", m, done, total)}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("hub: %s: %w", m, diskErr(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("hub: %s: %w", m, diskErr(err))
	}
	return finish(m, opts, res, partial, metaPath, done, h, want, total)
}

// finish checks the complete .partial (h holds its hash so far, nil to
// hash it now), renames it into place and writes the sidecar.
func finish(m Model, opts *Options, res *Result, partial, metaPath string, size int64, h interface {
	io.Writer
	Sum([]byte) []byte
}, want string, total int64) error {
	if h == nil {
		hh := sha256.New()
		if err := hashPrefix(hh, partial, size); err != nil {
			return fmt.Errorf("hub: %s: %w", m, err)
		}
		h = hh
	}
	got := hex.EncodeToString(h.Sum(nil))
	if total >= 0 && size != total {
		removePartial(partial)
		return fmt.Errorf("hub: %s: size mismatch: got %d bytes, want %d; the partial download was deleted, run pull again: %w", m, size, total, ErrChecksum)
	}
	if want != "" && got != want {
		removePartial(partial)
		return fmt.Errorf("hub: %s: %w: sha256 %s, want %s; the download was deleted, run pull again", m, ErrChecksum, got, want)
	}
	if err := os.Rename(partial, res.Path); err != nil {
		return fmt.Errorf("hub: %s: %w", m, err)
	}
	if err := os.WriteFile(sidecar(res.Path), []byte(got+"  "+filepath.Base(res.Path)+"\n"), 0o644); err != nil {
		return fmt.Errorf("hub: %s: writing the checksum: %w", m, diskErr(err))
	}
	_ = os.Remove(metaPath)
	res.Size, res.SHA256, res.Verified = size, got, want != ""
	if opts.Progress != nil {
		opts.Progress(size, size)
	}
	return nil
}

func removePartial(partial string) {
	_ = os.Remove(partial)
	_ = os.Remove(partial + ".json")
}

// expectedSHA is the checksum to verify against: the catalog's, else the
// server's, else the one noted when the partial download began.
func expectedSHA(m Model, meta partialMeta, linked string, h http.Header) string {
	if m.SHA256 != "" {
		return strings.ToLower(m.SHA256)
	}
	if s := firstSHA(linked, h); s != "" {
		return s
	}
	return meta.SHA256
}

func firstSHA(linked string, h http.Header) string {
	if linked != "" {
		return linked
	}
	if s := etagSHA256(h.Get("X-Linked-Etag")); s != "" {
		return s
	}
	return etagSHA256(h.Get("ETag"))
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL" or "bytes */TOTAL"
// (first is -1 then); total is -1 for "*".
func parseContentRange(v string) (first, total int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return -1, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, 0, false
	}
	return first, total, true
}

func hashPrefix(h io.Writer, p string, n int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.Copy(h, bufio.NewReaderSize(io.LimitReader(f, n), 1<<20))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("%s: %d bytes, want %d", p, got, n)
	}
	return nil
}

// writeError marks a failure to write the file (not to read the network).
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// copyBody copies body to f and h, calling progress; it returns the bytes
// on disk (offset included).
func copyBody(ctx context.Context, f io.Writer, h io.Writer, body io.Reader, offset, total int64, progress func(done, total int64)) (int64, error) {
	buf := make([]byte, 256<<10)
	done := offset
	if progress != nil {
		progress(done, total)
	}
	for {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			if total >= 0 && done+int64(n) > total {
				n = int(total - done) // never write past the announced size
				rerr = io.EOF
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return done, writeError{diskErr(err)}
			}
			h.Write(buf[:n])
			done += int64(n)
			if progress != nil {
				progress(done, total)
			}
		}
		if rerr == io.EOF {
			return done, nil
		}
		if rerr != nil {
			return done, rerr
		}
	}
}

// diskErr wraps ENOSPC (and EDQUOT) as ErrDiskFull.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || isQuota(err) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

// Entry is one file in the cache.
type Entry struct {
	Repo, File string
	Path       string
	Size       int64
	SHA256     string // "" for a partial download
	Partial    bool
	Total      int64 // a partial download's expected size (-1 unknown)
}

// List walks the cache: complete files (with a checksum sidecar) and
// partial downloads.
func List(cacheDir string) ([]Entry, error) {
	root := filepath.Join(cacheDir, "models")
	var out []Entry
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == root {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".sha256") || strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".partial.json"):
			return nil
		}
		isPartial := strings.HasSuffix(name, ".partial")
		file := strings.TrimSuffix(p, ".partial")
		rel, err := filepath.Rel(root, file)
		if err != nil {
			return nil
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) < 2 {
			return nil
		}
		repo, f := strings.Join(parts[:len(parts)-1], "/"), parts[len(parts)-1]
		if len(parts) >= 3 { // owner/repo/path/in/repo
			repo, f = parts[0]+"/"+parts[1], strings.Join(parts[2:], "/")
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		e := Entry{Repo: repo, File: f, Path: file, Size: info.Size(), Partial: isPartial, Total: -1}
		if isPartial {
			if b, err := os.ReadFile(p + ".json"); err == nil {
				var meta partialMeta
				if json.Unmarshal(b, &meta) == nil {
					e.Total = meta.Size
				}
			}
		} else {
			sum, err := readSidecar(p)
			if err != nil {
				return nil // not a finished download
			}
			e.SHA256 = sum
		}
		out = append(out, e)
		return nil
	})
	return out, err
}
