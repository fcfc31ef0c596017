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
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// randomNormsUNet is a small random UNet whose transformer blocks' layer
// norms have random scales and shifts (the kit's are γ = 1, β = 0, which
// folding leaves as they are).
func randomNormsUNet(t *testing.T, s genSpec) *weights.Set {
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
	return set
}

// The graph a GPU runs (layer norms folded into the products after them by
// foldBlock, a resnet's time embedding added with its first convolution's
// bias) predicts what the CPU's graph with our kernels does: on the CPU's
// ggml ops, and on the GPU (CUDA when a backend library is found, else the
// virtual GPU). The
// kit's tiny UNet has diffusers' initial norms (γ = 1, β = 0), which
// folding leaves as they are: this one's are random.
func TestGPUGraphPredictsAsCPUKernels(t *testing.T) {
	s := smallSpec()
	set := randomNormsUNet(t, s)
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
	gpu, virtual := gpuOrVirtual()
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

// gpuOrVirtual names the GPU to test on: a real one when a backend library
// is found, else the virtual GPU (the CPU's ops behind a GPU's placement).
func gpuOrVirtual() (device string, virtual bool) {
	if dev, err := ggml.FindDevice("auto"); err == nil && dev.Type != ggml.DeviceCPU {
		return "auto", false
	}
	ggml.RegisterVirtualGPU(1 << 30)
	return "vgpu", true
}

// The feed-forward's folded weight is W·diag(γ) with the bias b + W·β in
// its spare columns; stored as f16, the first holds the bias rounded and
// the second what rounding lost, so that the two sum to the bias at f32's
// precision, not f16's.
func TestFoldKeepsTheFeedForwardBias(t *testing.T) {
	set := randomNormsUNet(t, smallSpec())
	f16 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeF16 })
	folded, err := WeightSet(set, "unet.", f16, true)
	require.NoError(t, err)
	const block = "unet.mid_block.attentions.0.transformer_blocks.0."
	read := func(s *weights.Set, name string) ([]float32, []int64) {
		t.Helper()
		x, ok := s.Get(block + name)
		require.True(t, ok, name)
		v, err := x.Float32()
		require.NoError(t, err)
		return v, x.Shape
	}
	w, shape := read(set, "ff.net.0.proj.weight")
	b, _ := read(set, "ff.net.0.proj.bias")
	gamma, _ := read(set, "norm3.weight")
	beta, _ := read(set, "norm3.bias")
	got, gotShape := read(folded, "ff.net.0.proj.weight")
	rows, in := int(shape[0]), int(shape[1])
	require.Equal(t, []int64{shape[0], shape[1] + biasColumns}, gotShape)
	var rounded, kept, norm float64 // squared sums over the rows
	for r := range rows {
		want := float64(b[r])
		for c := range in {
			want += float64(w[r*in+c]) * float64(beta[c])
			require.InDelta(t, w[r*in+c]*gamma[c], got[r*(in+biasColumns)+c], 1e-6)
		}
		spare := got[r*(in+biasColumns)+in:][:biasColumns]
		require.Equal(t, spare[0], half.F16ToF32(half.F32ToF16(spare[0])), "the bias rounded to f16")
		low := float64(half.F16ToF32(half.F32ToF16(spare[1]))) // as stored
		rounded += math.Pow(float64(spare[0])-want, 2)
		kept += math.Pow(float64(spare[0])+low-want, 2)
		norm += want * want
		require.Equal(t, []float32{0, 0, 0, 0, 0, 0}, spare[2:])
	}
	rounded, kept = math.Sqrt(rounded/norm), math.Sqrt(kept/norm)
	t.Logf("the bias in f16: relative error %.2g; with the second column %.2g", rounded, kept)
	require.Greater(t, rounded, 1e-4, "f16 alone loses bits")
	require.Less(t, kept, 1e-6)
}

// Quantized products keep their norms (scaling their columns would change
// the quantization error) and still take one fused self-attention product;
// float ones take their norms in (the norms are gone) and get the biases
// their norms' shifts fold into.
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
		for _, norm := range []string{"norm1.weight", "norm2.bias", "norm3.weight", "ff.net.0.proj.bias"} {
			require.Equal(t, !tc.bias, has(set, norm), norm)
		}
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
