// Package photomaker is the public Go API: load an SDXL checkpoint (and
// optionally a PhotoMaker adapter) once, then generate images from a prompt
// and, with an adapter, ID photos of a person.
//
//	p, err := photomaker.Load(ctx, photomaker.Config{Model: "sdxl.safetensors", PhotoMaker: "photomaker-v1.bin"})
//	if err != nil { ... }
//	defer p.Close()
//	imgs, err := p.Generate(ctx, photomaker.Request{Prompt: "a photo of a man img, in a spacesuit", IDImages: photos})
//
// The flow, stage by stage: tokenizers → text encoders (→ ID encoder fusing
// the photos into the class word's embeddings) → UNet inside the sampler
// loop with classifier-free guidance → VAE decode.
package photomaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/models/clip"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/models/vae"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/weights"
)

// Config says what to load and where to run it.
type Config struct {
	// Model is the SDXL checkpoint: a single-file .safetensors/.ckpt, a
	// diffusers folder, or one of our .gguf files.
	Model string
	// PhotoMaker is the adapter (photomaker-v1.bin, -v2.bin, .safetensors,
	// .gguf); empty for plain SDXL text-to-image.
	PhotoMaker string
	// LoRAScale scales the adapter's LoRA (0 means the official 1.0).
	LoRAScale float32
	// LoRAs are community LoRAs (kohya, diffusers/PEFT formats) merged into
	// the model at load, each at its scale.
	LoRAs []LoRA
	// Device is "auto" (first GPU, else CPU), "cpu", "cuda", "cuda:1", ...
	Device string
	// Threads for the CPU (0: all cores).
	Threads int
	// WeightType stores the big matrices in this type ("f32", "f16",
	// "q8_0", "q4_K", ...); empty keeps the checkpoint's own type. Norms,
	// biases and embeddings always stay f32.
	WeightType string
	// QuantizeConvs lets a quantized WeightType reach the UNet's largest
	// convolution kernels (q8_0, 226 MiB less for SDXL at q4_K) at a small
	// cost in accuracy; by default kernels stay f16.
	QuantizeConvs bool
	// F16Accumulation lets a GPU accumulate products of f16 weights in f16
	// (ggml-cuda's own default): faster on GPUs whose tensor cores halve
	// their rate with f32 accumulation (GeForce), less precise: 0.06–0.1
	// off the kit's end-to-end latents on an H200, against 0.017 with f32
	// accumulation, which diffusers uses too and is the default here. The
	// CPU always accumulates in f32.
	F16Accumulation bool
	// VAEF16 lets the VAE decoder's convolutions of normalized inputs
	// multiply f16 operands on a GPU (vae.VAE.F16Products): about 70 % of
	// its arithmetic at f16 rather than TF32 tensor-core speed (not yet
	// measured), the image within 5e-3 of diffusers' f32 decode on the
	// reference kit (0.6 of one 8-bit level). The CPU's convolutions stay
	// f32: our Winograd kernels are faster there than f16 products (the
	// option made a 512² decode 10–11 % faster before them). Off: the whole
	// VAE is f32.
	VAEF16 bool
	// ReleaseEncoders frees the text and ID encoders' weights once a
	// request's prompts and photos are encoded, and loads them again for
	// the next request. A one-shot run's peak memory then drops by their
	// size (about 2.2 GB at f16 with a v1 adapter, on the GPU or in RAM);
	// each later request pays a reload. A server keeps the encoders.
	ReleaseEncoders bool
	// OneShot holds each big part only while a request needs it: the
	// encoders as ReleaseEncoders, the UNet loaded once they are freed
	// (not by Load) and freed before the VAE decodes. A run's peak is then
	// its largest stage rather than the sum of every part's weights; each
	// request loads the UNet again. The command line's generate and bench
	// set it.
	OneShot bool
	// EncodersOnCPU runs the text encoders and the ID encoder on the CPU so
	// the GPU holds only the UNet and the VAE (about 1.6 GB less at f16).
	// The low-VRAM modes keep them off the GPU's memory too, but compute
	// them there, streaming their weights from RAM.
	EncodersOnCPU bool
	// VRAM is how parts are placed on a GPU: auto (default: the fastest of
	// the modes below that fits the free device memory at PlanWidth ×
	// PlanHeight), full, low (the encoders' weights in RAM, streamed to the
	// GPU as they run) or stream (low, and the
	// UNet's weights stream from host memory every step). In every mode a
	// VAE decode that does not fit falls back to tiles. On the CPU, auto
	// (or "") places nothing; a forced mode runs as there (low and stream
	// decode in tiles), which keeps their code paths testable anywhere.
	VRAM string
	// PlanWidth and PlanHeight are the image size the VRAM choice plans
	// for (0: 1024×1024). Larger requests may run out of memory later.
	PlanWidth, PlanHeight int
	// VAETile decodes in overlapping tiles of this many latent pixels (8
	// image pixels each) to bound memory: 0 decodes whole (in 64-latent
	// tiles in the low and stream VRAM modes) and falls back to tiles when
	// the device runs out of memory; < 0 never tiles.
	VAETile int
	// TimestepSpacing replaces the model's scheduler config's spacing for
	// every request that does not set its own (Request.TimestepSpacing):
	// "trailing" for a few-step distilled checkpoint (SDXL-Lightning,
	// Hyper-SD) loaded from a single file, which carries no config.
	TimestepSpacing string
	// Progress, if set, receives load and generation progress.
	Progress func(Progress)
}

