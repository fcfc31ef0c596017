package photomaker

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"time"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/models/clip"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/sampling/rng"
	"github.com/gophotomaker/photomaker/tokenizer"
)

// Request describes one generation. Zero values take the official demo's
// defaults (see Defaults).
type Request struct {
	Prompt         string // literal text; with an adapter it must contain the trigger word
	NegativePrompt string // empty: zeros, as diffusers' force_zeros_for_empty_prompt
	Width, Height  int    // pixels, multiples of 8
	Steps          int
	Guidance       float64 // 0: DefaultGuidance; ≤ 1 (or NoGuidance) disables classifier-free guidance
	Sampler        string  // euler, euler_a, dpmpp_2m, ddim (diffusers semantics)
	Karras         bool    // Karras sigmas (euler, dpmpp_2m)
	// TimestepSpacing lays the steps out over the training timesteps:
	// "leading", "linspace" or "trailing" (diffusers' timestep_spacing);
	// empty: the model's scheduler config (SDXL base's: leading). Few-step
	// distilled models (SDXL-Lightning, Hyper-SD) want trailing. Result
	// reports the spacing used.
	TimestepSpacing string
	Seed            int64  // < 0: random; the seed used is returned in Result
	RNG             string // "torch-cuda" (default, as the official demos on NVIDIA) or "torch-cpu"
	N               int    // images
	// PromptWeighting is WeightingNone (literal text, the default) or
	// WeightingA1111 for (word:1.2) emphasis in the prompt and negative prompt.
	PromptWeighting string

	// PhotoMaker only.
	IDImages      []image.Image // one identity's photos
	IDEmbeds      [][]float32   // v2: one raw 512-d ArcFace embedding per photo
	People        []Person      // several people in one image (instead of IDImages)
	TriggerWord   string        // default "img"
	StyleStrength float64       // percent; start_merge_step = int(StyleStrength/100·Steps); 0: DefaultStyleStrength, NoStyleDelay: 0 %
	NoMergeCap    bool          // the demos cap start_merge_step at 30; true lifts the cap

	// Progress, if set, receives this request's progress instead of
	// Config.Progress (a server reports per job): "load" when parts that an
	// earlier request released load again (its first event, 0 of 1, marks
	// the start), "encode", then per image "denoise" (Done of Total of that
	// image's steps) and "decode", each image's counts starting again.
	Progress func(Progress) `json:"-"`

	// InitialLatents replaces the seeded noise (N×4×H/8×W/8, before the
	// sampler's init_noise_sigma scaling): for tests and img2img-style use.
	InitialLatents []float32

	// StepProfile, if set, collects where the UNet steps spend their time,
	// by op (bench --profile). Every op then ends with a synchronization,
	// so the steps run slower: a diagnostic, not a timing.
	StepProfile *ggml.OpProfile `json:"-"`
	// DecodeProfile is the same for the VAE decode.
	DecodeProfile *ggml.OpProfile `json:"-"`
}

// Person is one identity of a multi-person request: the class word it is
// written as in the prompt ("man" in "a man img and a woman img") and its
// photos (and, for v2, one face embedding per photo).
type Person struct {
	Class    string
	Images   []image.Image
	IDEmbeds [][]float32
}

// Defaults of the official PhotoMaker demo.
const (
	DefaultSteps         = 50
	DefaultGuidance      = 5.0
	DefaultStyleStrength = 20.0
	DefaultSize          = 1024
	DefaultTrigger       = "img"
	DefaultRNG           = "torch-cuda"
	DefaultSampler       = "euler"
	mergeStepCap         = 30

	// NoGuidance as Request.Guidance is a guidance of 0: classifier-free
	// guidance off (as any value up to 1), where 0 means DefaultGuidance.
	NoGuidance = -1.0
	// NoStyleDelay as Request.StyleStrength is a style strength of 0 %:
	// the ID conditions every step after the first, whose start_merge_step
	// is 0 (the official pipeline's first step always takes the text-only
	// prompt); 0 means DefaultStyleStrength.
	NoStyleDelay = -1.0
	// MaxImages bounds Request.N: more is a script's job, one call each.
	MaxImages = 100
	// MaxGuidance bounds Request.Guidance (the server's limit too): far
	// above any useful scale, and below what overflows the latents.
	MaxGuidance = 50
)

