package photomaker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/models/vae"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// VRAM modes: where the pipeline keeps its parts on a GPU (Config.VRAM,
// --vram). Each mode after full trades speed for device memory.
const (
	VRAMAuto   = "auto"   // the fastest mode the free device memory allows
	VRAMFull   = "full"   // everything on the device
	VRAMLow    = "low"    // the text and ID encoders' weights and the UNet's cross-attention K/V projections in RAM
	VRAMStream = "stream" // as low, and the UNet's weights stay in host memory and stream to the device every step
)

// VRAMModes lists the modes a user can ask for.
var VRAMModes = []string{VRAMAuto, VRAMFull, VRAMLow, VRAMStream}

// Compute memory per latent pixel, measured with ggml's scheduler on the
// SDXL base architecture (bench --random weights, flash attention with f16
// K/V as on GPUs): one CFG UNet step (batch 2) needs 624 MiB at 1024²
// (128² latents) and grows linearly with the pixel count; a 64² latent VAE
// tile needs 820 MiB, its large convolutions running in bands whose
// columns are bounded by the convolution's own output size (see
// vae.Im2ColLimit), about 205 KiB per latent pixel. Only tiles are planned
// with: a whole decode that does not fit falls back to them.
const (
	unetStepBytesPerLatentPixel  = 624 << 20 / (128 * 128)
	vaeDecodeBytesPerLatentPixel = 3280 << 20 / (128 * 128)
	// deviceReserve covers what lives outside the scheduler's buffers: the
	// CUDA context, cuBLAS workspaces and the backend's memory pool.
	deviceReserve = 768 << 20
)

// memoryNeeds are the device bytes of each part at one image size.
type memoryNeeds struct {
	UNet, VAE, Encoders int64 // weights as stored on the device
	UNetCrossKV         int64 // the UNet's cross-attention K/V projections: in RAM in low mode, freed after the loop's set-up in OneShot full mode
	UNetStep            int64 // compute of one UNet step with CFG (batch 2)
	UNetState           int64 // the sampler loop's device state: each conditioning's cross-attention keys and values
	VAETile             int64 // compute of a VAE decode tile (or the whole image if smaller)
	StreamChunk         int64 // room for the weights one graph split streams in
	// EncoderChunk is room for the encoder weights one graph split streams
	// in: the low modes run the encoders on the GPU with their weights in
	// RAM, through the compute buffers the UNet and the VAE use after them.
	EncoderChunk int64
	// OneShot: the parts are loaded one stage at a time (Config.OneShot).
	OneShot bool
}

// total is the least device memory a mode runs in: the weights it keeps on
// the device plus the largest compute stage (the scheduler reuses one set of
// buffers for the UNet and the VAE) and a fixed reserve. The VAE counts as
// one tile: a whole decode that does not fit falls back to tiles by itself.
// OneShot needs only its largest stage: encoding (the encoders on the
// device in full mode), denoising (the UNet, its step and the loop's
// state, less the cross-attention projections once the loop has its keys
// and values), decoding (the compute buffer, which only grows, then holds
// the larger of step and tile).
func (n memoryNeeds) total(mode string) int64 {
	unetWeights := n.UNet
	if mode == VRAMLow {
		unetWeights -= n.UNetCrossKV
	}
	// The compute buffers only grow: in the low modes the encoders' streamed
	// weights have set their least size before the first step.
	step := n.UNetStep
	if mode != VRAMFull {
		step = max(step, n.EncoderChunk)
	}
	if n.OneShot && mode != VRAMStream {
		denoise := unetWeights + step + n.UNetState
		if mode == VRAMFull {
			// The loop makes its keys and values with the whole UNet loaded,
			// then the projections are freed before the steps' compute is
			// allocated (unet.CrossKVFreeable).
			denoise = n.UNet + n.UNetState + max(0, n.UNetStep-n.UNetCrossKV)
		}
		stages := max(denoise, n.VAETile)
		if mode == VRAMFull {
			stages = max(stages, n.Encoders)
		}
		return n.VAE + stages + deviceReserve
	}
	switch mode {
	case VRAMFull:
		return n.UNet + n.VAE + n.Encoders + max(n.UNetStep+n.UNetState, n.VAETile) + deviceReserve
	case VRAMLow:
		return unetWeights + n.VAE + max(step+n.UNetState, n.VAETile) + deviceReserve
	default: // stream
		return n.VAE + max(n.UNetStep+n.UNetState+n.StreamChunk, n.VAETile, n.EncoderChunk) + deviceReserve
	}
}

