package randweights

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// bigSDXL returns a full-size random SDXL: $PHOTOMAKER_RANDOM_SDXL, the
// file `photomaker bench --random` caches, or a new one in a temporary
// folder (7 GB). Tests using it run only with PHOTOMAKER_BIG=1.
func bigSDXL(t *testing.T) string {
	if os.Getenv("PHOTOMAKER_BIG") != "1" {
		t.Skip("full-size test: set PHOTOMAKER_BIG=1 (needs ~7 GB of disk and ~12 GB of memory)")
	}
	if p := os.Getenv("PHOTOMAKER_RANDOM_SDXL"); p != "" {
		return p
	}
	if dir, err := os.UserCacheDir(); err == nil {
		p := filepath.Join(dir, "photomaker", "random", FileName("sdxl", "full", 1))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "sdxl.safetensors")
	require.NoError(t, WriteSDXL(t.Context(), p, 1, DefaultSDXL()))
	return p
}

// TestQuantizationQualityBig measures one UNet evaluation on full-size
// random weights at 256×256 with the weights stored as bf16, q8_0, q6_K, q5_K, q4_K and q5_0,
// against f16: relative L2 error of the noise prediction. The limits are
// issue #8's targets (bf16 is held to q8_0's, q6_K, q5_K and q5_0 to
// q4_K's).
//
// The result depends on how the random weights are drawn. Initialised as
// diffusers initialises a new UNet (Generation 2), on the 2-core dev
// machine (seed 1): bf16 0.18 % (its convolution kernels stay f16; 0.20–0.21 %
// while ggml's product rounded its activations to bf16), q8_0
// 0.51 % with its activations rounded to 8 bits (CPUs with VNNI, as ggml's
// q8_0 × q8_0: 0.52 %) and 0.38 % with 16 bits (AVX2 without VNNI), q4_K
// 3.54–3.58 % (input sensitivity: 0.1 % input noise → 0.11–0.125 %);
// session 31, with our integer products of each type: q6_K 0.95 %, q5_K
// 1.71 %, q5_0 2.70 %, q4_K 3.55 % (q4_0, not tested: 5.84 %).
// q4_K's rows that are not whole 256-blocks (640 wide and the like) take
// q8_0: with q5_0 there q4_K was off by 3.95 %, with q4_0 by 5.7 %. Opt-in
// quantized kernels (--quantize-convs: the deepest level's 3×3 resnet
// kernels as q8_0, 1×1 kernels as the chosen type) take q4_K to 3.78 %
// (5.15 % with the q5_0 fallback, whose 1×1 kernels lost the most).
// Generation 1 (every matrix N(0, 0.02²), 3×3 kernels four
// times PyTorch's scale) amplified weight noise about twice as much: q8_0
// 2.0 %, q4_K 20 %, spread over all layer groups.
func TestQuantizationQualityBig(t *testing.T) {
	path := bigSDXL(t)
	m, err := weights.Open(path)
	require.NoError(t, err)
	defer m.Close()

	const lw, lh = 32, 32 // 256×256 pixels
	r := rand.New(rand.NewPCG(1, 2))
	normal := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	in := unet.Inputs{Width: lw, Height: lh, Batch: 1, Sample: normal(4 * lw * lh), Timesteps: []float32{999},
		Context: normal(77 * 2048), TextEmbeds: normal(1280), TimeIDs: []float32{256, 256, 0, 0, 256, 256}}

	relErr := func(got, ref []float32) float64 {
		var diff, norm float64
		for i := range got {
			d := float64(got[i]) - float64(ref[i])
			diff += d * d
			norm += float64(ref[i]) * float64(ref[i])
		}
		return math.Sqrt(diff / norm)
	}
	// predict loads the UNet with weights of type typ and evaluates it on
	// in and, when perturbed is set, also on a copy of in whose sample
	// carries 0.1 % relative noise (how much this random network amplifies
	// a small input change: a floor for any quantization error).
	var sensitivity float64
	predict := func(typ ggml.Type, kernels, perturbed bool) []float32 {
		rt, err := nn.NewRuntime("cpu", 0)
		require.NoError(t, err)
		defer rt.Close()
		t0 := time.Now()
		u, err := unet.Load(context.Background(), rt, m.Tensors, "unet.", unet.Options{
			Policy: nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return typ }), QuantizeKernels: kernels})
		require.NoError(t, err)
		defer u.Close()
		t1 := time.Now()
		out, err := u.Predict(context.Background(), in)
		require.NoError(t, err)
		t.Logf("%s: load %.1fs, one UNet evaluation %.1fs", typ, t1.Sub(t0).Seconds(), time.Since(t1).Seconds())
		for _, v := range out {
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "%s output not finite", typ)
		}
		if perturbed {
			p := in
			p.Sample = append([]float32(nil), in.Sample...)
			noise := normal(len(p.Sample))
			for i := range p.Sample {
				p.Sample[i] += 1e-3 * noise[i] // the sample has unit RMS
			}
			po, err := u.Predict(context.Background(), p)
			require.NoError(t, err)
			sensitivity = relErr(po, out)
			t.Logf("%s: 0.1%% relative input noise changes the output by %.4f%%", typ, 100*sensitivity)
		}
		return out
	}
	ref := predict(ggml.TypeF16, false, true)
	var sq float64
	for _, v := range ref {
		sq += float64(v) * float64(v)
	}
	t.Logf("f16 output RMS %.4g", math.Sqrt(sq/float64(len(ref))))
	for _, tc := range []struct {
		typ     ggml.Type
		kernels bool // --quantize-convs
		limit   float64
	}{{ggml.TypeBF16, false, 0.01}, {ggml.TypeQ8_0, false, 0.01}, {ggml.TypeQ6_K, false, 0.05}, {ggml.TypeQ5_K, false, 0.05},
		{ggml.TypeQ4_K, false, 0.05}, {ggml.TypeQ4_K, true, 0.05}, {ggml.TypeQ5_0, false, 0.05}} {
		rel := relErr(predict(tc.typ, tc.kernels, false), ref)
		t.Logf("%s (quantized kernels: %v) vs f16: relative error %.4f%% (limit %.0f%%)", tc.typ, tc.kernels, 100*rel, 100*tc.limit)
		assert.LessOrEqual(t, rel, tc.limit, "%s", tc.typ)
	}
}