// Result is the generated images and the parameters actually used.
type Result struct {
	Images  []image.Image
	Seed    int64
	Request Request // with defaults filled in
	// LoadTime is the part of the call spent loading weights (with any
	// conversion or quantization): OneShot's UNet, and the encoders when an
	// earlier request released them (ReleaseEncoders, OneShot); zero
	// otherwise. Benchmarks count it as loading, not generating.
	LoadTime time.Duration
	// StepFLOPs is the arithmetic of one denoising step's products
	// (ggml.Graph.FLOPs), for benchmarks: over a step's time, the rate the
	// device achieved.
	StepFLOPs int64
	// DecodeFLOPs is the same for one image's VAE decode (its tiles' overlap
	// included).
	DecodeFLOPs int64
}

// ErrInvalidRequest is wrapped by errors about the request itself.
var ErrInvalidRequest = errors.New("invalid request")

// ErrNotFinite reports a generation whose latents or pixels came out NaN
// or infinite: an image of them would be black or noise, so none is made.
var ErrNotFinite = errors.New("the result is not finite")

// finite checks one of n images' values (what names them) for NaN and
// infinities.
func finite(v []float32, what string, i, n int) error {
	if allFinite(v) {
		return nil
	}
	if n > 1 {
		what += fmt.Sprintf(" of image %d", i+1)
	}
	return fmt.Errorf("%w: %s hold NaN or infinite values; the model's weights may be damaged (check the file against its source) or a LoRA scale too large", ErrNotFinite, what)
}

// allFinite reports whether v holds no NaN or infinity.
func allFinite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}

func (r *Request) fill() error {
	if r.Width == 0 {
		r.Width = DefaultSize
	}
	if r.Height == 0 {
		r.Height = DefaultSize
	}
	if r.Steps == 0 {
		r.Steps = DefaultSteps
	}
	switch r.Guidance {
	case 0:
		r.Guidance = DefaultGuidance
	case NoGuidance:
		r.Guidance = 0
	}
	// Names as the results report them: " EULER " is euler.
	r.Sampler, r.RNG = strings.ToLower(strings.TrimSpace(r.Sampler)), strings.ToLower(strings.TrimSpace(r.RNG))
	if r.Sampler == "" {
		r.Sampler = DefaultSampler
	}
	if r.RNG == "" {
		r.RNG = DefaultRNG
	}
	if r.N == 0 {
		r.N = 1
	}
	if r.TriggerWord == "" {
		r.TriggerWord = DefaultTrigger
	}
	switch r.StyleStrength {
	case 0:
		r.StyleStrength = DefaultStyleStrength
	case NoStyleDelay:
		r.StyleStrength = 0
	}
	if err := checkSize(r.Width, r.Height); err != nil {
		return err
	}
	switch {
	case math.IsNaN(r.Guidance) || math.IsInf(r.Guidance, 0) || r.Guidance > MaxGuidance:
		return fmt.Errorf("%w: guidance must be a number from 0 to %g, got %g", ErrInvalidRequest, float64(MaxGuidance), r.Guidance)
	case math.IsNaN(r.StyleStrength):
		return fmt.Errorf("%w: style strength is a percentage (0–100), got %g", ErrInvalidRequest, r.StyleStrength)
	case r.Steps < 0:
		return fmt.Errorf("%w: steps must be at least 1, got %d", ErrInvalidRequest, r.Steps)
	case r.N < 1 || r.N > MaxImages:
		return fmt.Errorf("%w: the number of images must be 1 to %d, got %d", ErrInvalidRequest, MaxImages, r.N)
	case r.Guidance < 0:
		return fmt.Errorf("%w: guidance must not be negative, got %g", ErrInvalidRequest, r.Guidance)
	case r.StyleStrength < 0 || r.StyleStrength > 100:
		return fmt.Errorf("%w: style strength is a percentage (0–100), got %g", ErrInvalidRequest, r.StyleStrength)
	}
	spacing, err := sampling.ParseTimestepSpacing(r.TimestepSpacing)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	r.TimestepSpacing = spacing
	if r.PromptWeighting != WeightingNone && r.PromptWeighting != WeightingA1111 {
		return fmt.Errorf("%w: unknown prompt weighting %q (want a1111, or none for literal prompts)", ErrInvalidRequest, r.PromptWeighting)
	}
	if r.Seed < 0 {
		r.Seed = rand.Int64N(1 << 53)
	}
	return r.checkIDInputs()
}