// chooseVRAM resolves mode (auto or a forced one) for a device with free
// bytes. Auto takes the fastest mode that fits; a forced mode is used as
// asked. Nothing fitting is an error with the estimates and what to try.
func chooseVRAM(mode string, free int64, n memoryNeeds, width, height int) (string, error) {
	mode = strings.ToLower(mode)
	switch mode {
	case "", VRAMAuto:
	case VRAMFull, VRAMLow, VRAMStream:
		return mode, nil
	default:
		return "", fmt.Errorf("unknown VRAM mode %q: want one of %s", mode, strings.Join(VRAMModes, ", "))
	}
	for _, m := range []string{VRAMFull, VRAMLow, VRAMStream} {
		if n.total(m) <= free {
			return m, nil
		}
	}
	return "", fmt.Errorf("%w: a %d×%d image needs at least %s of device memory even with --vram stream (%s with everything on the device), but %s is free; "+
		"try a smaller size, quantized weights (--type q4_K), or --device cpu",
		ggml.ErrOutOfMemory, width, height, ggml.HumanBytes(n.total(VRAMStream)), ggml.HumanBytes(n.total(VRAMFull)), ggml.HumanBytes(free))
}

// cpuStepBytes is the least compute a CFG UNet step of SDXL base needs on
// the CPU for a w×h image (attention and 3×3 convolutions by our kernels,
// see nn.AttentionOptions and nn.Conv2D): cpuStepBytesPerLatentPixel,
// 448 MiB per 1024² (TestComputeEstimatesBig measured 129, 256, 465, 743
// and 1843 MiB at 512², 768², 1024², 1280² and 2048²; the Winograd
// convolutions' transformed kernels, made in groups of output channels,
// take at most 64 MB at a time). A plan refused with it surely does not
// fit.
func cpuStepBytes(w, h int) int64 {
	return int64(w/8) * int64(h/8) * cpuStepBytesPerLatentPixel
}

const cpuStepBytesPerLatentPixel = 448 << 20 / (128 * 128)

// planMinChannels is the least UNet width (its first level's channels)
// checkPlanInRAM judges: SDXL's 320, which the constant was measured on;
// smaller models need far less. Tests lower it for the tiny model.
var planMinChannels = 320

// checkPlanInRAM fails Load on the CPU before any weight is read when a
// PlanWidth×PlanHeight image cannot fit the available RAM: the weights
// resident while denoising and the least a step's compute needs. Nearer
// cases go on, and the step's exact sizing (ggml.Scheduler) decides.
func (p *Pipeline) checkPlanInRAM(policy nn.TypePolicy) error {
	w, h := p.cfg.PlanWidth, p.cfg.PlanHeight
	if !p.rt.Device.IsCPU() || w <= 0 || h <= 0 {
		return nil
	}
	if !p.sdxlSized() {
		return nil // smaller models need far less; Load reports a bad UNet
	}
	avail, ok := availableRAM()
	if !ok {
		return nil
	}
	b := p.weightBytes(policy)
	resident := b.unet + b.vae
	if !p.releasesEncoders() {
		resident += b.encoders
	}
	step := cpuStepBytes(w, h)
	if resident+step+b.loopKV <= int64(avail) {
		return nil
	}
	try := "a smaller size"
	if !p.unetQuantized() {
		try += ", quantized weights (--type q4_K)"
	}
	return fmt.Errorf("%w: a %d×%d image needs at least %s of RAM (weights %s, a denoising step's working memory %s) but %s is available; try %s or closing other programs",
		ggml.ErrOutOfMemory, w, h, ggml.HumanBytes(resident+step+b.loopKV), ggml.HumanBytes(resident), ggml.HumanBytes(step),
		ggml.HumanBytes(int64(avail)), try)
}

// requestBytes is the host memory a request's own arrays take: every
// image's initial and final latents and finished picture (NRGBA), all kept
// until Generate returns, and one decode's scaled latents and float pixels
// at a time.
func requestBytes(n, w, h int) int64 {
	pixels := int64(w) * int64(h)
	latents := pixels / 64 * 4 * 4 // 4 float32 channels at an eighth of each side
	return int64(n)*(2*latents+4*pixels) + latents + 3*4*pixels
}