// LoRA is a LoRA file and the scale it is merged at.
type LoRA struct {
	Path  string
	Scale float32
}

// Progress reports a stage of work: Done of Total units (see
// Request.Progress for the stages' order).
type Progress struct {
	Stage       string // "load", "encode", "denoise", "decode"
	Done, Total int
}

// Pipeline is a loaded model, safe for concurrent callers: generations on
// one pipeline run one at a time.
type Pipeline struct {
	cfg     Config
	rt      *nn.Runtime // the device: UNet and VAE
	encRT   *nn.Runtime // text and ID encoders: rt; in low-VRAM modes rt with the weights in RAM (on the CPU, a CPU runtime of their own)
	model   *weights.Model
	adapter *weights.Model
	text    *clip.SDXLText
	unet    *unet.UNet
	vae     *vae.VAE
	id      *idStage // nil without an adapter
	sched   sampling.Config
	loras   []*weights.Set // community LoRA files, open while their merges load
	scaling float32        // the VAE's scaling_factor
	vram    string         // the VRAM mode in use ("" on the CPU)
	policy  nn.TypePolicy  // how weights are stored (encoders reload with it)
	parts   partBytes      // the parts' weight bytes under policy, sized once by Load
	// unetWidth is the UNet's first level's channels (0 if it has none).
	unetWidth int
	// kind and device, set once by Load, answer Kind and Device without
	// the lock (a Generate holds it for minutes) and after Close.
	kind, device string
	peak         int64 // MemoryUse.Peak
	// loopState is the running sampler loop's device state (MemoryUse).
	loopState   int64
	stepFLOPs   int64 // the last request's denoising step (Result.StepFLOPs)
	decodeFLOPs int64 // and its last image's decode (Result.DecodeFLOPs)
	mu          gate

	testHookFinalLatents func([]float32) // tests compare the latents before decoding
}

// gate is a mutex whose waiters can give up when their context ends: a
// Generate queued behind another returns when its caller cancels.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func (g *gate) c() chan struct{} {
	g.once.Do(func() { g.ch = make(chan struct{}, 1) })
	return g.ch
}

func (g *gate) Lock()   { g.c() <- struct{}{} }
func (g *gate) Unlock() { <-g.c() }

// LockContext locks g, or returns an error wrapping ctx's once ctx ends.
func (g *gate) LockContext(ctx context.Context) error {
	select {
	case g.c() <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for another generation to end: %w", ggml.ErrCanceled, context.Cause(ctx))
	}
}

// ErrClosed is returned by Generate after Close.
var ErrClosed = errors.New("the pipeline is closed")