// MaxSide bounds a generation's width and height.
const MaxSide = 8192

// checkSize refuses an image size SDXL cannot make (a multiple of 8 on
// each side, at most MaxSide).
func checkSize(width, height int) error {
	switch {
	case width%8 != 0 || height%8 != 0 || width < 8 || height < 8:
		return fmt.Errorf("%w: size %d×%d must be positive multiples of 8 (e.g. %d×%d)", ErrInvalidRequest, width, height, max(8, width/8*8), max(8, height/8*8))
	case width > MaxSide || height > MaxSide:
		return fmt.Errorf("%w: size %d×%d is larger than %d pixels on a side", ErrInvalidRequest, width, height, MaxSide)
	}
	return nil
}

// maxIDAspect bounds an ID photo's long side over its short side: the
// encoder resizes the short side to 224, so a 1×16384 strip (a 64 KB
// PNG) took 3.6 GB, and a 1×200000 one all the memory.
const maxIDAspect = 16

// maxIDPixels bounds an ID photo's pixels: a decoded photo is far below
// (imageproc.Limits), an image.Uniform's bounds are the whole plane.
const maxIDPixels = 1 << 30

// checkIDInputs refuses, before any work, ID photos the encoder cannot
// take (nil, empty, or a strip) and face embeddings that are not finite
// or not one per photo of the person they belong to.
func (r *Request) checkIDInputs() error {
	check := func(whose string, imgs []image.Image, embeds [][]float32) error {
		for i, img := range imgs {
			if err := checkIDImage(img); err != nil {
				return invalidIDf(ErrIDInput, "%sID photo %d: %v", whose, i+1, err)
			}
		}
		if whose != "" && len(embeds) > 0 && len(embeds) != len(imgs) {
			return invalidIDf(ErrIDInput, "%d face embeddings for %d photos of %s: give one per photo", len(embeds), len(imgs), strings.TrimSuffix(whose, "'s "))
		}
		for i, e := range embeds {
			if !allFinite(e) {
				return invalidIDf(ErrIDInput, "%sface embedding %d holds NaN or infinite values", whose, i+1)
			}
		}
		return nil
	}
	if err := check("", r.IDImages, r.IDEmbeds); err != nil {
		return err
	}
	for _, p := range r.People {
		if err := check("the "+p.Class+"'s ", p.Images, p.IDEmbeds); err != nil {
			return err
		}
	}
	return nil
}

// checkIDImage says what makes img unusable as an ID photo, if anything.
func checkIDImage(img image.Image) error {
	if img == nil {
		return errors.New("no image (nil)")
	}
	if v := reflect.ValueOf(img); v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Errorf("no image (a nil %T)", img)
	}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	switch {
	case w <= 0 || h <= 0:
		return fmt.Errorf("the image is empty (%d×%d)", w, h)
	case int64(w)*int64(h) > maxIDPixels:
		return fmt.Errorf("%d×%d is too large a photo (%d megapixels at most)", w, h, maxIDPixels>>20)
	case max(w, h) > maxIDAspect*min(w, h):
		return fmt.Errorf("%d×%d is more than %d times longer than wide: crop it around the face", w, h, maxIDAspect)
	}
	return nil
}

// StartMergeStep is the last 0-based step that uses the text-only prompt,
// for a request whose defaults are filled in as Generate fills them
// (Result.Request): there a StyleStrength of 0 is 0 %, not the default.
func (r *Request) StartMergeStep() int {
	s := int(r.StyleStrength / 100 * float64(r.Steps))
	if !r.NoMergeCap && s > mergeStepCap {
		s = mergeStepCap
	}
	return s
}

// conditioning is what one UNet call is conditioned on (one CFG branch).
type conditioning struct {
	embeds []float32 // [tokens, width]
	pooled []float32
}