// checkRequestInRAM refuses a request, before any work, when it cannot fit
// the available RAM: its images (requestBytes), and what denoising adds to
// the RAM in use: the share of RAM of a UNet that OneShot has yet to load,
// and on the CPU the loop's keys and values and the compute buffers'
// growth to the least a step of this size needs (SDXL-sized models, as
// checkPlanInRAM). Encoders in RAM that are freed before denoising leave
// their room to it.
func (p *Pipeline) checkRequestInRAM(req *Request) error {
	avail, ok := availableRAM()
	if !ok {
		return nil
	}
	images := requestBytes(req.N, req.Width, req.Height)
	b := p.parts
	cpu := p.rt.Device.IsCPU()
	var work int64
	switch {
	case p.unet != nil:
	case cpu || p.vram == VRAMStream:
		work += b.unet
	case p.vram == VRAMLow: // the cross-attention projections stay in RAM
		work += b.unetCrossKV
	}
	if cpu && p.sdxlSized() {
		work += b.loopKV + max(0, cpuStepBytes(req.Width, req.Height)-p.rt.Sched.BufferSize(p.rt.Device))
	}
	room := int64(avail)
	if p.releasesEncoders() && p.encodersInRAM() && p.text != nil {
		room += b.encoders
	}
	if images+work <= room {
		return nil
	}
	what, try := fmt.Sprintf("a %d×%d image needs", req.Width, req.Height), "a smaller size"
	if req.N > 1 {
		what = fmt.Sprintf("%d images of %d×%d need", req.N, req.Width, req.Height)
		try = "fewer images per call, " + try
	}
	return fmt.Errorf("%w: %s about %s of RAM (the images %s, denoising %s) but %s is available; try %s or closing other programs",
		ggml.ErrOutOfMemory, what, ggml.HumanBytes(images+work), ggml.HumanBytes(images), ggml.HumanBytes(work),
		ggml.HumanBytes(room), try)
}

// sdxlSized reports a UNet at least as wide as the one cpuStepBytes was
// measured on.
func (p *Pipeline) sdxlSized() bool { return p.unetWidth > 0 && p.unetWidth >= planMinChannels }

// deviceMemory is the free memory of rt's device, ok=false for the CPU
// (whose RAM is checked as the weights load). Tests replace it.
var deviceMemory = func(rt *nn.Runtime) (free int64, ok bool) {
	if rt.Device.Dev.Type == ggml.DeviceCPU {
		return 0, false
	}
	f, _ := rt.Device.Dev.Memory()
	return int64(f), true
}

// availableRAM is ggml.AvailableHostMemory; tests replace it.
var availableRAM = ggml.AvailableHostMemory

// checkLaterUNet fails Load, before any request is encoded, when the UNet
// that OneShot loads in Generate is unsupported or incomplete, or cannot
// fit where it goes (RAM on the CPU or when it streams, else the device)
// once Generate has freed the encoders: the errors its loading would give.
func (p *Pipeline) checkLaterUNet(policy nn.TypePolicy) error {
	if _, err := unet.Infer(p.model.Tensors, "unet."); err != nil {
		return err
	}
	parts := p.weightBytes(policy)
	inRAM := p.rt.Device.IsCPU() || p.vram == VRAMStream
	var room int64
	var known bool
	if inRAM {
		avail, ok := availableRAM()
		room, known = int64(avail), ok
		if p.encodersInRAM() {
			room += parts.encoders
		}
	} else {
		room, known = deviceMemory(p.rt)
		if p.encRT == p.rt {
			room += parts.encoders
		}
	}
	need := parts.unet
	if !inRAM {
		need = parts.unetOnDevice(p.vram)
	}
	if !known || need <= room {
		return nil
	}
	where, try := p.rt.Device.Dev.Name, "--vram stream, or --device cpu"
	if inRAM {
		where, try = "RAM", "or close other programs"
	}
	return fmt.Errorf("%w: the UNet's weights need %s of %s but about %s will be free once the encoders are done; try quantized weights (--type q8_0 or q4_K), %s",
		ggml.ErrOutOfMemory, ggml.HumanBytes(need), where, ggml.HumanBytes(room), try)
}

// chooseVRAM picks the VRAM mode for p's device: on a GPU from its free
// memory (Config.VRAM auto) or as forced; on the CPU "" unless a mode was
// forced (the modes then only move work between CPU runtimes, which keeps
// their code paths testable anywhere).
func (p *Pipeline) chooseVRAM(policy nn.TypePolicy) (string, error) {
	w, h := p.cfg.PlanWidth, p.cfg.PlanHeight
	if w <= 0 || h <= 0 {
		w, h = 1024, 1024
	}
	free, gpu := deviceMemory(p.rt)
	if !gpu {
		mode := strings.ToLower(p.cfg.VRAM)
		if mode == "" || mode == VRAMAuto {
			return "", nil
		}
		return chooseVRAM(mode, 0, memoryNeeds{}, w, h)
	}
	mode, err := chooseVRAM(p.cfg.VRAM, free, p.estimateNeeds(policy, w, h), w, h)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.rt.Device.Dev.Name, err)
	}
	slog.Info("device memory plan", "device", p.rt.Device.Dev.Name, "vram", mode, "free", ggml.HumanBytes(free), "plan_size", fmt.Sprintf("%d×%d", w, h))
	return mode, nil
}

