// Package server serves a loaded photomaker.Pipeline over HTTP: a JSON API
// with a bounded job queue (one generation at a time per pipeline) and one
// embedded web page.
//
//	POST   /api/generate               multipart (fields + id_image[] files) or JSON → 202 {id}
//	POST   /api/generate?wait=1        the same, answered when the job ends (PNG or JSON)
//	GET    /api/jobs                   recent jobs
//	GET    /api/jobs/{id}              status, progress, error, seed, image URLs
//	GET    /api/jobs/{id}/events       Server-Sent Events: the job's status on every change
//	GET    /api/jobs/{id}/images/{k}.png  PNG with an A1111-style "parameters" chunk
//	DELETE /api/jobs/{id}              cancels a queued or running job
//	GET    /api/info                   model kind, device, styles, defaults, limits
//	GET    /                           the web page
//
// Errors are JSON {"error": "..."} with 400 (bad request), 404, 413 (upload
// too large), 429 (queue full, or too many uploads at once; with
// Retry-After) or 503 (shutting down).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gophotomaker/photomaker/photomaker"
)

// Options bound what the server accepts. Zero fields take the defaults.
type Options struct {
	// MaxQueue is how many jobs may wait behind the running one (default
	// 16); a request beyond that gets 429.
	MaxQueue int
	// MaxUploadBytes bounds a request body (default 50 MiB); a larger one
	// gets 413. Four bodies are read at a time; a request that finds no
	// room for 10 s gets 429.
	MaxUploadBytes int64
	// MaxImages is the most ID photos one request may carry (default 8).
	MaxImages int
	// MaxOutputs is the most images one job may generate, "n" (default 4).
	MaxOutputs int
	// MaxSide is the largest output width or height (default 2048).
	MaxSide int
	// MaxSteps is the most denoising steps a job may ask for (default 200).
	MaxSteps int
	// MaxPhotoPixels bounds each ID photo (width×height, default 40 MP):
	// larger photos are refused before their pixels are decoded.
	MaxPhotoPixels int64
	// JobTimeout bounds a job's running time (default 30 minutes; negative:
	// no limit). A job that runs out ends with an error.
	JobTimeout time.Duration
	// UploadTimeout bounds reading a request body (default 2 minutes).
	UploadTimeout time.Duration
	// DownloadTimeout bounds sending a PNG (default 2 minutes): a client
	// that stops reading loses its connection rather than holding it, and
	// the image, for good.
	DownloadTimeout time.Duration
	// Steps and Guidance are what requests (and the page) get when they
	// leave them out: 0 takes the demo's (photomaker.DefaultSteps, or
	// MaxSteps if fewer, and DefaultGuidance); photomaker.NoGuidance is
	// guidance off. A few-step model wants its own (e.g. 6 steps,
	// guidance 1.5 or off).
	Steps    int
	Guidance float64
	// KeepJobs is how many finished jobs (with their images) are kept in
	// memory (default 64); the oldest are forgotten first.
	KeepJobs int
	// ModelName and AdapterName are recorded in the PNGs' parameters
	// chunk (base names of the model files).
	ModelName, AdapterName string
	// Version is recorded as the generator in the parameters chunk.
	Version string
	// Logger receives one line per job (default: slog.Default()).
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxQueue        = 16
	DefaultMaxUploadBytes  = 50 << 20
	DefaultMaxImages       = 8
	DefaultMaxOutputs      = 4
	DefaultMaxSide         = 2048
	DefaultMaxSteps        = 200
	DefaultMaxPhotoPixels  = 40_000_000
	DefaultJobTimeout      = 30 * time.Minute
	DefaultUploadTimeout   = 2 * time.Minute
	DefaultDownloadTimeout = 2 * time.Minute
	DefaultKeepJobs        = 64
)