// plan holds the prepared conditioning of a request: the negative branch
// and, per step, the positive branch.
type plan struct {
	negative conditioning
	positive func(step int) conditioning
}

// Generate runs the whole pipeline for req. Calls on one pipeline run one
// at a time; a call waiting for another returns when ctx ends.
func (p *Pipeline) Generate(ctx context.Context, req Request) (*Result, error) {
	if err := p.mu.LockContext(ctx); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if p.rt == nil {
		return nil, ErrClosed
	}
	if err := req.fill(); err != nil {
		return nil, err
	}
	noise, err := rng.New(req.RNG, uint64(req.Seed))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	if req.PromptWeighting == WeightingNone { // weighted prompts are encoded in chunks
		if len(req.IDImages)+len(req.People) == 0 { // an ID prompt too long is refused (TokenizeIDPrompt)
			warnLongPrompt("prompt", req.Prompt)
		}
		warnLongPrompt("negative prompt", req.NegativePrompt)
	}
	// Check the sampler before the expensive encoders run.
	if req.TimestepSpacing == "" {
		req.TimestepSpacing = p.sched.TimestepSpacing
	}
	if _, err := sampling.New(samplerName(req.Sampler, req.Karras), p.schedule(&req), req.Steps, noise); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	if err := p.checkRequestInRAM(&req); err != nil {
		return nil, err
	}
	// Encoders that an earlier request released load again: loading, not
	// generating, so timed as such (Result.LoadTime) and shown as a stage.
	var loadTime time.Duration
	if !p.encodersLoaded() {
		start := time.Now()
		p.progress(&req, "load", 0, 1)
		if err := p.loadEncoders(ctx); err != nil {
			return nil, err
		}
		p.progress(&req, "load", 1, 1)
		loadTime = time.Since(start)
	}
	pl, err := p.prepare(ctx, &req)
	p.notePeak()
	if p.releasesEncoders() {
		p.releaseEncoders() // the plan holds all the conditioning
	}
	if err != nil {
		return nil, p.withMemoryAdvice(err, stageEncode, &req)
	}
	if p.unet == nil { // OneShot
		// Loaded for this request only (denoising may free some of it):
		// freed on every way out.
		defer closeNil(&p.unet)
		start := time.Now()
		p.progress(&req, "load", 0, 1)
		if err := p.loadUNet(ctx, func(done, total int) { p.progress(&req, "load", done, total) }); err != nil {
			return nil, err
		}
		loadTime += time.Since(start)
	}
	lw, lh := req.Width/8, req.Height/8
	per := 4 * lw * lh
	latents := req.InitialLatents
	if latents == nil {
		latents = noise.Normal(req.N * per) // one draw for the whole batch, as diffusers does
	} else if len(latents) != req.N*per {
		return nil, fmt.Errorf("%w: initial latents hold %d values, %d×4×%d×%d needs %d", ErrInvalidRequest, len(latents), req.N, lh, lw, req.N*per)
	}
	// Every image is denoised before any is decoded, so that OneShot can
	// free the UNet before the VAE's large decode buffers grow.
	final, err := p.denoise(ctx, &req, pl, latents, noise)
	if err != nil {
		return nil, p.withMemoryAdvice(err, stageDenoise, &req)
	}
	p.notePeak()
	if p.cfg.OneShot {
		closeNil(&p.unet)
	}
	for i, l := range final {
		if err := finite(l, "the denoised latents", i, len(final)); err != nil {
			return nil, err
		}
	}
	res := &Result{Seed: req.Seed, Request: req, LoadTime: loadTime, StepFLOPs: p.stepFLOPs}
	for _, l := range final {
		img, err := p.decodeImage(ctx, &req, l)
		if err != nil {
			return nil, p.withMemoryAdvice(err, stageDecode, &req)
		}
		res.Images = append(res.Images, img)
	}
	res.DecodeFLOPs = p.decodeFLOPs
	p.notePeak()
	return res, nil
}