// partBytes are the weight bytes of the pipeline's parts as stored.
type partBytes struct {
	unet, vae, encoders int64
	streamChunk         int64 // the 30 largest UNet weights (see estimateNeeds)
	encoderChunk        int64 // the 30 largest weights of one encoder
	loopKV              int64 // a sampler loop's cross-attention keys and values (see weightBytes)
	// unetCrossKV is the UNet's cross-attention key and value projections,
	// which the low mode keeps in RAM (unet.CrossKVInHost) and generate
	// frees once the loop is set up (unet.CrossKVFreeable).
	unetCrossKV int64
}

// unetOnDevice is the UNet's bytes in a GPU's memory in a VRAM mode.
func (b partBytes) unetOnDevice(mode string) int64 {
	switch mode {
	case VRAMStream:
		return 0
	case VRAMLow:
		return b.unet - b.unetCrossKV
	}
	return b.unet
}

// onDevice is the bytes of the parts that sit in device memory. On the CPU
// that is every part loaded; on a GPU, the UNet's share in the VRAM mode
// when it is loaded, and the encoders when they are loaded on the GPU's
// runtime.
func (b partBytes) onDevice(cpu, unetLoaded bool, mode string, encodersOnDevice bool) int64 {
	n := b.vae
	switch {
	case unetLoaded && cpu:
		n += b.unet
	case unetLoaded:
		n += b.unetOnDevice(mode)
	}
	if encodersOnDevice {
		n += b.encoders
	}
	return n
}

// weightBytes sizes each part's weights as Load stores them under policy.
func (p *Pipeline) weightBytes(policy nn.TypePolicy) partBytes {
	set := p.model.Tensors
	unetPolicy, err := unet.StoragePolicy(set, "unet.", policy, p.cfg.QuantizeConvs)
	if err != nil {
		unetPolicy = policy // Load will report the problem
	}
	unetSet, err := unet.WeightSet(set, "unet.", unetPolicy, p.rt != nil && unet.FoldsNorms(p.rt, p.vram == VRAMStream)) // as Load stores them
	if err != nil {
		unetSet = set
	}
	b := partBytes{
		unet:     nn.EstimateBytes(unetSet, "unet.", unetPolicy),
		vae:      nn.EstimateBytes(set, "vae.", vae.StoragePolicy(policy)),
		encoders: nn.EstimateBytes(set, "te1.", policy) + nn.EstimateBytes(set, "te2.", policy),
		// ggml's scheduler cuts a graph where a split would take more than
		// 30 inputs, so at most that many streamed weights are on the
		// device at once.
		streamChunk: nn.LargestBytes(unetSet, "unet.", unetPolicy, 30),
		unetCrossKV: nn.EstimateBytesOf(unetSet, "unet.", unetPolicy, unet.IsCrossKVWeight),
	}
	// The loop keeps keys and values in f16 (GPUs' flash attention), for
	// one 77-token prompt chunk with CFG: the set the step reads and, with
	// PhotoMaker's two conditionings (text-only, then with the ID), a copy
	// of each to switch between.
	sets := int64(1)
	b.encoderChunk = max(nn.LargestBytes(set, "te1.", policy, 30), nn.LargestBytes(set, "te2.", policy, 30))
	if p.adapter != nil {
		b.encoders += nn.EstimateBytes(p.adapter.Tensors, "pm.", policy)
		b.encoderChunk = max(b.encoderChunk, nn.LargestBytes(p.adapter.Tensors, "pm.", policy, 30))
		sets = 3
	}
	b.loopKV = sets * unet.CrossKVBytes(set, "unet.", 77, 2, ggml.TypeF16)
	return b
}

// estimateNeeds sizes the parts of p's model for width×height images with
// the weights stored as policy says.
func (p *Pipeline) estimateNeeds(policy nn.TypePolicy, width, height int) memoryNeeds {
	w := p.weightBytes(policy)
	lat := int64(width/8) * int64(height/8)
	return memoryNeeds{
		UNet: w.unet, UNetCrossKV: w.unetCrossKV, VAE: w.vae, Encoders: w.encoders, StreamChunk: w.streamChunk, EncoderChunk: w.encoderChunk,
		OneShot:  p.cfg.OneShot,
		UNetStep: lat * unetStepBytesPerLatentPixel, UNetState: w.loopKV,
		VAETile: min(lat, int64(autoTile*autoTile)) * vaeDecodeBytesPerLatentPixel,
	}
}