// Load opens the model files, merges the adapter's LoRA and uploads every
// weight to the device (with OneShot, the UNet's in each Generate).
func Load(ctx context.Context, cfg Config) (_ *Pipeline, err error) {
	if cfg.Model == "" {
		return nil, errors.New("no model given: pass an SDXL checkpoint (single-file .safetensors, diffusers folder or .gguf)")
	}
	switch {
	case cfg.Threads < 0:
		return nil, fmt.Errorf("Config.Threads must not be negative (0: one per physical core), got %d", cfg.Threads)
	case cfg.VAETile < -1 || cfg.VAETile == 1:
		return nil, fmt.Errorf("Config.VAETile must be -1 (never tile), 0 (automatic) or at least 2 latent pixels, got %d", cfg.VAETile)
	}
	if cfg.Threads > runtime.NumCPU() {
		// More threads than CPUs make ggml's threads wait on each other:
		// hundreds of times slower.
		slog.Warn("more threads than logical CPUs; using the CPUs' count", "threads", cfg.Threads, "cpus", runtime.NumCPU())
		cfg.Threads = runtime.NumCPU()
	}
	if cfg.TimestepSpacing, err = sampling.ParseTimestepSpacing(cfg.TimestepSpacing); err != nil {
		return nil, fmt.Errorf("Config.TimestepSpacing: %w", err)
	}
	p := &Pipeline{cfg: cfg}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.model, err = weights.Open(cfg.Model)
	if err != nil {
		return nil, err
	}
	if p.model.Kind.IsPhotoMaker() {
		return nil, fmt.Errorf("%s is a PhotoMaker adapter, not an SDXL checkpoint: pass it as the adapter (--photomaker) and an SDXL model as --model", cfg.Model)
	}
	p.scaling = vae.SDXLScalingFactor
	var vaeCfg struct {
		ScalingFactor float32 `json:"scaling_factor"`
	}
	if p.model.Config("vae", &vaeCfg) == nil && vaeCfg.ScalingFactor > 0 {
		p.scaling = vaeCfg.ScalingFactor
	}
	p.sched = sampling.DefaultConfig()
	if raw, ok := p.model.Configs["scheduler"]; ok {
		if c, err := sampling.ParseConfig(raw); err == nil {
			p.sched = c
		}
	}
	if cfg.TimestepSpacing != "" {
		p.sched.TimestepSpacing = cfg.TimestepSpacing
	}
	if p.model.Adapter != nil {
		// A GGUF from photomaker convert holding SDXL and an adapter (LoRA already merged).
		if cfg.PhotoMaker != "" {
			return nil, fmt.Errorf("%s already holds a PhotoMaker adapter (%s): do not pass another", cfg.Model, p.model.Adapter.Kind)
		}
		p.adapter, p.model.Adapter = p.model.Adapter, nil
	}
	if cfg.PhotoMaker != "" {
		p.adapter, err = weights.Open(cfg.PhotoMaker)
		if err != nil {
			return nil, err
		}
		if !p.adapter.Kind.IsPhotoMaker() {
			return nil, fmt.Errorf("%s is not a PhotoMaker adapter (it looks like %s)", cfg.PhotoMaker, p.adapter.Kind)
		}
		scale := cfg.LoRAScale
		if scale == 0 {
			scale = 1
		}
		if p.adapter.LoRA != nil && p.adapter.LoRA.Len() > 0 {
			if _, err := weights.MergeLoRA(p.model.Tensors, p.adapter.LoRA, scale); err != nil {
				return nil, fmt.Errorf("%s: merging the PhotoMaker LoRA into %s: %w", cfg.PhotoMaker, cfg.Model, err)
			}
		}
	}
	for _, l := range cfg.LoRAs {
		set, err := weights.OpenLoRA(l.Path)
		if err != nil {
			return nil, err
		}
		_, err = weights.MergeLoRA(p.model.Tensors, set, l.Scale)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("%s: merging into %s: %w", l.Path, cfg.Model, err)
		}
		p.loras = append(p.loras, set) // merged tensors read it lazily: keep it open
	}
	policy, err := weightPolicy(cfg.WeightType)
	if err != nil {
		return nil, err
	}
	p.policy = policy
	p.parts = p.weightBytes(policy)
	if cfg, err := unet.Infer(p.model.Tensors, "unet."); err == nil && len(cfg.BlockOutChannels) > 0 {
		p.unetWidth = cfg.BlockOutChannels[0] // else Load reports the UNet
	}
	p.rt, err = nn.NewRuntime(cfg.Device, cfg.Threads)
	if err != nil {
		return nil, err
	}
	p.rt.F32Accumulation = !cfg.F16Accumulation
	p.vram, err = p.chooseVRAM(policy)
	if err != nil {
		return nil, err
	}
	if err := p.checkPlanInRAM(policy); err != nil {
		return nil, err
	}
	// The GPU's first-use costs, paid while the weights load rather than
	// by the first request (nn.Runtime.WarmUp); over before Load measures
	// free memory again or returns.
	warmedUp := p.rt.WarmUp()
	defer func() {
		if err := warmedUp(); err != nil {
			slog.Debug("the GPU warm-up failed; the first request pays the costs it would have paid", "err", err)
		}
	}()
	p.encRT = p.rt
	lowVRAM := p.vram == VRAMLow || p.vram == VRAMStream
	switch {
	case cfg.EncodersOnCPU || lowVRAM && p.rt.Device.IsCPU():
		if p.encRT, err = nn.NewRuntime("cpu", cfg.Threads); err != nil {
			return nil, err
		}
	case lowVRAM:
		// On the GPU, with their weights in RAM: each encoder graph streams
		// them in. The GPU's 16-core host took 1.6 s for the encoders on
		// its CPU, a GPU 0.17 s with its weights in device memory.
		p.encRT = p.rt.WithHostWeights()
	}
	if simd := ggml.MissingSIMD(); simd != "" && (p.rt.Device.Dev.Type == ggml.DeviceCPU || p.encRT.Device.IsCPU()) {
		slog.Warn("this binary's ggml was compiled without "+simd+", which this CPU has: "+ggml.MissingSIMDEffect(simd)+"; build with `make` (CGO_CFLAGS=-march=native)", "missing", simd)
	}
	report := func(done, total int) {
		if cfg.Progress != nil {
			cfg.Progress(Progress{Stage: "load", Done: done, Total: total})
		}
	}
	if err := p.loadEncoders(ctx); err != nil {
		return nil, err
	}
	if !cfg.OneShot { // else Generate loads it (checked below)
		if err := p.loadUNet(ctx, report); err != nil {
			return nil, err
		}
	}
	// SDXL's VAE overflows in f16 arithmetic: it computes in f32 whatever
	// its weights are stored in (f16 unless everything is f32), but for
	// VAEF16's products of normalized inputs.
	if p.vae, err = vae.Load(ctx, p.rt, p.model.Tensors, "vae.", policy); err != nil {
		return nil, err
	}
	p.vae.F16Products = cfg.VAEF16
	warmedUp()
	if cfg.OneShot {
		if err := p.checkLaterUNet(policy); err != nil {
			return nil, err
		}
	}
	p.notePeak()
	p.kind, p.device = p.model.Kind.String(), p.rt.Device.Dev.Name
	if p.adapter != nil {
		p.kind = p.adapter.Kind.String()
	}
	return p, nil
}