// BatchParameters is what image i (from 0) of a request of n images adds to
// Parameters: ", Batch size: n, Batch pos: i" as A1111 writes them;
// nothing for one image. The images share the seed: image i is the i-th of
// one noise draw, which only the whole batch reproduces.
func BatchParameters(n, i int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(", Batch size: %d, Batch pos: %d", n, i)
}

// warnLongPrompt logs what of a literal prompt the text encoders do not
// read: CLIP takes 75 tokens, and the rest is cut, as diffusers does.
func warnLongPrompt(what, text string) {
	tk := tokenizer.New()
	ids := tk.Encode(text)
	keep := tokenizer.MaxLen - 2
	if len(ids) <= keep {
		return
	}
	var cut strings.Builder
	for _, id := range ids[keep:] {
		cut.WriteString(strings.ReplaceAll(tk.Token(id), "</w>", " "))
	}
	slog.Warn(fmt.Sprintf("the %s is %d tokens long; the text encoders read %d, so the rest is left out: %q", what, len(ids), keep, strings.TrimSpace(cut.String())))
}

// Parameters begins the A1111-style "parameters" text that image tools read
// from a PNG, for a request as Result reports it: the prompts, then
// "Steps: …, Sampler: …, CFG scale: …, Seed: …, Size: …, RNG: …" (and the
// timestep spacing unless leading); callers add the model and themselves.
func (r *Request) Parameters() string {
	sampler := r.Sampler
	if samplerName(r.Sampler, r.Karras) != r.Sampler { // Karras sigmas where the sampler takes them
		sampler += " karras"
	}
	s := fmt.Sprintf("%s\nNegative prompt: %s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %d, Size: %dx%d, RNG: %s",
		r.Prompt, r.NegativePrompt, r.Steps, sampler, r.Guidance, r.Seed, r.Width, r.Height, r.RNG)
	if r.TimestepSpacing != "" && r.TimestepSpacing != "leading" {
		s += ", Timestep spacing: " + r.TimestepSpacing
	}
	return s
}

// schedule is the model's scheduler config with req's timestep spacing.
func (p *Pipeline) schedule(req *Request) sampling.Config {
	c := p.sched
	c.TimestepSpacing = req.TimestepSpacing
	return c
}

func samplerName(name string, karras bool) string {
	if karras && (name == "euler" || name == "dpmpp_2m") {
		return name + "_karras"
	}
	return name
}

// prepare tokenizes and encodes the prompts.
func (p *Pipeline) prepare(ctx context.Context, req *Request) (*plan, error) {
	p.progress(req, "encode", 0, 1)
	neg, err := p.encodePrompt(ctx, req, req.NegativePrompt, req.NegativePrompt == "")
	if err != nil {
		return nil, err
	}
	pl := &plan{negative: neg}
	if p.id != nil {
		if req.PromptWeighting != WeightingNone {
			return nil, fmt.Errorf("%w: prompt weighting is not supported with PhotoMaker yet: use a literal prompt", ErrInvalidRequest)
		}
		text, id, err := p.id.conditioning(ctx, p, req)
		if err != nil {
			return nil, err
		}
		merge := req.StartMergeStep()
		pl.positive = func(step int) conditioning {
			if step <= merge {
				return text
			}
			return id
		}
	} else {
		if len(req.IDImages) > 0 || len(req.IDEmbeds) > 0 || len(req.People) > 0 {
			return nil, fmt.Errorf("%w: ID photos need a PhotoMaker adapter (--photomaker)", ErrInvalidRequest)
		}
		pos, err := p.encodePrompt(ctx, req, req.Prompt, false)
		if err != nil {
			return nil, err
		}
		pl.positive = func(int) conditioning { return pos }
	}
	p.progress(req, "encode", 1, 1)
	return pl, nil
}

// encodePrompt encodes a user prompt, literally or with the request's
// weighting syntax.
func (p *Pipeline) encodePrompt(ctx context.Context, req *Request, prompt string, zero bool) (conditioning, error) {
	if req.PromptWeighting == WeightingA1111 && !zero {
		return p.encodeWeighted(ctx, prompt)
	}
	return p.encodeText(ctx, prompt, zero)
}

