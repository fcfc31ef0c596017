package photomaker

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

func TestChooseVRAM(t *testing.T) {
	const gib = int64(1) << 30
	n := memoryNeeds{UNet: 5 * gib, UNetCrossKV: gib / 2, VAE: gib / 8, Encoders: 2 * gib, UNetStep: gib, UNetState: gib / 16,
		VAETile: gib / 2, StreamChunk: gib / 2}
	step := n.UNetStep + n.UNetState
	require.Equal(t, n.UNet+n.VAE+n.Encoders+step+deviceReserve, n.total(VRAMFull))
	require.Equal(t, n.UNet-n.UNetCrossKV+n.VAE+step+deviceReserve, n.total(VRAMLow), "cross-attention K/V projections in RAM")
	require.Equal(t, n.VAE+step+n.StreamChunk+deviceReserve, n.total(VRAMStream))
	for _, tc := range []struct {
		free int64
		want string
	}{
		{80 * gib, VRAMFull}, {n.total(VRAMFull), VRAMFull}, {n.total(VRAMFull) - 1, VRAMLow},
		{n.total(VRAMLow), VRAMLow}, {n.total(VRAMLow) - 1, VRAMStream}, {n.total(VRAMStream), VRAMStream},
	} {
		got, err := chooseVRAM(VRAMAuto, tc.free, n, 1024, 1024)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "free %d", tc.free)
	}
	// The low modes stream the encoders' weights through the compute
	// buffers (which only grow): a chunk larger than the step sets them.
	big := n
	big.EncoderChunk = 2 * gib
	require.Equal(t, n.total(VRAMFull), big.total(VRAMFull), "the encoders' weights on the device")
	require.Equal(t, n.UNet-n.UNetCrossKV+n.VAE+big.EncoderChunk+n.UNetState+deviceReserve, big.total(VRAMLow))
	require.Equal(t, n.VAE+big.EncoderChunk+deviceReserve, big.total(VRAMStream))
	big.OneShot = true
	require.Equal(t, n.UNet-n.UNetCrossKV+n.VAE+big.EncoderChunk+n.UNetState+deviceReserve, big.total(VRAMLow))
	// One stage at a time: the largest stage counts, not the sum.
	one := n
	one.OneShot = true
	// Denoising: the projections are freed before the step's compute grows
	// in full mode, and in RAM in low mode.
	require.Equal(t, n.UNet-n.UNetCrossKV+n.VAE+step+deviceReserve, one.total(VRAMFull))
	require.Equal(t, one.total(VRAMFull), one.total(VRAMLow))
	bigCross := one
	bigCross.UNetCrossKV = 2 * gib // more than the step: the loop's set-up is the peak
	require.Equal(t, n.UNet+n.VAE+n.UNetState+deviceReserve, bigCross.total(VRAMFull))
	require.Equal(t, n.total(VRAMStream), one.total(VRAMStream))
	one.UNet, one.UNetCrossKV, one.Encoders = gib/4, 0, 2*gib
	require.Equal(t, one.Encoders+one.VAE+deviceReserve, one.total(VRAMFull)) // encoding
	require.Equal(t, one.UNet+one.VAE+step+deviceReserve, one.total(VRAMLow))
	one.Encoders, one.VAETile = 0, 3*gib
	require.Equal(t, one.VAE+one.VAETile+deviceReserve, one.total(VRAMFull)) // decoding
	got, err := chooseVRAM(VRAMAuto, n.total(VRAMLow)+n.UNetCrossKV, memoryNeeds{UNet: n.UNet, VAE: n.VAE, Encoders: n.Encoders,
		UNetStep: n.UNetStep, UNetState: n.UNetState, VAETile: n.VAETile, OneShot: true}, 1024, 1024)
	require.NoError(t, err)
	require.Equal(t, VRAMFull, got, "what low needs with the whole UNet on the device is enough for full when the encoders are gone before the UNet loads")

	_, err = chooseVRAM("", n.total(VRAMStream)-1, n, 1024, 1024)
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)
	require.ErrorContains(t, err, "1024×1024 image needs at least 2.4 GiB")
	require.ErrorContains(t, err, "--type q4_K")
	require.ErrorContains(t, err, "--device cpu")

	got, err = chooseVRAM("Stream", 80*gib, n, 1024, 1024) // forced: as asked
	require.NoError(t, err)
	require.Equal(t, VRAMStream, got)
	_, err = chooseVRAM("tiny", 80*gib, n, 1024, 1024)
	require.ErrorContains(t, err, "auto, full, low, stream")
}

