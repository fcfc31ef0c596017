package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/tokenizer"
)

// jsonRequest is the JSON form of POST /api/generate. Absent fields take
// the defaults; photos, if any, are base64 (optionally as data: URLs).
type jsonRequest struct {
	Prompt         string   `json:"prompt"`
	NegativePrompt *string  `json:"negative_prompt"`
	Style          string   `json:"style"`
	Width          int      `json:"width"`
	Height         int      `json:"height"`
	Steps          int      `json:"steps"`
	Guidance       *float64 `json:"guidance"`
	Seed           *int64   `json:"seed"`
	N              int      `json:"n"`
	StyleStrength  *float64 `json:"style_strength"`
	TriggerWord    string   `json:"trigger_word"`
	Sampler        string   `json:"sampler"`
	Karras         bool     `json:"karras"`
	Spacing        string   `json:"timestep_spacing"`
	RNG            string   `json:"rng"`
	IDImages       []string `json:"id_images"`
}

// params is a request as the client sent it, kept for the job view.
type params struct {
	prompt, negative, style string
	idImages                int
}

// maxFieldBytes bounds one text field of a multipart form.
const maxFieldBytes = 64 << 10

// photoFields are the multipart names accepted for ID photos.
var photoFields = map[string]bool{"id_image[]": true, "id_image": true, "id_images": true, "id_images[]": true}

// maxJSONSeed is the largest seed the API takes and answers with: 2^53 − 1,
// the largest whole number every JSON client (JavaScript's included) reads
// back exactly, so that a seed it reuses makes the same image.
const maxJSONSeed = 1<<53 - 1

// parseRequest reads and validates a generation request. Errors are
// *httpError with 400 or 413.
func (s *Server) parseRequest(w http.ResponseWriter, r *http.Request) (*job, error) {
	limit := s.opts.MaxUploadBytes
	if r.ContentLength > limit {
		return nil, s.tooLarge()
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	var jr jsonRequest
	var photos [][]byte
	ct, ctParams, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	switch ct {
	case "application/json":
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err = dec.Decode(&jr); err != nil {
			return nil, s.bodyError(err, "the JSON body")
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, badRequest("the JSON body has more after its object")
		}
		for name, v := range map[string]string{"prompt": jr.Prompt, "style": jr.Style, "trigger_word": jr.TriggerWord,
			"sampler": jr.Sampler, "rng": jr.RNG, "negative_prompt": deref(jr.NegativePrompt), "timestep_spacing": jr.Spacing} {
			if len(v) > maxFieldBytes { // as multipart fields: prompts are stored in every PNG and job view
				return nil, badRequest("field %q is longer than %d bytes", name, maxFieldBytes)
			}
		}
		for i, b64 := range jr.IDImages {
			if len(photos) >= s.opts.MaxImages {
				return nil, badRequest("too many ID photos: at most %d per request", s.opts.MaxImages)
			}
			if k := strings.Index(b64, ";base64,"); strings.HasPrefix(b64, "data:") && k >= 0 {
				b64 = b64[k+len(";base64,"):]
			}
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
			if err != nil {
				return nil, badRequest("id_images[%d] is not valid base64: %v", i, err)
			}
			photos = append(photos, b)
		}
	case "multipart/form-data":
		if ctParams["boundary"] == "" {
			return nil, badRequest("multipart body without a boundary")
		}
		mr, err := r.MultipartReader()
		if err != nil {
			return nil, badRequest("cannot read the multipart body: %v", err)
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, s.bodyError(err, "the multipart body")
			}
			name := part.FormName()
			if photoFields[name] {
				if len(photos) >= s.opts.MaxImages {
					part.Close()
					return nil, badRequest("too many ID photos: at most %d per request", s.opts.MaxImages)
				}
				b, err := io.ReadAll(part)
				part.Close()
				if err != nil {
					return nil, s.bodyError(err, "an ID photo")
				}
				if len(b) == 0 && part.FileName() == "" {
					continue // an empty file input
				}
				photos = append(photos, b)
				continue
			}
			b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			part.Close()
			if err != nil {
				return nil, s.bodyError(err, "field "+strconv.Quote(name))
			}
			if len(b) > maxFieldBytes {
				return nil, badRequest("field %q is longer than %d bytes", name, maxFieldBytes)
			}
			if err := jr.set(name, string(b)); err != nil {
				return nil, err
			}
		}
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return nil, s.bodyError(err, "the form")
		}
		for name, vals := range r.PostForm {
			if photoFields[name] {
				return nil, badRequest("ID photos need a multipart/form-data upload")
			}
			if err := jr.set(name, vals[len(vals)-1]); err != nil {
				return nil, err
			}
		}
	case "":
		return nil, badRequest("missing Content-Type: send multipart/form-data (with photos) or application/json")
	default:
		return nil, &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Type %q: send multipart/form-data (with photos) or application/json", ct)}
	}
	return s.buildJob(&jr, photos)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *Server) tooLarge() error {
	return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the request is larger than the server's upload limit of %s", formatBytes(s.opts.MaxUploadBytes))}
}

