package server

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gophotomaker/photomaker/photomaker"
)

//go:embed web
var webFS embed.FS

func isPhotoMaker(kind string) bool { return strings.Contains(strings.ToLower(kind), "photomaker") }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// handleGenerate queues a job: 202 with its view, or, with ?wait=1, the
// result once it ends (the PNG when there is one image, unless the client
// asks for JSON with Accept: application/json or ?format=json). In wait
// mode a client that disconnects cancels its job.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	if err := s.queueFull(); err != nil { // refuse before reading a big upload
		refuse(w, err)
		return
	}
	if err := s.admitUpload(r); err != nil {
		refuse(w, err)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.UploadTimeout))
	j, err := s.parseRequest(w, r)
	<-s.uploads
	if err != nil {
		refuse(w, err)
		return
	}
	// The body is read: no deadline, so that a ?wait=1 client's
	// disconnect, not the clock, ends its wait.
	_ = rc.SetReadDeadline(time.Time{})
	j.id = newJobID()
	j.created = time.Now()
	j.end = make(chan struct{})
	j.ctx, j.cancel = context.WithCancelCause(s.ctx)
	// Once queued, j.req is read by the worker and changed under s.mu: log first.
	logArgs := []any{"id", j.id, "size", fmt.Sprintf("%dx%d", j.req.Width, j.req.Height),
		"steps", j.req.Steps, "n", j.req.N, "id_images", len(j.photos)}
	if err := s.submit(j); err != nil {
		j.cancel(nil)
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("job queued", logArgs...)

	if !isTrue(r.URL.Query().Get("wait")) {
		w.Header().Set("Location", "/api/jobs/"+j.id)
		writeJSON(w, http.StatusAccepted, s.view(j))
		return
	}
	select {
	case <-j.end:
	case <-r.Context().Done():
		s.cancelJob(j, errDisconnected)
		<-j.end // the worker stops at the next step; nothing is kept
		return
	}
	s.mu.Lock()
	v := s.viewLocked(j)
	var img []byte
	if len(j.images) == 1 {
		img = j.images[0]
	}
	status := j.errStatus
	s.mu.Unlock()
	w.Header().Set("X-Job-Id", j.id)
	if v.Status != stateDone {
		writeJSON(w, status, v)
		return
	}
	if img != nil && !wantsJSON(r) {
		w.Header().Set("X-Seed", strconv.FormatInt(v.Seed, 10))
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		w.WriteHeader(http.StatusOK)
		s.writePNG(w, img)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// uploadSlots is how many request bodies are read at once: each is held
// whole in memory while it is read (30 parallel 45 MB uploads took 2.9
// GB). A request waits up to uploadWait for a slot (Server.uploadWait),
// then gets 429.
const (
	uploadSlots = 4
	uploadWait  = 10 * time.Second
)

// admitUpload takes one of the upload slots (s.uploads), which the caller
// gives back once the body is read.
func (s *Server) admitUpload(r *http.Request) error {
	t := time.NewTimer(s.uploadWait)
	defer t.Stop()
	select {
	case s.uploads <- struct{}{}:
		return nil
	case <-t.C:
		return &httpError{http.StatusTooManyRequests, "the server is busy receiving other uploads; try again shortly"}
	case <-r.Context().Done():
		return &httpError{http.StatusServiceUnavailable, "the client went away"}
	}
}

func isTrue(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

func wantsJSON(r *http.Request) bool {
	if r.URL.Query().Get("format") == "json" {
		return true
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "image/png")
}

func (s *Server) jobOr404(w http.ResponseWriter, r *http.Request) *job {
	j := s.lookup(r.PathValue("id"))
	if j == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no job %q (finished jobs are kept for a while, the oldest are forgotten first)", r.PathValue("id")))
	}
	return j
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	if j := s.jobOr404(w, r); j != nil {
		writeJSON(w, http.StatusOK, s.view(j))
	}
}

// handleList lists the queued, running and kept jobs, newest first.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var all []*job
	for _, j := range s.jobs {
		all = append(all, j)
	}
	views := make([]jobView, 0, len(all))
	for _, j := range all {
		views = append(views, s.viewLocked(j))
	}
	s.mu.Unlock()
	// Newest first.
	for i := 1; i < len(views); i++ {
		for k := i; k > 0 && views[k].Created.After(views[k-1].Created); k-- {
			views[k], views[k-1] = views[k-1], views[k]
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": views})
}

// handleCancel cancels a queued or running job and answers with its view
// once it has stopped (202 if it is still stopping after a few seconds).
// A finished job is left as it is.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	j := s.jobOr404(w, r)
	if j == nil {
		return
	}
	s.cancelJob(j, errCanceled)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-j.end:
		writeJSON(w, http.StatusOK, s.view(j))
	case <-t.C:
		writeJSON(w, http.StatusAccepted, s.view(j))
	case <-r.Context().Done():
	}
}

// handleEvents streams the job's view as Server-Sent Events on every change
// ("progress" events, then one "end" event) until the job ends. Close ends
// every job, so streams end on shutdown too.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	j := s.jobOr404(w, r)
	if j == nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var last []byte
	for {
		s.mu.Lock()
		v := s.viewLocked(j)
		changed := j.changed
		ended := j.terminal()
		s.mu.Unlock()
		b, _ := json.Marshal(v)
		v.ElapsedMS = 0 // the clock alone does not make a change worth sending
		key, _ := json.Marshal(v)
		if string(key) != string(last) {
			event := "progress"
			if ended {
				event = "end"
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			last = key
		}
		if ended {
			return
		}
		select {
		case <-changed:
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) handleImage(w http.ResponseWriter, r *http.Request) {
	j := s.jobOr404(w, r)
	if j == nil {
		return
	}
	name := r.PathValue("file")
	k, err := strconv.Atoi(strings.TrimSuffix(name, ".png"))
	if err != nil || k < 0 || name != strconv.Itoa(k)+".png" { // one name per image: not +0.png or 00.png
		writeError(w, http.StatusNotFound, fmt.Sprintf("no image %q: images are named 0.png, 1.png, ...", name))
		return
	}
	s.mu.Lock()
	state := j.state
	var img []byte
	if k < len(j.images) {
		img = j.images[k]
	}
	s.mu.Unlock()
	if img == nil {
		if state != stateDone {
			writeError(w, http.StatusNotFound, fmt.Sprintf("job %s is %s: it has no images", j.id, state))
		} else {
			writeError(w, http.StatusNotFound, fmt.Sprintf("job %s has no image %d", j.id, k))
		}
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/png")
	h.Set("Content-Length", strconv.Itoa(len(img)))
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	h.Set("Content-Disposition", fmt.Sprintf(`inline; filename="photomaker-%s-%d.png"`, j.id, k))
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	s.writePNG(w, img)
}

// writePNG sends an image's bytes within DownloadTimeout.
func (s *Server) writePNG(w http.ResponseWriter, img []byte) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.DownloadTimeout))
	_, _ = w.Write(img)
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	styles := make([]string, len(photomaker.Styles))
	for i, st := range photomaker.Styles {
		styles[i] = st.Name
	}
	s.mu.Lock()
	queued, running := len(s.pending), s.running != nil
	s.mu.Unlock()
	o := s.opts
	info := map[string]any{
		"kind":       s.kind,
		"photomaker": s.pm,
		"device":     s.device,
		"vram":       s.vram,
		"model":      o.ModelName,
		"adapter":    o.AdapterName,
		"version":    o.Version,
		"styles":     styles,
		"sizes":      s.sizes,
		// What the page starts with (the official demo's choices, steps
		// and guidance as Options set them). The API's own defaults for
		// absent fields are the same numbers, no style, an empty negative
		// prompt and a random seed.
		"defaults": map[string]any{
			"style":           photomaker.DefaultStyle,
			"negative_prompt": photomaker.DefaultNegativePrompt,
			"width":           s.side,
			"height":          s.side,
			"steps":           o.Steps,
			"guidance":        max(0, o.Guidance), // NoGuidance: 0
			"style_strength":  photomaker.DefaultStyleStrength,
			"seed":            -1,
			"n":               1,
			"trigger_word":    photomaker.DefaultTrigger,
			"sampler":         photomaker.DefaultSampler,
		},
		"limits": map[string]any{
			"max_queue":        o.MaxQueue,
			"max_upload_bytes": o.MaxUploadBytes,
			"max_images":       o.MaxImages,
			"max_outputs":      o.MaxOutputs,
			"max_side":         o.MaxSide,
			"max_steps":        o.MaxSteps,
			"job_timeout_s":    max(0, o.JobTimeout.Seconds()),
		},
		"queue": map[string]any{"queued": queued, "running": running},
	}
	writeJSON(w, http.StatusOK, info)
}
