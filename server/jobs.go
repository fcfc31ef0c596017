package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/pngtext"
	"github.com/gophotomaker/photomaker/photomaker"
)

// Job states.
const (
	stateQueued   = "queued"
	stateRunning  = "running"
	stateDone     = "done"
	stateError    = "error"
	stateCanceled = "canceled"
)

// Causes of a job's cancellation, reported as its error.
var (
	errCanceled     = errors.New("canceled by request")
	errDisconnected = errors.New("canceled: the client disconnected before the job ended")
	errShutdown     = errors.New("canceled: the server is shutting down")
)

// job is one generation request. Fields below the line are guarded by
// Server.mu.
type job struct {
	id      string
	created time.Time
	req     photomaker.Request // ready for the pipeline (style applied), but the ID photos
	photos  [][]byte           // the ID photos' files, decoded when the job runs
	params  params             // as the client sent them (for the job view)
	ctx     context.Context
	cancel  context.CancelCauseFunc
	end     chan struct{} // closed when the job reaches a final state

	// ---- guarded by Server.mu
	state      string
	stage      string
	done       int
	total      int
	imagesDone int
	fraction   float64
	// The denoising pace: when the first image's loop started, and the
	// steps finished since over all images (each image's loop restarts).
	denoiseStart time.Time
	denoiseLast  time.Time
	stepsDone    int
	stepsBefore  int // steps of the images denoised before the current one
	stepsTotal   int // steps of each image's loop
	errMsg       string
	errStatus    int
	images       [][]byte
	started      time.Time
	finished     time.Time
	changed      chan struct{} // closed and replaced on every change
}

func newJobID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// queueMovedLocked wakes the watchers of every queued job after one left
// the queue: their positions changed.
func (s *Server) queueMovedLocked() {
	for _, q := range s.pending {
		q.notifyLocked()
	}
}

// notifyLocked wakes everyone watching the job.
func (j *job) notifyLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

func (j *job) terminal() bool {
	return j.state == stateDone || j.state == stateError || j.state == stateCanceled
}

// submit queues j, or refuses it when the queue is full or the server is
// closing.
func (s *Server) submit(j *job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refusalLocked(); err != nil {
		return err
	}
	j.state = stateQueued
	j.changed = make(chan struct{})
	s.jobs[j.id] = j
	s.pending = append(s.pending, j)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// queueFull reports whether a new job would be refused right now (checked
// before an upload is read; submit checks again).
func (s *Server) queueFull() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusalLocked()
}

// refusalLocked is the error a new job gets now (shutting down, or the
// queue full), or nil. s.mu is held.
func (s *Server) refusalLocked() error {
	if s.closed {
		return &httpError{http.StatusServiceUnavailable, "the server is shutting down"}
	}
	if n := len(s.pending); n >= s.opts.MaxQueue {
		waiting := "1 job"
		if n != 1 {
			waiting = fmt.Sprintf("%d jobs", n)
		}
		return &httpError{http.StatusTooManyRequests, fmt.Sprintf("the queue is full (%s waiting); try again shortly", waiting)}
	}
	return nil
}

func (s *Server) lookup(id string) *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[id]
}

// worker runs the queued jobs one at a time until Close.
func (s *Server) worker() {
	defer s.wg.Done()
	for {
		j := s.next()
		if j == nil {
			return
		}
		s.run(j)
	}
}

// next takes the oldest queued job, waiting for one; nil after Close.
func (s *Server) next() *job {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil
		}
		if len(s.pending) > 0 {
			j := s.pending[0]
			s.pending[0] = nil
			s.pending = s.pending[1:]
			s.queueMovedLocked()
			j.state = stateRunning
			j.started = time.Now()
			s.running = j
			j.notifyLocked()
			s.mu.Unlock()
			return j
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.ctx.Done():
		}
	}
}

// run generates j's images and records the outcome.
func (s *Server) run(j *job) {
	ctx := j.ctx
	if s.opts.JobTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, s.opts.JobTimeout, errTimeout(s.opts.JobTimeout))
		defer cancel()
	}
	req := j.req
	req.Progress = func(ev photomaker.Progress) { s.progress(j, ev) }
	var images [][]byte
	var err error
	if req.IDImages, err = decodePhotos(j.photos, s.opts.MaxPhotoPixels); err == nil { // checked when queued
		images, err = s.generate(ctx, req)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // canceled after the last step: keep nothing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.endLocked(j, stateDone, "", 0, images)
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		var te timeoutError
		if errors.As(cause, &te) {
			s.endLocked(j, stateError, cause.Error(), http.StatusGatewayTimeout, nil)
			break
		}
		status := http.StatusConflict
		if errors.Is(cause, errShutdown) {
			status = http.StatusServiceUnavailable
		}
		s.endLocked(j, stateCanceled, cause.Error(), status, nil)
	case errors.Is(err, photomaker.ErrInvalidRequest) || errors.Is(err, photomaker.ErrIDPrompt):
		s.endLocked(j, stateError, err.Error(), http.StatusBadRequest, nil)
	case errors.Is(err, ggml.ErrOutOfMemory):
		// Too large for this server's memory: the message says what fits.
		s.endLocked(j, stateError, err.Error(), http.StatusInsufficientStorage, nil)
	default:
		s.endLocked(j, stateError, err.Error(), http.StatusInternalServerError, nil)
	}
}