// bodyError turns a body read error into 413 (over the limit) or 400.
func (s *Server) bodyError(err error, what string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return s.tooLarge()
	}
	return badRequest("cannot read %s: %v", what, err)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// set assigns one form field.
func (jr *jsonRequest) set(name, v string) error {
	v = strings.TrimSpace(v)
	atoi := func(dst *int) error {
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return badRequest("field %q: want a whole number, got %q", name, v)
		}
		*dst = n
		return nil
	}
	atof := func(dst **float64) error {
		if v == "" {
			return nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return badRequest("field %q: want a number, got %q", name, v)
		}
		*dst = &f
		return nil
	}
	switch name {
	case "prompt":
		jr.Prompt = v
	case "negative_prompt":
		jr.NegativePrompt = &v
	case "style":
		jr.Style = v
	case "width":
		return atoi(&jr.Width)
	case "height":
		return atoi(&jr.Height)
	case "steps":
		return atoi(&jr.Steps)
	case "n":
		return atoi(&jr.N)
	case "guidance":
		return atof(&jr.Guidance)
	case "style_strength":
		return atof(&jr.StyleStrength)
	case "seed":
		if v == "" {
			return nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return badRequest("field \"seed\": want a whole number (-1 for random), got %q", v)
		}
		jr.Seed = &n
	case "trigger_word":
		jr.TriggerWord = v
	case "sampler":
		jr.Sampler = v
	case "karras":
		b, err := strconv.ParseBool(v)
		if v != "" && err != nil {
			return badRequest("field \"karras\": want true or false, got %q", v)
		}
		jr.Karras = b
	case "timestep_spacing":
		jr.Spacing = v
	case "rng":
		jr.RNG = v
	default:
		return badRequest("unknown field %q", name)
	}
	return nil
}

// buildJob validates a request and turns it into a job ready to queue.
func (s *Server) buildJob(jr *jsonRequest, photos [][]byte) (*job, error) {
	o := s.opts
	prompt := strings.TrimSpace(jr.Prompt)
	if prompt == "" {
		return nil, badRequest("the prompt is empty")
	}
	if !utf8.ValidString(prompt) {
		return nil, badRequest("the prompt is not valid UTF-8")
	}
	negative := ""
	if jr.NegativePrompt != nil {
		negative = *jr.NegativePrompt
	}
	if !utf8.ValidString(negative) {
		return nil, badRequest("the negative prompt is not valid UTF-8")
	}
	style, err := photomaker.FindStyle(jr.Style)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	req := photomaker.Request{
		Width: jr.Width, Height: jr.Height, Steps: jr.Steps, Guidance: max(0, o.Guidance), N: jr.N, // NoGuidance: 0 (off)
		StyleStrength: photomaker.DefaultStyleStrength, TriggerWord: jr.TriggerWord,
		Sampler: jr.Sampler, Karras: jr.Karras, RNG: jr.RNG,
	}
	if jr.Guidance != nil { // 0 as well: no guidance
		req.Guidance = *jr.Guidance
	}
	if jr.StyleStrength != nil {
		req.StyleStrength = *jr.StyleStrength
	}
	if req.Width == 0 {
		req.Width = s.side
	}
	if req.Height == 0 {
		req.Height = s.side
	}
	if req.Steps == 0 {
		req.Steps = o.Steps
	}
	if req.N == 0 {
		req.N = 1
	}
	if req.Sampler == "" {
		req.Sampler = photomaker.DefaultSampler
	}
	if req.RNG == "" {
		req.RNG = photomaker.DefaultRNG
	}
	switch {
	case req.Width < 8 || req.Height < 8 || req.Width%8 != 0 || req.Height%8 != 0:
		return nil, badRequest("size %d×%d: width and height must be positive multiples of 8 (e.g. %d×%d)",
			req.Width, req.Height, max(8, req.Width/8*8), max(8, req.Height/8*8))
	case req.Width > o.MaxSide || req.Height > o.MaxSide:
		return nil, badRequest("size %d×%d is larger than this server's limit of %d pixels on a side", req.Width, req.Height, o.MaxSide)
	case req.Steps < 1 || req.Steps > o.MaxSteps:
		return nil, badRequest("steps must be between 1 and %d, got %d", o.MaxSteps, req.Steps)
	case req.N < 1 || req.N > o.MaxOutputs:
		return nil, badRequest("n (images per job) must be between 1 and %d, got %d", o.MaxOutputs, req.N)
	case req.Guidance < 0 || req.Guidance > photomaker.MaxGuidance:
		return nil, badRequest("guidance must be between 0 and %d, got %g", photomaker.MaxGuidance, req.Guidance)
	case req.StyleStrength < 0 || req.StyleStrength > 100:
		return nil, badRequest("style_strength is a percentage (0–100), got %g", req.StyleStrength)
	case req.RNG != "torch-cuda" && req.RNG != "torch-cpu":
		return nil, badRequest("rng must be torch-cuda or torch-cpu, got %q", req.RNG)
	}
	if err := sampling.Known(req.Sampler); err != nil {
		return nil, badRequest("%s", strings.TrimPrefix(err.Error(), "sampling: "))
	}
	if req.TimestepSpacing, err = sampling.ParseTimestepSpacing(jr.Spacing); err != nil {
		return nil, badRequest("timestep_spacing: %v", err)
	}
	switch {
	case jr.Seed == nil || *jr.Seed == -1:
		req.Seed = rand.Int64N(maxJSONSeed + 1)
	case *jr.Seed < 0 || *jr.Seed > maxJSONSeed:
		return nil, badRequest("seed must be -1 (random) or a whole number from 0 to %d, got %d", maxJSONSeed, *jr.Seed)
	default:
		req.Seed = *jr.Seed
	}
	if req.TriggerWord == "" {
		req.TriggerWord = photomaker.DefaultTrigger
	}
	req.Prompt, req.NegativePrompt = prompt, negative
	// The library reads zeros as its defaults: explicit zeros by name.
	if req.Guidance == 0 {
		req.Guidance = photomaker.NoGuidance
	}
	if req.StyleStrength == 0 {
		req.StyleStrength = photomaker.NoStyleDelay
	}
	if style.Name != photomaker.Styles[0].Name {
		req.Prompt, req.NegativePrompt = style.Apply(prompt, negative)
	}

	switch {
	case len(photos) > 0 && !s.pm:
		return nil, badRequest("this server runs plain SDXL (no PhotoMaker adapter): ID photos cannot be used; restart it with --photomaker to use them")
	case len(photos) == 0 && s.pm:
		return nil, badRequest("this server runs PhotoMaker: upload at least one ID photo of the person (field id_image[])")
	}
	if err := s.checkPhotos(photos); err != nil {
		return nil, err
	}
	if s.pm {
		if err := s.checkTrigger(req.Prompt, req.TriggerWord, len(photos)); err != nil {
			return nil, err
		}
	}
	return &job{
		req:    req,
		photos: photos,
		params: params{prompt: prompt, negative: negative, style: style.Name, idImages: len(photos)},
	}, nil
}

