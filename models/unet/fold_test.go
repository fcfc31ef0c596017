package unet

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// The graph a GPU runs (layer norms folded into the products after them by
// foldNorms, a resnet's time embedding added with its first convolution's
// bias) predicts what the CPU's graph with our kernels does: on the CPU's
// ggml ops, and on the GPU (CUDA when a backend library is found, else the
// virtual GPU), where the fold writes into weights in device memory. The
// kit's tiny UNet has diffusers' initial norms (γ = 1, β = 0), which
// folding leaves as they are: this one's are random.
func TestGPUGraphPredictsAsCPUKernels(t *testing.T) {
	s := smallSpec()
	set := genUNet(t, s, nil)
	r := rand.New(rand.NewPCG(5, 7))
	norms := 0
	for _, name := range set.Names() {
		if !strings.Contains(name, ".transformer_blocks.") || !strings.Contains(name, ".norm") {
			continue
		}
		old, _ := set.Get(name)
		v := make([]byte, 4*old.Elements())
		for i := 0; i < len(v); i += 4 {
			x := 0.3 * r.NormFloat64()
			if strings.HasSuffix(name, ".weight") {
				x = 1 + 0.5*r.NormFloat64()
			}
			binary.LittleEndian.PutUint32(v[i:], math.Float32bits(float32(x)))
		}
		set.Replace(name, weights.NewTensor(name, safetensors.F32, old.Shape, "", func() ([]byte, error) { return v, nil }))
		norms++
	}
	require.Positive(t, norms)
	in := randInputs(s, 8, 6, 2)
	predict := func(device string, cpuKernels bool, policy nn.TypePolicy) ([]float32, *UNet) {
		rt, err := nn.NewRuntime(device, 0)
		require.NoError(t, err)
		t.Cleanup(rt.Close)
		rt.CPUKernels = cpuKernels
		rt.Attn.KVType = ggml.TypeF32 // f16 keys and values would hide what is compared
		u, err := Load(context.Background(), rt, set, "unet.", Options{Policy: policy})
		require.NoError(t, err)
		t.Cleanup(u.Close)
		out, err := u.Predict(context.Background(), in)
		require.NoError(t, err)
		return out, u
	}
	f16 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeF16 })
	gpu, virtual := "auto", false
	if dev, err := ggml.FindDevice("auto"); err != nil || dev.Type == ggml.DeviceCPU {
		ggml.RegisterVirtualGPU(1 << 30)
		gpu, virtual = "vgpu", true
	}
	for _, tc := range []struct {
		device string
		policy nn.TypePolicy
		bound  float64
	}{
		{"cpu", nil, 1e-5},
		{gpu, nil, map[bool]float64{true: 1e-5, false: 3e-3}[virtual]}, // CUDA's f32 products run on TF32
		// The scaled weights rounded to f16 again; the virtual GPU over an
		// fp16 ARM CPU sums f16 products in f16 (ggml's kernels there).
		{gpu, f16, map[bool]float64{true: 3e-2, false: 3e-3}[virtual && ggml.CPUSumsF16()]},
	} {
		want, plain := predict("cpu", true, tc.policy)
		require.NotNil(t, plain.m.Mid.Attentions[0].Blocks[0].Norm3, "our CPU kernels apply the norms")
		require.Nil(t, plain.m.Mid.Attentions[0].Blocks[0].Attn1.ToQKV.Bias)
		got, folded := predict(tc.device, false, tc.policy)
		block := folded.m.Mid.Attentions[0].Blocks[0]
		require.Nil(t, block.Norm1, "folded")
		require.NotNil(t, block.Attn1.ToQKV.Bias, "the query's bias from the folded shift")
		var num, den float64
		for i := range want {
			d := float64(got[i] - want[i])
			num, den = num+d*d, den+float64(want[i])*float64(want[i])
		}
		rel := math.Sqrt(num / den)
		t.Logf("%s, %s weights: folded vs unfolded prediction, relative error %.2g", folded.rt.Device.Dev.Name, block.Attn1.ToQKV.Weight.Type(), rel)
		require.Less(t, rel, tc.bound)
	}
}

// Quantized products keep their norms (scaling their columns would change
// the quantization error) and still take one fused self-attention product;
// float ones get the biases their norms' shifts fold into.
func TestWeightSet(t *testing.T) {
	m, _ := openTinyOnCPU(t)
	const block = "unet.mid_block.attentions.0.transformer_blocks.0."
	has := func(set *weights.Set, name string) bool { _, ok := set.Get(block + name); return ok }
	q8 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ8_0 })
	for _, tc := range []struct {
		policy     nn.TypePolicy
		fold, bias bool
	}{{q8, true, false}, {nil, true, true}, {nil, false, false}} {
		set, err := WeightSet(m.Tensors, "unet.", tc.policy, tc.fold)
		require.NoError(t, err)
		require.True(t, has(set, "attn1.to_qkv.weight"))
		require.True(t, has(set, "norm1.weight"))
		require.False(t, has(set, "attn1.to_q.weight"))
		require.Equal(t, tc.bias, has(set, "attn1.to_qkv.bias"))
		require.Equal(t, tc.bias, has(set, "attn2.to_q.bias"))
		qkv, _ := set.Get(block + "attn1.to_qkv.weight")
		q, _ := m.Tensors.Get(block + "attn1.to_q.weight")
		require.Equal(t, []int64{3 * q.Shape[0], q.Shape[1]}, qkv.Shape)
		ff, _ := set.Get(block + "ff.net.0.proj.weight")
		plain, _ := m.Tensors.Get(block + "ff.net.0.proj.weight")
		spare := map[bool]int64{true: biasColumns}[tc.bias]
		require.Equal(t, []int64{plain.Shape[0], plain.Shape[1] + spare}, ff.Shape, "room for the bias")
	}
}

// $PHOTOMAKER_UNFOLDED=1 keeps the norms on a GPU (for timing both graphs).
func TestUnfoldedByEnv(t *testing.T) {
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	defer rt.Close()
	rt.CPUKernels = false // the graphs a GPU runs
	require.True(t, FoldsNorms(rt, false))
	require.False(t, FoldsNorms(rt, true), "streamed weights")
	t.Setenv("PHOTOMAKER_UNFOLDED", "1")
	require.False(t, FoldsNorms(rt, false))
}