// encodeText is SDXL's encode_prompt for one literal prompt.
func (p *Pipeline) encodeText(ctx context.Context, prompt string, zero bool) (conditioning, error) {
	ids1 := tokenizer.New().EncodePadded(prompt, tokenizer.MaxLen, tokenizer.PadTokenizer1)
	ids2 := tokenizer.New2().EncodePadded(prompt, tokenizer.MaxLen, tokenizer.PadTokenizer2)
	return p.encodeIDs(ctx, ids1, ids2, zero)
}

func (p *Pipeline) encodeIDs(ctx context.Context, ids1, ids2 []int, zero bool) (conditioning, error) {
	c, err := p.text.Encode(ctx, p.encRT, ids1, ids2, zero)
	if err != nil {
		return conditioning{}, err
	}
	return fromClip(c), nil
}

func fromClip(c *clip.Conditioning) conditioning {
	return conditioning{embeds: c.Embeds, pooled: c.Pooled}
}

func (p *Pipeline) progress(req *Request, stage string, done, total int) {
	ev := Progress{Stage: stage, Done: done, Total: total}
	switch {
	case req.Progress != nil:
		req.Progress(ev)
	case p.cfg.Progress != nil:
		p.cfg.Progress(ev)
	}
}

// decode turns latents (already divided by the scaling factor) into pixels,
// whole or in tiles as Config.VAETile says.
func (p *Pipeline) decode(ctx context.Context, latents []float32, lw, lh int) ([]float32, error) {
	tile := p.vaeTile()
	if tile > 0 && (tile < lw || tile < lh) {
		return p.vae.DecodeTiled(ctx, p.rt, latents, lw, lh, tile, max(1, tile/4))
	}
	pix, err := p.vae.DecodeImage(ctx, p.rt, latents, lw, lh)
	if err != nil && tile == 0 && errors.Is(err, ggml.ErrOutOfMemory) && (lw > autoTile || lh > autoTile) {
		slog.Warn("VAE decode did not fit in memory; decoding in tiles", "tile_pixels", autoTile*8, "error", err)
		return p.vae.DecodeTiled(ctx, p.rt, latents, lw, lh, autoTile, autoTile/4)
	}
	return pix, err
}

// cfgPairs caches the batch-2 [negative, positive] conditioning: the
// positive prompt changes once (text-only, then with the ID from the merge
// step), so the large concatenation is not rebuilt every step.
type cfgPairs struct {
	key  *float32 // the positive embeddings the cached pair was made from
	pair conditioning
}

func (c *cfgPairs) get(neg, pos conditioning) conditioning {
	var key *float32
	if len(pos.embeds) > 0 {
		key = &pos.embeds[0]
	}
	if c.pair.embeds == nil || c.key != key {
		c.key = key
		c.pair = conditioning{embeds: append(append([]float32{}, neg.embeds...), pos.embeds...),
			pooled: append(append([]float32{}, neg.pooled...), pos.pooled...)}
	}
	return c.pair
}

// autoTile is the VAE tile size (latent pixels) used when a whole decode
// runs out of memory, and by the low-memory modes.
const autoTile = 64

// vaeTile is Config.VAETile, or in the low and stream VRAM modes 64-latent
// tiles: those modes were planned with a tile's compute (a whole 1024²
// decode needs about 4 GiB), and the plan's figure should be the peak.
func (p *Pipeline) vaeTile() int {
	if p.cfg.VAETile == 0 && (p.vram == VRAMLow || p.vram == VRAMStream) {
		return autoTile
	}
	return p.cfg.VAETile
}