func (o Options) withDefaults() Options {
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.MaxUploadBytes <= 0 {
		o.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if o.MaxImages <= 0 {
		o.MaxImages = DefaultMaxImages
	}
	if o.MaxOutputs <= 0 {
		o.MaxOutputs = DefaultMaxOutputs
	}
	if o.MaxSide <= 0 {
		o.MaxSide = DefaultMaxSide
	}
	if o.MaxSteps <= 0 {
		o.MaxSteps = DefaultMaxSteps
	}
	if o.MaxPhotoPixels <= 0 {
		o.MaxPhotoPixels = DefaultMaxPhotoPixels
	}
	if o.JobTimeout == 0 {
		o.JobTimeout = DefaultJobTimeout
	}
	if o.UploadTimeout <= 0 {
		o.UploadTimeout = DefaultUploadTimeout
	}
	if o.DownloadTimeout <= 0 {
		o.DownloadTimeout = DefaultDownloadTimeout
	}
	if o.Steps <= 0 {
		o.Steps = min(photomaker.DefaultSteps, o.MaxSteps)
	}
	if o.Guidance == 0 {
		o.Guidance = photomaker.DefaultGuidance
	}
	if o.KeepJobs <= 0 {
		o.KeepJobs = DefaultKeepJobs
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ModelName != "" {
		o.ModelName = filepath.Base(o.ModelName)
	}
	if o.AdapterName != "" {
		o.AdapterName = filepath.Base(o.AdapterName)
	}
	return o
}

// generator is what the server needs of a pipeline.
type generator interface {
	Generate(ctx context.Context, req photomaker.Request) (*photomaker.Result, error)
}

// Server is an http.Handler running the jobs of one pipeline, one at a
// time, from a bounded queue. Close it to cancel the queued and running
// jobs; it does not close the pipeline.
type Server struct {
	gen    generator
	opts   Options
	mux    *http.ServeMux
	kind   string
	device string
	pm     bool // a PhotoMaker adapter is loaded: ID photos are required
	v2     bool

	ctx  context.Context // canceled by Close
	stop context.CancelFunc
	wg   sync.WaitGroup // the worker
	wake chan struct{}  // a job was queued (capacity 1)
	// decoding admits one request's photos to checkPhotos at a time.
	decoding chan struct{}
	uploads  chan struct{} // admits uploadSlots request bodies at a time
	// uploadWait is how long a request waits for an upload slot.
	uploadWait time.Duration

	vram string // the pipeline's VRAM mode ("" on the CPU)
	// side and sizes are the default output side and the size presets,
	// scaled down to fit MaxSide when it is below SDXL's 1024.
	side  int
	sizes []photomaker.SizePreset

	mu       sync.Mutex
	jobs     map[string]*job
	pending  []*job // queued, oldest first
	running  *job
	finished []*job // ended, oldest first (evicted beyond KeepJobs)
	closed   bool
}

// New returns a server for p and starts its worker.
func New(p *photomaker.Pipeline, opts Options) *Server {
	s := newServer(p, p.Kind(), p.Device(), opts)
	s.vram = p.VRAM() // read only by handlers, which start after New returns
	return s
}

func newServer(gen generator, kind, device string, opts Options) *Server {
	s := &Server{
		gen:    gen,
		opts:   opts.withDefaults(),
		kind:   kind,
		device: device,
		jobs:   map[string]*job{},
		wake:   make(chan struct{}, 1),

		decoding: make(chan struct{}, 1),
		uploads:  make(chan struct{}, uploadSlots),

		uploadWait: uploadWait,
	}
	s.side, s.sizes = fitSizes(s.opts.MaxSide)
	s.pm = isPhotoMaker(kind)
	s.v2 = s.pm && containsFold(kind, "v2")
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.routes()
	s.wg.Add(1)
	go s.worker()
	return s
}

// fitSizes is the default side and the size presets for a server whose
// outputs are at most maxSide on a side: the demo's 1024 and presets, or,
// below that, the presets scaled so that their longer side is maxSide
// (sides rounded to multiples of 8).
func fitSizes(maxSide int) (int, []photomaker.SizePreset) {
	if maxSide >= photomaker.DefaultSize {
		return photomaker.DefaultSize, photomaker.SizePresets
	}
	side := max(8, maxSide/8*8)
	scale := func(n int) int { return max(8, (n*side+photomaker.DefaultSize*4)/(photomaker.DefaultSize*8)*8) }
	sizes := make([]photomaker.SizePreset, len(photomaker.SizePresets))
	for i, p := range photomaker.SizePresets {
		p.Width, p.Height = scale(p.Width), scale(p.Height)
		sizes[i] = p
	}
	return side, sizes
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /api/generate", s.handleGenerate)
	s.mux.HandleFunc("GET /api/jobs", s.handleList)
	s.mux.HandleFunc("GET /api/jobs/{id}", s.handleJob)
	s.mux.HandleFunc("DELETE /api/jobs/{id}", s.handleCancel)
	s.mux.HandleFunc("GET /api/jobs/{id}/events", s.handleEvents)
	s.mux.HandleFunc("GET /api/jobs/{id}/images/{file}", s.handleImage)
	s.mux.HandleFunc("GET /api/info", s.handleInfo)
	// Unknown API paths get a JSON 404, known ones with the wrong method 405.
	known := http.NewServeMux()
	for _, p := range []string{"/api/generate", "/api/jobs", "/api/jobs/{id}", "/api/jobs/{id}/events", "/api/jobs/{id}/images/{file}", "/api/info"} {
		known.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := known.Handler(r); pattern != "" {
			w.Header().Set("Allow", allowed(pattern))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err)
	}
	files := http.FileServerFS(static)
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		http.ServeFileFS(w, r, static, "index.html")
	})
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		if r.URL.Path == "" || r.URL.Path == "index.html" || r.URL.Path[len(r.URL.Path)-1] == '/' {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})))
}