// TestVRAMAutoOnAGPU loads the tiny model as if the CPU were a GPU with a
// given amount of free memory and checks the placement auto chooses.
func TestVRAMAutoOnAGPU(t *testing.T) {
	var free int64
	old := deviceMemory
	deviceMemory = func(*nn.Runtime) (int64, bool) { return free, true }
	t.Cleanup(func() { deviceMemory = old })

	free = 1 << 40
	p := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	require.Equal(t, VRAMFull, p.VRAM())
	require.Same(t, p.rt, p.encRT)
	n := p.estimateNeeds(nn.AllF32, 1024, 1024)
	require.Positive(t, n.Encoders)
	require.Positive(t, n.EncoderChunk)
	require.Less(t, n.EncoderChunk, n.Encoders)
	require.Less(t, n.UNet, int64(64<<20)) // the tiny model

	free = n.total(VRAMLow)
	p = loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	require.Equal(t, VRAMLow, p.VRAM())
	require.NotSame(t, p.rt, p.encRT)

	free = n.total(VRAMStream)
	p = loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	require.Equal(t, VRAMStream, p.VRAM())

	free = n.total(VRAMStream) - 1
	_, err := Load(t.Context(), Config{Model: p.cfg.Model, PhotoMaker: p.cfg.PhotoMaker, Device: "cpu", WeightType: "f32"})
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)
	require.ErrorContains(t, err, "even with --vram stream")

	// Compute grows with the image (the VAE tile caps the decode's share).
	small, big := p.estimateNeeds(nn.AllF32, 512, 512), p.estimateNeeds(nn.AllF32, 2048, 2048)
	require.Equal(t, 4*small.UNetStep, n.UNetStep)
	require.Equal(t, n.VAETile, big.VAETile)
	require.Greater(t, big.total(VRAMStream), n.total(VRAMStream))
}

func TestEstimateMemory(t *testing.T) {
	model, adapter := golden.Path("tiny-sdxl.safetensors"), golden.Path("photomaker/photomaker-v1-tiny.safetensors")
	plain, err := EstimateMemory(Config{Model: model}, 1024, 1024)
	require.NoError(t, err)
	with, err := EstimateMemory(Config{Model: model, PhotoMaker: adapter}, 1024, 1024)
	require.NoError(t, err)
	require.Equal(t, []string{VRAMFull, VRAMLow, VRAMStream}, []string{with[0].Mode, with[1].Mode, with[2].Mode})
	require.Greater(t, with[0].ServeBytes, plain[0].ServeBytes) // the ID encoder sits on the device in full mode only
	require.Equal(t, with[1].ServeBytes, plain[1].ServeBytes)
	for _, e := range with {
		require.LessOrEqual(t, e.Bytes, e.ServeBytes, e.Mode)
	}
	// What a loaded pipeline plans with.
	p := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	policy, err := weightPolicy("f32")
	require.NoError(t, err)
	n := p.estimateNeeds(policy, 1024, 1024)
	f32, err := EstimateMemory(Config{Model: model, PhotoMaker: adapter, WeightType: "f32"}, 1024, 1024)
	require.NoError(t, err)
	require.Equal(t, n.total(VRAMFull), f32[0].ServeBytes)
	n.OneShot = true
	require.Equal(t, n.total(VRAMFull), f32[0].Bytes)

	_, err = EstimateMemory(Config{Model: adapter}, 1024, 1024)
	require.ErrorContains(t, err, "not an SDXL checkpoint")
	for _, size := range [][2]int{{0, 1024}, {7, 7}, {1 << 40, 1 << 40}, {8200, 1024}} { // as Generate: multiples of 8, up to MaxSide
		_, err = EstimateMemory(Config{Model: model}, size[0], size[1])
		require.ErrorIs(t, err, ErrInvalidRequest, "%v", size)
	}
	_, err = EstimateMemory(Config{Model: model, WeightType: "q7_X"}, 1024, 1024)
	require.Error(t, err)
}

// The low-memory modes decode in the tiles they were planned with; a
// configured tile size (or -1, never) wins.
func TestVAETileByMode(t *testing.T) {
	for _, tc := range []struct {
		vram      string
		cfg, want int
	}{
		{"", 0, 0}, {VRAMFull, 0, 0}, {VRAMLow, 0, autoTile}, {VRAMStream, 0, autoTile},
		{VRAMLow, -1, -1}, {VRAMLow, 32, 32}, {VRAMFull, 48, 48},
	} {
		p := &Pipeline{vram: tc.vram, cfg: Config{VAETile: tc.cfg}}
		require.Equal(t, tc.want, p.vaeTile(), "%+v", tc)
	}
}