// denoise runs the sampler loop for each image of the request, from its
// share of initial (N images), and returns their final latents. One Loop
// serves them all: its graph and the cross-attention keys and values are
// made once per request.
func (p *Pipeline) denoise(ctx context.Context, req *Request, pl *plan, initial []float32, noise rng.Source) ([][]float32, error) {
	sampler, err := sampling.New(samplerName(req.Sampler, req.Karras), p.schedule(req), req.Steps, noise)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	lw, lh := req.Width/8, req.Height/8
	per := 4 * lw * lh
	start := func(img int) []float32 {
		return sampling.Scale(initial[img*per:(img+1)*per], sampler.InitNoiseSigma())
	}
	timeIDs := []float32{float32(req.Height), float32(req.Width), 0, 0, float32(req.Height), float32(req.Width)}
	cfg := req.Guidance > 1
	if cfg {
		timeIDs = append(timeIDs, timeIDs...)
	}
	ts := sampler.Timesteps()
	steps := sampling.LinearSteps(sampler)
	// The whole loop runs on the device (unet.Loop); the host only feeds
	// each step's timestep and coefficients, and switches conditioning
	// where the PhotoMaker branch moves to the ID prompt.
	var pairs cfgPairs
	var conds []unet.Conditioning
	use := make([]int, len(ts)) // each step's conditioning
	seen := map[*float32]int{}
	for i := range ts {
		cond := pl.positive(i)
		if cfg { // one batch-2 call: [uncond, cond], as diffusers orders them
			cond = pairs.get(pl.negative, cond)
		}
		k, ok := seen[&cond.embeds[0]]
		if !ok {
			k = len(conds)
			seen[&cond.embeds[0]] = k
			conds = append(conds, unet.Conditioning{Context: cond.embeds, Pooled: cond.pooled, TimeIDs: timeIDs})
		}
		use[i] = k
	}
	loop, err := p.unet.NewLoop(unet.LoopInputs{Width: lw, Height: lh, Latents: start(0), Guidance: req.Guidance,
		Conditionings: conds, Steps: steps})
	if err != nil {
		return nil, fmt.Errorf("denoising: %w", err)
	}
	p.loopState, p.stepFLOPs = loop.StateBytes(), loop.StepFLOPs()
	defer func() {
		loop.Close()
		p.loopState = 0
	}()
	p.notePeak() // the whole UNet and the keys and values
	// The loop has its keys and values: a UNet loaded for this request
	// only frees the projections before the steps' compute is allocated.
	p.unet.FreeCrossKV()
	final := make([][]float32, req.N)
	for img := range final {
		if img > 0 {
			if err := loop.Restart(start(img)); err != nil {
				return nil, fmt.Errorf("denoising: %w", err)
			}
		}
		p.progress(req, "denoise", 0, len(ts))
		for i := range ts {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := loop.UseConditioning(use[i]); err != nil {
				return nil, fmt.Errorf("denoising: %w", err)
			}
			var stepNoise []float32
			if steps[i].Noise {
				stepNoise = noise.Normal(per)
			}
			err := p.profiled(req.StepProfile, func() error { return loop.Step(ctx, float32(ts[i]), steps[i], stepNoise) })
			if err != nil {
				return nil, fmt.Errorf("denoising step %d of %d: %w", i+1, len(ts), err)
			}
			p.progress(req, "denoise", i+1, len(ts))
		}
		final[img] = loop.Latents()
		if p.testHookFinalLatents != nil {
			p.testHookFinalLatents(final[img])
		}
	}
	p.notePeak() // the step's compute and the loop's state together
	return final, nil
}

// decodeImage turns one image's final latents into its picture.
func (p *Pipeline) decodeImage(ctx context.Context, req *Request, latents []float32) (image.Image, error) {
	lw, lh := req.Width/8, req.Height/8
	p.progress(req, "decode", 0, 1)
	scaled := make([]float32, len(latents))
	for j, v := range latents {
		scaled[j] = v / p.scaling // diffusers divides in float32
	}
	var pix []float32
	before := p.rt.ComputedFLOPs()
	err := p.profiled(req.DecodeProfile, func() (err error) {
		pix, err = p.decode(ctx, scaled, lw, lh)
		return err
	})
	if err != nil {
		return nil, err
	}
	p.decodeFLOPs = p.rt.ComputedFLOPs() - before
	if err := finite(pix, "the decoded pixels", 0, 1); err != nil {
		return nil, err
	}
	p.progress(req, "decode", 1, 1)
	return imageproc.FromFloatCHW(pix, req.Width, req.Height), nil
}

// profiled runs f with every op the scheduler computes timed into prof,
// when prof is set (bench --profile).
func (p *Pipeline) profiled(prof *ggml.OpProfile, f func() error) error {
	if prof == nil {
		return f()
	}
	p.rt.Sched.Profile(prof)
	defer p.rt.Sched.Profile(nil)
	return f()
}