// checkPhotos decodes each photo once to refuse a bad one now, one photo
// of one request at a time, each dropped once decoded: a small file can
// decode to gigabytes (a 300 KB PNG to 40 megapixels of 16-bit RGBA), so
// queued jobs keep the files and decodePhotos decodes them again when the
// job runs.
func (s *Server) checkPhotos(photos [][]byte) error {
	s.decoding <- struct{}{}
	defer func() { <-s.decoding }()
	for i, b := range photos {
		if _, err := decodePhoto(i, b, s.opts.MaxPhotoPixels); err != nil {
			return err
		}
	}
	return nil
}

// decodePhotos decodes ID photos, each reduced at once to what the ID
// encoder reads (photomaker.IDPhoto): eight 36-megapixel photos held
// whole took 3 GB; errors are *httpError with 400 or 413.
func decodePhotos(photos [][]byte, maxPixels int64) ([]image.Image, error) {
	var imgs []image.Image
	for i, b := range photos {
		img, err := decodePhoto(i, b, maxPixels)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, photomaker.IDPhoto(img))
	}
	return imgs, nil
}

// decodePhoto decodes ID photo i (from 0).
func decodePhoto(i int, b []byte, maxPixels int64) (image.Image, error) {
	img, err := imageproc.Decode(bytes.NewReader(b), imageproc.Limits{MaxPixels: maxPixels})
	switch {
	case errors.Is(err, imageproc.ErrTooLarge):
		return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("ID photo %d: %v", i+1, err)}
	case err != nil:
		return nil, badRequest("ID photo %d: %v", i+1, err)
	}
	return img, nil
}

// checkTrigger refuses an ID prompt the pipeline would refuse (trigger
// word missing, repeated, first...) before the job is queued.
func (s *Server) checkTrigger(prompt, trigger string, photos int) error {
	v := photomaker.V1
	if s.v2 {
		v = photomaker.V2
	}
	_, err := photomaker.TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, v,
		[]photomaker.Identity{{Trigger: trigger, Images: photos}})
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), photomaker.ErrIDPrompt.Error()+": ")
		return badRequest("%s", msg)
	}
	return nil
}