// The weights a memory report counts on the device, per placement.
func TestWeightsOnDevice(t *testing.T) {
	b := partBytes{unet: 100, unetCrossKV: 20, vae: 10, encoders: 1}
	require.Equal(t, int64(111), b.onDevice(true, true, "", true))          // CPU
	require.Equal(t, int64(111), b.onDevice(true, true, VRAMStream, true))  // CPU, stream placement forced: all RAM
	require.Equal(t, int64(111), b.onDevice(false, true, VRAMFull, true))   // GPU, full
	require.Equal(t, int64(110), b.onDevice(false, true, VRAMFull, false))  // GPU, full, encoders released
	require.Equal(t, int64(90), b.onDevice(false, true, VRAMLow, false))    // GPU, low: cross-attention K/V projections in RAM
	require.Equal(t, int64(11), b.onDevice(false, false, VRAMFull, true))   // GPU, full, UNet not loaded (OneShot)
	require.Equal(t, int64(11), b.onDevice(true, false, "", true))          // CPU, UNet not loaded
	require.Equal(t, int64(10), b.onDevice(false, true, VRAMStream, false)) // GPU, stream
}

// An out-of-memory error names what would fit it at its stage, given the
// pipeline's device, weights, VRAM mode and tiles; other errors pass as they are.
func TestMemoryAdvice(t *testing.T) {
	m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer m.Close()
	f16, err := weightPolicy("f16")
	require.NoError(t, err)
	q4, err := weightPolicy("q4_K")
	require.NoError(t, err)
	onCPU := &ggml.ComputeMemoryError{Device: "CPU", CPU: true, Need: 5 << 30, Free: 1 << 30}
	onGPU := &ggml.ComputeMemoryError{Device: "CUDA0", Need: 5 << 30, Free: 1 << 30}
	gpu, cpu := &nn.Runtime{}, &nn.Runtime{}
	req1024 := &Request{Width: 1024, Height: 1024}
	for _, tc := range []struct {
		name  string
		p     *Pipeline
		stage string
		err   error
		req   *Request
		want  string
	}{
		{"CPU step, f16", &Pipeline{policy: f16}, stageDenoise, onCPU, req1024,
			"; try a smaller image size, quantized weights (--type q4_K) or closing other programs"},
		{"CPU step, q4_K", &Pipeline{policy: q4}, stageDenoise, onCPU, req1024,
			"; try a smaller image size or closing other programs"},
		{"GPU step, full", &Pipeline{policy: f16, vram: VRAMFull, rt: gpu, encRT: gpu}, stageDenoise, onGPU, req1024,
			"; try a smaller image size, quantized weights (--type q4_K), --vram stream or --device cpu"},
		{"GPU step, stream, q4_K", &Pipeline{policy: q4, vram: VRAMStream, rt: gpu, encRT: cpu}, stageDenoise, onGPU, req1024,
			"; try a smaller image size or --device cpu"},
		{"GPU encoders", &Pipeline{policy: f16, vram: VRAMFull, rt: gpu, encRT: gpu}, stageEncode, onGPU, req1024,
			"; try --vram low (the encoders' weights then stay in RAM) or --device cpu"},
		{"CPU encoders of a low GPU mode", &Pipeline{policy: f16, vram: VRAMLow, rt: gpu, encRT: cpu}, stageEncode, onCPU, req1024,
			"; try closing other programs"},
		{"streamed encoders of a low GPU mode", &Pipeline{policy: f16, vram: VRAMLow, rt: gpu, encRT: gpu.WithHostWeights()}, stageEncode, onGPU, req1024,
			"; try --encoders-on-cpu or --device cpu"},
		{"whole decode fell back to tiles", &Pipeline{policy: f16}, stageDecode, onCPU, req1024,
			"; try a smaller image size, smaller VAE tiles (--vae-tile 32) or closing other programs"},
		{"never tiles", &Pipeline{policy: f16, cfg: Config{VAETile: -1}}, stageDecode, onGPU, req1024,
			"; try a smaller image size, smaller VAE tiles (--vae-tile 64) or --device cpu"},
		{"small whole decode", &Pipeline{policy: f16}, stageDecode, onGPU, &Request{Width: 384, Height: 256},
			"; try a smaller image size, smaller VAE tiles (--vae-tile 24) or --device cpu"},
		{"smallest tiles", &Pipeline{policy: f16, cfg: Config{VAETile: 16}}, stageDecode, onCPU, req1024,
			"; try a smaller image size or closing other programs"},
	} {
		tc.p.model = m
		wrapped := fmt.Errorf("denoising step 1 of 20: %w", tc.err)
		got := tc.p.withMemoryAdvice(wrapped, tc.stage, tc.req)
		require.ErrorIs(t, got, ggml.ErrOutOfMemory, tc.name)
		require.Equal(t, wrapped.Error()+tc.want, got.Error(), tc.name)
	}
	other := errors.New("ggml: graph computation failed (status 1)")
	require.Same(t, other, (&Pipeline{}).withMemoryAdvice(other, stageDenoise, req1024))
}