// allowed is the Allow header of an API route pattern.
func allowed(pattern string) string {
	switch pattern {
	case "/api/generate":
		return "POST"
	case "/api/jobs/{id}":
		return "GET, HEAD, DELETE"
	}
	return "GET, HEAD"
}

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// ServeHTTP implements http.Handler. Before routing it refuses what only
// another site or a hostile client sends: requests naming a foreign host
// to a server on a loopback address (DNS rebinding: a web page whose
// domain resolves to 127.0.0.1 would read every job), state-changing
// requests from another origin (any page could queue jobs), and bodies
// where no route reads one (Go's server would read them after the
// response without a deadline: a slow sender held the connection open).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case !hostAllowed(r):
		refuse(w, &httpError{http.StatusForbidden, fmt.Sprintf("host %q is not this server's: on a loopback address it answers to localhost and loopback IPs only", r.Host)})
	case r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r):
		refuse(w, &httpError{http.StatusForbidden, fmt.Sprintf("cross-origin %s from %s is refused", r.Method, r.Header.Get("Origin"))})
	case !(r.Method == http.MethodPost && r.URL.Path == "/api/generate") && hasBody(w, r):
		refuse(w, badRequest("%s %s takes no request body", r.Method, r.URL.Path))
	default:
		s.mux.ServeHTTP(w, r)
	}
}

// hasBody says whether r carries a body: a length above zero, or a
// chunked body that is not empty (some clients send an empty body chunked
// even on GET and DELETE). It waits at most a second for the first chunk.
func hasBody(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength >= 0 {
		return r.ContentLength > 0
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(time.Second))
	defer rc.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := r.Body.Read(b[:])
	return n > 0 || err != io.EOF
}

// hostAllowed says whether r's Host may reach this server: any, unless
// the connection came in on a loopback address, where only loopback names
// are this server's.
func hostAllowed(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true // not from a net/http server (tests' handlers)
	}
	if ap, err := netip.ParseAddrPort(local.String()); err != nil || !ap.Addr().IsLoopback() {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

// sameOrigin says whether r carries no Origin (not from a browser's
// cross-site request) or one naming r's own host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// refuse answers an error and closes the connection: the request's body
// may be unread, and reading it could take as long as its sender likes.
func refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Connection", "close")
	writeErr(w, err)
}

// Close cancels the queued and running jobs and waits for the worker to
// stop. Requests after Close get 503. It does not close the pipeline.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, j := range s.pending {
			j.cancel(errShutdown)
			s.endLocked(j, stateCanceled, errShutdown.Error(), http.StatusServiceUnavailable, nil)
		}
		s.pending = nil
		if s.running != nil {
			s.running.cancel(errShutdown)
		}
	}
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	return nil
}

// Shutdown is Close bounded by ctx: it returns ctx's error if the running
// job has not stopped in time (the worker still stops as soon as it can).
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// httpError is an error with the status it should be answered with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func writeErr(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		if he.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "2")
		}
		writeError(w, he.status, he.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}