// encodersLoaded says whether the encoders a request runs are loaded.
func (p *Pipeline) encodersLoaded() bool { return p.text != nil && (p.adapter == nil || p.id != nil) }

// loadEncoders loads the text encoders and, with an adapter, the ID
// encoder, unless they are loaded (ReleaseEncoders frees them).
func (p *Pipeline) loadEncoders(ctx context.Context) error {
	var err error
	if p.text == nil {
		if p.text, err = clip.LoadSDXL(ctx, p.encRT, p.model.Tensors, p.policy); err != nil {
			return err
		}
	}
	if p.adapter != nil && p.id == nil {
		if p.id, err = loadIDStage(ctx, p.encRT, p.adapter, p.policy); err != nil {
			return err
		}
	}
	return nil
}

// loadUNet loads the UNet (Load does, or with OneShot each Generate).
func (p *Pipeline) loadUNet(ctx context.Context, progress func(done, total int)) error {
	var err error
	p.unet, err = unet.Load(ctx, p.rt, p.model.Tensors, "unet.", unet.Options{Policy: p.policy, Progress: progress,
		Stream: p.vram == VRAMStream, CrossKV: p.crossKVPlacement(), QuantizeKernels: p.cfg.QuantizeConvs})
	return err
}

// crossKVPlacement is where the UNet's cross-attention key and value
// projections go: in RAM in the low mode; apart, to be freed once a
// request's sampler loop has their keys and values, when the UNet is
// loaded for one request only (OneShot); else with the other weights.
func (p *Pipeline) crossKVPlacement() unet.CrossKVPlacement {
	switch {
	case p.vram == VRAMLow:
		return unet.CrossKVInHost
	case p.cfg.OneShot:
		return unet.CrossKVFreeable
	}
	return unet.CrossKVWithUNet
}

