package photomaker

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/models/vae"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/tools/randweights"
	"github.com/gophotomaker/photomaker/weights"
)

// TestComputeEstimatesBig re-measures the per-pixel compute constants the
// VRAM plan uses, on the full-size random SDXL that `photomaker bench
// --random` caches, with GPU-style attention (flash, f16 K/V), the CPU's
// least step memory (checkPlanInRAM), and a step's FLOPs against the
// issue's figure. Only with PHOTOMAKER_BIG=1 (about 6 GB of memory).
func TestComputeEstimatesBig(t *testing.T) {
	if os.Getenv("PHOTOMAKER_BIG") != "1" {
		t.Skip("full-size test: set PHOTOMAKER_BIG=1 (and PHOTOMAKER_RANDOM_SDXL, or run `photomaker bench --random` once)")
	}
	path := os.Getenv("PHOTOMAKER_RANDOM_SDXL")
	if path == "" {
		dir, err := os.UserCacheDir()
		require.NoError(t, err)
		path = filepath.Join(dir, "photomaker", "random", randweights.FileName("sdxl", "full", 1))
	}
	m, err := weights.Open(path)
	require.NoError(t, err)
	defer m.Close()
	f16, err := weightPolicy("f16")
	require.NoError(t, err)
	// The graphs a GPU computes: flash attention with f16 K/V, ggml's ops.
	gpuAttention := func(rt *nn.Runtime) {
		rt.Attn = nn.AttentionOptions{Flash: true, KVType: ggml.TypeF16}
		rt.CPUKernels = false
	}
	measureWith := func(attention func(*nn.Runtime), build func(rt *nn.Runtime) ([]int64, error)) []int64 {
		rt, err := nn.NewRuntime("cpu", 0)
		require.NoError(t, err)
		defer rt.Close()
		attention(rt)
		n, err := build(rt)
		require.NoError(t, err)
		return n
	}
	measure := func(build func(rt *nn.Runtime) (int64, error)) int64 {
		return measureWith(gpuAttention, func(rt *nn.Runtime) ([]int64, error) {
			n, err := build(rt)
			return []int64{n}, err
		})[0]
	}
	const lw = 128 // 1024×1024
	// unetSteps sizes a CFG step's compute at each latent side, and
	// counts the last one's arithmetic.
	var flops int64
	unetSteps := func(sides ...int) func(rt *nn.Runtime) ([]int64, error) {
		return func(rt *nn.Runtime) ([]int64, error) {
			u, err := unet.Load(context.Background(), rt, m.Tensors, "unet.", unet.Options{Policy: f16})
			if err != nil {
				return nil, err
			}
			defer u.Close()
			euler, err := sampling.New("euler", sampling.DefaultConfig(), 20, nil)
			if err != nil {
				return nil, err
			}
			var sizes []int64
			for _, side := range sides {
				loop, err := u.NewLoop(unet.LoopInputs{Width: side, Height: side, Latents: make([]float32, 4*side*side), Guidance: 5,
					Conditionings: []unet.Conditioning{{Context: make([]float32, 77*2048*2), Pooled: make([]float32, 1280*2), TimeIDs: make([]float32, 6*2)}},
					Steps:         sampling.LinearSteps(euler)})
				if err != nil {
					return nil, err
				}
				n, err := loop.Reserve()
				flops = loop.StepFLOPs()
				loop.Close()
				if err != nil {
					return nil, err
				}
				sizes = append(sizes, n)
			}
			return sizes, nil
		}
	}
	step := measureWith(gpuAttention, unetSteps(lw))[0]
	// The moonshot: 44 ms a CFG step at 1024² is about 309 TFLOP/s
	// for diffusers' UNet as a captured CUDA graph, so the step is about
	// 13.6 TFLOP of products.
	t.Logf("UNet CFG step at 1024²: %.2f TFLOP of products (flash attention)", float64(flops)/1e12)
	require.InEpsilon(t, 309e12*0.044, float64(flops), 0.05)
	gpuFLOPs := flops
	// With the CPU runtime's own attention: 1024² is the least per pixel
	// (smaller images compute their attention whole, larger ones in more
	// pieces), which checkPlanInRAM relies on.
	cpuSides := []int{64, 96, 128, 160, 256}
	cpuSteps := measureWith(func(*nn.Runtime) {}, unetSteps(append(cpuSides, lw)...))
	// Our attention kernel counts what flash attention does; the Winograd
	// convolutions (nn.Conv2D) multiply 4/9 as much as im2col.
	t.Logf("UNet CFG step at 1024² on the CPU: %.2f TFLOP of products", float64(flops)/1e12)
	require.Less(t, float64(flops), 0.9*float64(gpuFLOPs))
	require.Greater(t, float64(flops), 0.7*float64(gpuFLOPs))
	for i, side := range cpuSides {
		least := cpuStepBytes(8*side, 8*side)
		t.Logf("UNet CFG step at %d² with the CPU's attention: %s (least %s)", side*8, ggml.HumanBytes(cpuSteps[i]), ggml.HumanBytes(least))
		require.LessOrEqual(t, least, cpuSteps[i], "checkPlanInRAM would refuse a plan that fits")
		if side == lw {
			require.InEpsilon(t, float64(least), float64(cpuSteps[i]), 0.05)
		}
	}
	tile := measure(func(rt *nn.Runtime) (int64, error) {
		v, err := vae.Load(context.Background(), rt, m.Tensors, "vae.", f16)
		if err != nil {
			return 0, err
		}
		defer v.Close()
		v.PhaseUpsamplers = false // as on a GPU, which the plan is for
		g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
			return []*ggml.Tensor{v.Decode(c, c.InputF32(make([]float32, 4*autoTile*autoTile), autoTile, autoTile, 4, 1))}
		})
		if err != nil {
			return 0, err
		}
		defer g.Close()
		return g.Reserve()
	})
	t.Logf("UNet CFG step at 1024²: %s (plan %s); VAE tile of %d²: %s (plan %s)",
		ggml.HumanBytes(step), ggml.HumanBytes(lw*lw*unetStepBytesPerLatentPixel), autoTile,
		ggml.HumanBytes(tile), ggml.HumanBytes(autoTile*autoTile*vaeDecodeBytesPerLatentPixel))
	require.InEpsilon(t, float64(lw*lw*unetStepBytesPerLatentPixel), float64(step), 0.05)
	require.InEpsilon(t, float64(autoTile*autoTile*vaeDecodeBytesPerLatentPixel), float64(tile), 0.05)
}