// generate runs the pipeline and encodes the PNGs; a panic becomes an error
// so one bad job cannot take the server down.
func (s *Server) generate(ctx context.Context, req photomaker.Request) (pngs [][]byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Error("generation panicked", "panic", r, "stack", string(debug.Stack()))
			pngs, err = nil, fmt.Errorf("internal error: %v", r)
		}
	}()
	res, err := s.gen.Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	params := s.parameters(&res.Request)
	for i, img := range res.Images {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := pngtext.Encode(img, [][2]string{{"parameters", params + photomaker.BatchParameters(len(res.Images), i)}})
		if err != nil {
			return nil, err
		}
		pngs = append(pngs, b)
	}
	return pngs, nil
}

// endLocked puts j in a final state, wakes its watchers and evicts the
// oldest finished jobs beyond KeepJobs.
func (s *Server) endLocked(j *job, state, msg string, status int, images [][]byte) {
	if j.terminal() {
		return
	}
	j.state, j.errMsg, j.errStatus, j.images = state, msg, status, images
	j.finished = time.Now()
	if state == stateDone {
		j.fraction = 1
	}
	j.photos = nil // not needed any more
	if s.running == j {
		s.running = nil
	}
	j.notifyLocked()
	close(j.end)
	j.cancel(nil) // release the context
	s.finished = append(s.finished, j)
	for len(s.finished) > s.opts.KeepJobs {
		old := s.finished[0]
		s.finished[0] = nil
		s.finished = s.finished[1:]
		delete(s.jobs, old.id)
	}
	level := s.opts.Logger.Info
	if state == stateError {
		level = s.opts.Logger.Warn
	}
	level("job ended", "id", j.id, "state", state, "error", msg, "images", len(images),
		"queued", j.started.Sub(j.created).Round(time.Millisecond), "ran", sinceOrZero(j.started, j.finished))
}

func sinceOrZero(start, end time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return end.Sub(start).Round(time.Millisecond)
}

// cancelJob cancels a queued job at once and asks a running one to stop
// (the worker ends it at the next step).
func (s *Server) cancelJob(j *job, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch j.state {
	case stateQueued:
		for i, q := range s.pending {
			if q == j {
				s.pending = append(s.pending[:i], s.pending[i+1:]...)
				break
			}
		}
		s.queueMovedLocked()
		j.cancel(cause)
		s.endLocked(j, stateCanceled, cause.Error(), http.StatusConflict, nil)
	case stateRunning:
		j.cancel(cause)
	}
}

// progress records a pipeline progress event. The bar's fraction counts
// each image as 90 % denoising and 10 % decoding, over the steps of all
// the images: it only grows, whether the pipeline decodes each image after
// its own loop or (as it does) all of them after the last loop.
func (s *Server) progress(j *job, ev photomaker.Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.terminal() {
		return
	}
	if ev.Stage == "denoise" {
		now := time.Now()
		switch {
		case j.denoiseStart.IsZero():
			j.denoiseStart = now
		case ev.Done == 0 && j.stepsDone > j.stepsBefore: // the next image's loop
			j.stepsBefore = j.stepsDone
		}
		j.stepsDone = j.stepsBefore + ev.Done
		j.denoiseLast = now
		j.stepsTotal = ev.Total
	}
	if ev.Stage == "decode" && ev.Total > 0 && ev.Done >= ev.Total {
		j.imagesDone++
	}
	j.stage, j.done, j.total = ev.Stage, ev.Done, ev.Total
	n := max(j.req.N, 1)
	denoised := 0.0
	if j.stepsTotal > 0 {
		denoised = float64(j.stepsDone) / float64(n*j.stepsTotal)
	}
	j.fraction = min(1, 0.9*denoised+0.1*float64(j.imagesDone)/float64(n))
	j.notifyLocked()
}

// timeoutError is the cause of a job that ran out of time.
type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string {
	return fmt.Sprintf("the job ran longer than the server's limit of %s and was stopped", e.d)
}

func errTimeout(d time.Duration) error { return timeoutError{d} }