// A CPU plan that cannot fit the RAM (weights and the least a step needs)
// is refused by Load with the sizes; one that can goes on.
func TestPlanInRAM(t *testing.T) {
	oldRAM, oldMin := availableRAM, planMinChannels
	t.Cleanup(func() { availableRAM, planMinChannels = oldRAM, oldMin })
	planMinChannels = 0 // judge the tiny model as if it were SDXL-sized
	var avail uint64
	availableRAM = func() (uint64, bool) { return avail, true }

	cfg := Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", WeightType: "f32", PlanWidth: 1024, PlanHeight: 768}
	avail = 1 << 40
	p, err := Load(t.Context(), cfg)
	require.NoError(t, err)
	b := p.weightBytes(nn.AllF32)
	p.Close()
	need := b.unet + b.vae + b.encoders + b.loopKV + cpuStepBytes(1024, 768)

	avail = uint64(need - 1)
	_, err = Load(t.Context(), cfg)
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)
	require.ErrorContains(t, err, "a 1024×768 image needs at least ")
	require.ErrorContains(t, err, "try a smaller size, quantized weights (--type q4_K) or closing other programs")

	avail = uint64(need)
	p, err = Load(t.Context(), cfg)
	require.NoError(t, err)
	p.Close()

	cfg.OneShot = true // the encoders are freed before the UNet loads
	avail = uint64(need - b.encoders)
	p, err = Load(t.Context(), cfg)
	require.NoError(t, err)
	p.Close()
	avail--
	_, err = Load(t.Context(), cfg)
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)

	planMinChannels = oldMin // the tiny model itself is not judged
	p, err = Load(t.Context(), cfg)
	require.NoError(t, err)
	p.Close()
}

// A request whose images, or on the CPU whose denoising, cannot fit the
// available RAM is refused before any work, with the sizes; one that just
// fits runs.
func TestRequestInRAM(t *testing.T) {
	oldRAM, oldMin := availableRAM, planMinChannels
	t.Cleanup(func() { availableRAM, planMinChannels = oldRAM, oldMin })
	var avail int64
	availableRAM = func() (uint64, bool) { return uint64(avail), true }

	avail = 1 << 40
	p := loadTiny(t, "")
	var stages []string
	req := Request{Prompt: "x", Width: 64, Height: 64, Steps: 1, N: 2, Progress: func(e Progress) { stages = append(stages, e.Stage) }}
	avail = requestBytes(2, 64, 64) // the tiny UNet is loaded and not judged by its step
	_, err := p.Generate(t.Context(), req)
	require.NoError(t, err)

	avail--
	stages = nil
	_, err = p.Generate(t.Context(), req)
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)
	require.ErrorContains(t, err, "2 images of 64×64 need about ")
	require.ErrorContains(t, err, "try fewer images per call, a smaller size or closing other programs")
	require.Empty(t, stages, "refused before any work")

	// Judged as SDXL-sized: a step's least working memory beyond the compute
	// buffers already held, and the loop's keys and values.
	planMinChannels = 0
	b := p.weightBytes(p.policy)
	big := Request{Prompt: "x", Width: 1024, Height: 768, Steps: 1}
	need := requestBytes(1, 1024, 768) + b.loopKV + cpuStepBytes(1024, 768) - p.rt.Sched.BufferSize(p.rt.Device)
	avail = need - 1
	_, err = p.Generate(t.Context(), big)
	require.ErrorIs(t, err, ggml.ErrOutOfMemory)
	require.ErrorContains(t, err, "a 1024×768 image needs about "+ggml.HumanBytes(need))
	planMinChannels = oldMin

	// OneShot loads the UNet for each request: its weights count, and the
	// encoders Load left loaded, freed before it, leave their room.
	avail = 1 << 40
	one := loadTinyWith(t, "", func(c *Config) { c.OneShot = true })
	b = one.weightBytes(one.policy)
	req.N = 1
	for _, freed := range []int64{b.encoders, 0} { // the second request loads its encoders itself
		avail = requestBytes(1, 64, 64) + b.unet - freed - 1
		_, err = one.Generate(t.Context(), req)
		require.ErrorIs(t, err, ggml.ErrOutOfMemory)
		avail++
		_, err = one.Generate(t.Context(), req)
		require.NoError(t, err)
	}
}