// MemoryEstimate is the device memory one VRAM mode needs.
type MemoryEstimate struct {
	Mode string `json:"mode"`
	// Bytes is with the parts loaded one at a time (Config.OneShot, as
	// generate runs), ServeBytes with every part kept loaded (serve).
	Bytes      int64 `json:"bytes"`
	ServeBytes int64 `json:"serve_bytes"`
}

// EstimateMemory estimates, for each VRAM mode, the device memory a
// width×height generation needs with cfg's model, adapter and WeightType,
// reading only the files' headers: the figures --vram auto plans with
// (cfg.OneShot does not matter: both are given).
func EstimateMemory(cfg Config, width, height int) ([]MemoryEstimate, error) {
	if err := checkSize(width, height); err != nil {
		return nil, fmt.Errorf("estimate: %w", err)
	}
	policy, err := weightPolicy(cfg.WeightType)
	if err != nil {
		return nil, err
	}
	m, err := weights.Open(cfg.Model)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if m.Kind.IsPhotoMaker() || m.Kind == weights.Unknown {
		return nil, fmt.Errorf("%s is not an SDXL checkpoint (it looks like %s)", cfg.Model, m.Kind)
	}
	p := &Pipeline{cfg: cfg, model: m, adapter: m.Adapter}
	if cfg.PhotoMaker != "" {
		a, err := weights.Open(cfg.PhotoMaker)
		if err != nil {
			return nil, err
		}
		defer a.Close()
		p.adapter = a
	}
	oneShot := p.estimateNeeds(policy, width, height)
	oneShot.OneShot = true
	serve := oneShot
	serve.OneShot = false
	var out []MemoryEstimate
	for _, mode := range []string{VRAMFull, VRAMLow, VRAMStream} {
		out = append(out, MemoryEstimate{mode, oneShot.total(mode), serve.total(mode)})
	}
	return out, nil
}

// Generation stages, for out-of-memory advice.
const (
	stageEncode  = "encoding"
	stageDenoise = "denoising"
	stageDecode  = "decoding"
)

// withMemoryAdvice adds to a stage's compute buffers that did not fit
// (ggml.ComputeMemoryError) what would make them fit with this pipeline's
// settings; other errors pass unchanged.
func (p *Pipeline) withMemoryAdvice(err error, stage string, req *Request) error {
	var me *ggml.ComputeMemoryError
	if !errors.As(err, &me) {
		return err
	}
	var try []string
	if stage != stageEncode {
		try = append(try, "a smaller image size")
	}
	switch stage {
	case stageEncode:
		switch {
		case !me.CPU && p.encRT == p.rt:
			try = append(try, "--vram low (the encoders' weights then stay in RAM)")
		case !me.CPU && p.encRT.WeightsInHost():
			try = append(try, "--encoders-on-cpu")
		}
	case stageDenoise:
		if !p.unetQuantized() {
			try = append(try, "quantized weights (--type q4_K)")
		}
		if !me.CPU && p.vram != VRAMStream {
			try = append(try, "--vram stream")
		}
	case stageDecode:
		// Halve the tiles the decode ran in: a forced size, the automatic
		// ones a whole decode falls back to, or the whole image.
		side := max(req.Width, req.Height) / 8
		tile := p.vaeTile()
		if tile == 0 && side > autoTile {
			tile = autoTile
		}
		if tile <= 0 || tile >= side {
			tile = side
		}
		if next := min(autoTile, tile/2); next >= 16 {
			try = append(try, fmt.Sprintf("smaller VAE tiles (--vae-tile %d)", next))
		}
	}
	if me.CPU {
		try = append(try, "closing other programs")
	} else {
		try = append(try, "--device cpu")
	}
	return fmt.Errorf("%w; try %s", err, orList(try))
}

// orList joins choices as "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// unetQuantized says whether p stores the UNet's matrices in a quantized type.
func (p *Pipeline) unetQuantized() bool {
	set := p.model.Tensors.Prefix("unet.")
	for _, name := range set.Names() {
		if t, ok := set.Get(name); ok && len(t.Shape) == 2 && p.policy("unet."+name, t).Quantized() {
			return true
		}
	}
	return false
}