// encodersInRAM says whether the encoders' weights are in host memory: on
// a CPU runtime, or streamed to the GPU (nn.Runtime.WithHostWeights).
func (p *Pipeline) encodersInRAM() bool { return p.encRT.Device.IsCPU() || p.encRT.WeightsInHost() }

// releasesEncoders says whether the encoders are freed after encoding.
func (p *Pipeline) releasesEncoders() bool { return p.cfg.ReleaseEncoders || p.cfg.OneShot }

// releaseEncoders frees the encoders' weights (ReleaseEncoders).
func (p *Pipeline) releaseEncoders() {
	closeNil(&p.id)
	closeNil(&p.text)
}

// closeNil closes *part, when loaded, and clears it.
func closeNil[T any, P interface {
	*T
	Close()
}](part *P) {
	if *part != nil {
		(*part).Close()
		*part = nil
	}
}

// CheckWeightType says whether Config.WeightType can be name: "" (as in the
// file), f32, f16, bf16 or a block type.
func CheckWeightType(name string) error {
	_, err := weightPolicy(name)
	return err
}

// weightPolicy maps a --type name to a storage policy.
func weightPolicy(name string) (nn.TypePolicy, error) {
	switch strings.ToLower(name) {
	case "":
		return nn.KeepPrecise(func(_ string, t *weights.Tensor) ggml.Type {
			dtype := t.DType
			if t.StoredAs != "" { // a LoRA merge: keep the original weight's type
				dtype = t.StoredAs
			}
			if q, err := ggml.ParseType(string(dtype)); err == nil {
				return q
			}
			return ggml.TypeF16
		}), nil
	case "f32":
		return nn.AllF32, nil
	}
	t, err := ggml.ParseType(name)
	if err != nil {
		return nil, err
	}
	if t != ggml.TypeF16 && t != ggml.TypeBF16 && !t.Quantized() { // i32: no weight type
		return nil, fmt.Errorf("weight type %q: want f32, f16, bf16 or a block type (q8_0, q5_K, q4_K, ...)", name)
	}
	return nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return t }), nil
}

// Kind says what was loaded: plain SDXL or PhotoMaker v1/v2.
func (p *Pipeline) Kind() string { return p.kind }

// VRAM is the VRAM mode in use (VRAMFull, VRAMLow, VRAMStream); "" on the
// CPU unless Config.VRAM forced one.
func (p *Pipeline) VRAM() string { return p.vram }

// Device names the device the pipeline computes on.
func (p *Pipeline) Device() string { return p.device }

// CPUFallbacks names the ops that the GPU backend had no kernel for, so
// that the CPU computed them (slowly), in the graphs built so far.
func (p *Pipeline) CPUFallbacks() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rt == nil {
		return nil
	}
	ops := p.rt.CPUFallbacks()
	if p.encRT != nil && p.encRT.WeightsInHost() { // the encoders' graphs, on the same GPU
		for _, op := range p.encRT.CPUFallbacks() {
			if !slices.Contains(ops, op) {
				ops = append(ops, op)
			}
		}
	}
	return ops
}

// CPUPlacedShare is the largest share of a GPU graph's arithmetic that the
// CPU computed (slowly) in the graphs computed so far; 0 on the CPU.
func (p *Pipeline) CPUPlacedShare() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rt == nil {
		return 0
	}
	if p.encRT != nil && p.encRT.WeightsInHost() { // the encoders' graphs, on the same GPU
		return max(p.rt.CPUPlacedShare(), p.encRT.CPUPlacedShare())
	}
	return p.rt.CPUPlacedShare()
}

// Close frees device memory and files. It waits for a running Generate.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseEncoders()
	closeNil(&p.vae)
	closeNil(&p.unet)
	if p.encRT != p.rt {
		closeNil(&p.encRT)
	}
	p.encRT = nil
	closeNil(&p.rt)
	var err error
	if p.adapter != nil {
		err = p.adapter.Close()
		p.adapter = nil
	}
	for _, l := range p.loras {
		err = errors.Join(err, l.Close())
	}
	p.loras = nil
	if p.model != nil {
		err = errors.Join(err, p.model.Close())
		p.model = nil
	}
	return err
}