// jobView is the JSON of a job.
type jobView struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	QueuePosition int               `json:"queue_position,omitempty"`
	Progress      progressView      `json:"progress"`
	Error         string            `json:"error,omitempty"`
	ErrorStatus   int               `json:"error_status,omitempty"`
	Seed          int64             `json:"seed"`
	Images        []string          `json:"images"`
	Created       time.Time         `json:"created"`
	Started       *time.Time        `json:"started,omitempty"`
	Finished      *time.Time        `json:"finished,omitempty"`
	ElapsedMS     int64             `json:"elapsed_ms"`
	Request       requestView       `json:"request"`
	Links         map[string]string `json:"links"`
}

type progressView struct {
	Stage    string  `json:"stage,omitempty"`
	Done     int     `json:"done"`
	Total    int     `json:"total"`
	Fraction float64 `json:"fraction"`
	// SecondsLeft is, while denoising, how long the remaining steps of
	// every image will take at the pace so far (the decode comes after).
	SecondsLeft float64 `json:"seconds_left,omitempty"`
}

// secondsLeft is progressView.SecondsLeft for j.
func (j *job) secondsLeft() float64 {
	if j.terminal() || j.stage != "denoise" || j.stepsDone == 0 || j.total <= 0 {
		return 0
	}
	perStep := j.denoiseLast.Sub(j.denoiseStart).Seconds() / float64(j.stepsDone)
	return perStep * float64(max(j.req.N, 1)*j.total-j.stepsDone)
}

type requestView struct {
	Prompt         string  `json:"prompt"`
	NegativePrompt string  `json:"negative_prompt"`
	Style          string  `json:"style"`
	Width          int     `json:"width"`
	Height         int     `json:"height"`
	Steps          int     `json:"steps"`
	Guidance       float64 `json:"guidance"`
	Seed           int64   `json:"seed"`
	N              int     `json:"n"`
	StyleStrength  float64 `json:"style_strength,omitempty"`
	TriggerWord    string  `json:"trigger_word,omitempty"`
	Sampler        string  `json:"sampler"`
	Spacing        string  `json:"timestep_spacing,omitempty"`
	IDImages       int     `json:"id_images"`
}

func (s *Server) viewLocked(j *job) jobView {
	v := jobView{
		ID: j.id, Status: j.state, Error: j.errMsg, ErrorStatus: j.errStatus, Seed: j.req.Seed,
		Progress: progressView{Stage: j.stage, Done: j.done, Total: j.total, Fraction: j.fraction, SecondsLeft: j.secondsLeft()},
		Created:  j.created, Images: []string{},
		Request: requestView{
			Prompt: j.params.prompt, NegativePrompt: j.params.negative, Style: j.params.style,
			Width: j.req.Width, Height: j.req.Height, Steps: j.req.Steps, Guidance: max(0, j.req.Guidance), // NoGuidance: 0
			Seed: j.req.Seed, N: j.req.N, Sampler: j.req.Sampler, Spacing: j.req.TimestepSpacing, IDImages: j.params.idImages,
		},
		Links: map[string]string{
			"self":   "/api/jobs/" + j.id,
			"events": "/api/jobs/" + j.id + "/events",
		},
	}
	if s.pm {
		v.Request.StyleStrength = max(0, j.req.StyleStrength) // NoStyleDelay: 0
		v.Request.TriggerWord = j.req.TriggerWord
	}
	if j.state == stateQueued {
		for i, q := range s.pending {
			if q == j {
				v.QueuePosition = i + 1
				break
			}
		}
	}
	if !j.started.IsZero() {
		t := j.started
		v.Started = &t
	}
	end := time.Now()
	if !j.finished.IsZero() {
		t := j.finished
		v.Finished = &t
		end = t
	}
	v.ElapsedMS = end.Sub(j.created).Milliseconds()
	for k := range j.images {
		v.Images = append(v.Images, fmt.Sprintf("/api/jobs/%s/images/%d.png", j.id, k))
	}
	return v
}

func (s *Server) view(j *job) jobView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewLocked(j)
}

// parameters is the A1111-style text stored in each PNG.
func (s *Server) parameters(r *photomaker.Request) string {
	var b strings.Builder
	b.WriteString(r.Parameters())
	if s.opts.ModelName != "" {
		fmt.Fprintf(&b, ", Model: %s", s.opts.ModelName)
	}
	if s.pm {
		adapter := s.opts.AdapterName
		if adapter == "" {
			adapter = s.kind
		}
		fmt.Fprintf(&b, ", PhotoMaker: %s, Style strength: %g, Trigger word: %s, ID images: %d",
			adapter, r.StyleStrength, r.TriggerWord, len(r.IDImages))
	}
	fmt.Fprintf(&b, ", Generator: photomaker %s (serve)", s.opts.Version)
	return b.String()
}
