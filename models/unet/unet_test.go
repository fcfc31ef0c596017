package unet

import (
	"context"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/stretchr/testify/require"
)

// tinyUNet loads the tiny SDXL UNet (float32) once per test binary.
var tinyUNet = sync.OnceValues(func() (*UNet, error) {
	rt, err := nn.NewRuntime("cpu", 0)
	if err != nil {
		return nil, err
	}
	m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return Load(context.Background(), rt, m.Tensors, "unet.", Options{Policy: nn.AllF32})
})

func loadTiny(t testing.TB) *UNet {
	t.Helper()
	u, err := tinyUNet()
	require.NoError(t, err)
	return u
}

// goldenCase is a UNet golden from the reference kit. The inputs are shared
// by every case (unet:sample, ...); the references are spelled out here
// rather than read from cases.json so the test does not depend on the
// manifest's unrelated metadata.
type goldenCase struct {
	name     string
	timestep float32
	out      string // golden reference of the noise prediction
	adapter  string // PhotoMaker adapter whose LoRA is fused ("" for none)
}

var (
	noLoRACases = []goldenCase{
		{"unet.nolora.t999", 999, "unet:nolora.t999.out", ""},
		{"unet.nolora.t500", 500, "unet:nolora.t500.out", ""},
		{"unet.nolora.t1", 1, "unet:nolora.t1.out", ""},
	}
	loraCases = []goldenCase{
		{"unet.lora_v1_fused.t999", 999, "unet:lora_v1.t999.out", "photomaker/photomaker-v1-tiny.safetensors"},
		{"unet.lora_v1_fused.t500", 500, "unet:lora_v1.t500.out", "photomaker/photomaker-v1-tiny.safetensors"},
		{"unet.lora_v1_fused.t1", 1, "unet:lora_v1.t1.out", "photomaker/photomaker-v1-tiny.safetensors"},
		{"unet.lora_v2_fused.t500", 500, "unet:lora_v2.t500.out", "photomaker/photomaker-v2-tiny.safetensors"},
	}
	// intermediates of unet.nolora.t999: tap name → golden reference.
	intermediates = []string{"time_embedding", "add_embedding", "conv_in", "down_blocks.0", "down_blocks.1",
		"down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "conv_out"}
)

// inputs reads the golden inputs at the case's timestep.
func (gc goldenCase) inputs(t testing.TB) Inputs {
	t.Helper()
	sample := golden.Ref(t, "unet:sample")
	B := int(sample.Shape[0])
	in := Inputs{
		Width: int(sample.Shape[3]), Height: int(sample.Shape[2]), Batch: B,
		Sample:     sample.Data,
		Context:    golden.Ref(t, "unet:encoder_hidden_states").Data,
		TextEmbeds: golden.Ref(t, "unet:text_embeds").Data,
		TimeIDs:    golden.Ref(t, "unet:time_ids").Data,
	}
	for range B {
		in.Timesteps = append(in.Timesteps, gc.timestep)
	}
	return in
}

func TestInferTiny(t *testing.T) {
	u := loadTiny(t)
	cfg := u.Config()
	require.Equal(t, 4, cfg.InChannels)
	require.Equal(t, 4, cfg.OutChannels)
	require.Equal(t, []int{32, 64, 128}, cfg.BlockOutChannels)
	require.Equal(t, []int{2, 2, 2}, cfg.LayersPerBlock)
	require.Equal(t, [][]int{nil, {1, 1}, {2, 2}}, cfg.DownDepth)
	require.Equal(t, []int{2}, cfg.MidDepth)
	require.Equal(t, [][]int{{2, 2, 2}, {1, 1, 1}, nil}, cfg.UpDepth)
	require.Equal(t, 128, cfg.CrossAttentionDim)
	require.Equal(t, 32, cfg.TimeProjDim)
	require.Equal(t, 128, cfg.TimeEmbedDim)
	require.Equal(t, 256, cfg.AddEmbedInDim)
}

func TestGoldenNoLoRA(t *testing.T) {
	u := loadTiny(t)
	for _, gc := range noLoRACases {
		t.Run(gc.name, func(t *testing.T) {
			got, err := u.Predict(context.Background(), gc.inputs(t))
			require.NoError(t, err)
			golden.AssertClose(t, gc.name, got, golden.Ref(t, gc.out).Data, 1e-4, 1e-4)
		})
	}
}

// TestGoldenIntermediates compares every block's output at t=999.
func TestGoldenIntermediates(t *testing.T) {
	u := loadTiny(t)
	in := noLoRACases[0].inputs(t)
	s, ts, cs, te, ti, err := u.shapes(&in)
	require.NoError(t, err)
	addDim, err := u.checkInputs(s, ts, cs, te, ti)
	require.NoError(t, err)
	var names []string
	outs, err := u.rt.Run(context.Background(), func(g *ggml.Context) []*ggml.Tensor {
		var taps []*ggml.Tensor
		u.forward(g, g.InputF32(in.Sample, s[:]...), g.InputF32(in.Timesteps, ts[0]), encoderStates{g.InputF32(in.Context, cs[:3]...)},
			g.InputF32(in.TextEmbeds, te[:2]...), g.InputF32(in.TimeIDs, ti[:2]...), addDim,
			func(name string, x *ggml.Tensor) { names = append(names, name); taps = append(taps, x) })
		return taps
	})
	require.NoError(t, err)
	got := map[string][]float32{}
	for i, n := range names {
		got[n] = outs[i].Data
	}
	for _, k := range intermediates {
		v, ok := got[k]
		require.True(t, ok, "no tap for %s", k)
		golden.AssertClose(t, k, v, golden.Ref(t, "unet:nolora.t999.act."+k).Data, 1e-4, 1e-4)
	}
}

// TestFlashMatches checks that the flash-attention path gives the same result.
func TestFlashMatches(t *testing.T) {
	u := loadTiny(t)
	gc := noLoRACases[1]
	old := u.rt.Attn
	defer func() { u.rt.Attn = old }()
	u.rt.Attn = nn.AttentionOptions{Flash: true, KVType: ggml.TypeF32}
	got, err := u.Predict(context.Background(), gc.inputs(t))
	require.NoError(t, err)
	golden.AssertClose(t, "flash "+gc.name, got, golden.Ref(t, gc.out).Data, 1e-4, 1e-4)
}

func TestGoldenLoRAFused(t *testing.T) {
	for _, tc := range loraCases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(golden.Path(tc.adapter)); err != nil {
				t.Skipf("%s not present", tc.adapter)
			}
			m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
			require.NoError(t, err)
			defer m.Close()
			pm, err := weights.Open(golden.Path(tc.adapter))
			require.NoError(t, err)
			defer pm.Close()
			require.NotNil(t, pm.LoRA)
			n, err := weights.MergeLoRA(m.Tensors, pm.LoRA, 1)
			require.NoError(t, err)
			require.Positive(t, n)

			rt, err := nn.NewRuntime("cpu", 0)
			require.NoError(t, err)
			defer rt.Close()
			u, err := Load(context.Background(), rt, m.Tensors, "unet.", Options{Policy: nn.AllF32})
			require.NoError(t, err)
			defer u.Close()
			got, err := u.Predict(context.Background(), tc.inputs(t))
			require.NoError(t, err)
			golden.AssertClose(t, tc.name, got, golden.Ref(t, tc.out).Data, 1e-4, 1e-4)
		})
	}
}

func BenchmarkUNetTiny(b *testing.B) {
	u := loadTiny(b)
	in := noLoRACases[1].inputs(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := u.Predict(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStepperTiny is BenchmarkUNetTiny with the graph built once, as
// the sampler loop runs it: the difference is the per-step cost of building
// and allocating the graph.
func BenchmarkStepperTiny(b *testing.B) {
	u := loadTiny(b)
	in := noLoRACases[1].inputs(b)
	st, err := u.NewStepper(in)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for b.Loop() {
		if _, err := st.Predict(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStepperReusesGraph evaluates the golden cases through one Stepper,
// back to back (one allocation, new values per call) and then interleaved
// with other graphs that take its buffers away, and requires the bits
// Predict gives.
func TestStepperReusesGraph(t *testing.T) {
	u := loadTiny(t)
	st, err := u.NewStepper(noLoRACases[0].inputs(t))
	require.NoError(t, err)
	defer st.Close()
	var stepped [][]float32
	for _, gc := range noLoRACases {
		got, err := st.Predict(context.Background(), gc.inputs(t))
		require.NoError(t, err)
		stepped = append(stepped, got)
	}
	for i, gc := range noLoRACases {
		want, err := u.Predict(context.Background(), gc.inputs(t))
		require.NoError(t, err)
		require.Equal(t, want, stepped[i], gc.name)
		got, err := st.Predict(context.Background(), gc.inputs(t))
		require.NoError(t, err)
		require.Equal(t, want, got, "%s after another graph", gc.name)
	}
	in := noLoRACases[0].inputs(t)
	in.Width *= 2 // other shape
	in.Sample = append(in.Sample, in.Sample...)
	_, err = st.Predict(context.Background(), in)
	var ie *InputError
	require.ErrorAs(t, err, &ie)
}

// TestQuantizedUNet stores the tiny UNet as q8_0 with QuantizeKernels: the
// deepest level's 3×3 kernels quantize (flattened; never below q8_0), the
// others stay f16, 1×1 kernels quantize, and the prediction stays close to
// the golden. Without the option every kernel stays f16.
func TestQuantizedUNet(t *testing.T) {
	m, rt := openTinyOnCPU(t)
	q8 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ8_0 })
	policy, err := StoragePolicy(m.Tensors, "unet.", q8, true)
	require.NoError(t, err)
	plain, err := StoragePolicy(m.Tensors, "unet.", q8, false)
	require.NoError(t, err)
	get := func(n string) *weights.Tensor { x, ok := m.Tensors.Get(n); require.True(t, ok, n); return x }
	q4 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ4_0 })
	p4, err := StoragePolicy(m.Tensors, "unet.", q4, true)
	require.NoError(t, err)
	require.Equal(t, ggml.TypeQ8_0, p4("unet.mid_block.resnets.0.conv1.weight", get("unet.mid_block.resnets.0.conv1.weight")))
	require.Equal(t, ggml.TypeQ4_0, p4("unet.down_blocks.1.resnets.0.conv_shortcut.weight", get("unet.down_blocks.1.resnets.0.conv_shortcut.weight")))
	for name, want := range map[string]ggml.Type{
		"unet.mid_block.resnets.0.conv1.weight":             ggml.TypeQ8_0, // 128 channels: the deepest level
		"unet.up_blocks.0.resnets.0.conv1.weight":           ggml.TypeQ8_0,
		"unet.down_blocks.0.resnets.0.conv1.weight":         ggml.TypeF16,  // the highest resolution
		"unet.up_blocks.0.upsamplers.0.conv.weight":         ggml.TypeF16,  // runs at the next resolution
		"unet.down_blocks.1.resnets.0.conv_shortcut.weight": ggml.TypeQ8_0, // 1×1
		"unet.conv_in.weight":                               ggml.TypeF16,
	} {
		require.Equal(t, want, policy(name, get(name)), name)
		require.Equal(t, ggml.TypeF16, plain(name, get(name)), name)
	}
	require.Equal(t, ggml.TypeQ8_0, plain("unet.mid_block.attentions.0.proj_in.weight", get("unet.mid_block.attentions.0.proj_in.weight")))
	u, err := Load(context.Background(), rt, m.Tensors, "unet.", Options{Policy: q8, QuantizeKernels: true})
	require.NoError(t, err)
	defer u.Close()
	// What planning estimates is what Load allocates, kernel layout included.
	require.Equal(t, nn.EstimateBytes(weightSet(t, m.Tensors, policy), "unet.", policy), u.w.Allocated())
	u2, err := Load(context.Background(), rt, m.Tensors, "unet.", Options{Policy: q8})
	require.NoError(t, err)
	require.Equal(t, nn.EstimateBytes(weightSet(t, m.Tensors, plain), "unet.", plain), u2.w.Allocated())
	require.Greater(t, u2.w.Allocated(), u.w.Allocated())
	u2.Close()
	rel := goldenError(t, u)
	t.Logf("q8_0 tiny UNet vs f32 golden: relative error %.3g", rel)
	require.Less(t, rel, 0.05)
}

// openTinyOnCPU opens the tiny SDXL and a CPU runtime for one test.
func openTinyOnCPU(t *testing.T) (*weights.Model, *nn.Runtime) {
	m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	return m, rt
}

// goldenError is the relative L2 error of u's prediction for one of the
// kit's cases against its f32 golden.
func goldenError(t *testing.T, u *UNet) float64 {
	gc := noLoRACases[1]
	got, err := u.Predict(context.Background(), gc.inputs(t))
	require.NoError(t, err)
	want := golden.Ref(t, gc.out).Data
	var num, den float64
	for i := range got {
		d := float64(got[i] - want[i])
		num, den = num+d*d, den+float64(want[i])*float64(want[i])
	}
	return math.Sqrt(num / den)
}

// TestBF16UNet stores the tiny UNet as bf16 (--type bf16): matrices take
// bf16, convolution kernels f16 (ggml's im2col has no bf16 columns), as
// planned, and the prediction stays close to the f32 golden.
func TestBF16UNet(t *testing.T) {
	m, rt := openTinyOnCPU(t)
	bf16 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeBF16 })
	u, err := Load(context.Background(), rt, m.Tensors, "unet.", Options{Policy: bf16})
	require.NoError(t, err)
	defer u.Close()
	require.Equal(t, ggml.TypeBF16, u.m.Mid.Attentions[0].Blocks[0].Attn1.ToQKV.Weight.Type())
	require.Equal(t, ggml.TypeF16, u.m.Mid.Resnets[0].Conv1.Weight.Type())
	require.Equal(t, nn.EstimateBytes(weightSet(t, m.Tensors, bf16), "unet.", bf16), u.w.Allocated())
	rel := goldenError(t, u)
	t.Logf("bf16 tiny UNet vs f32 golden: relative error %.3g", rel)
	require.Less(t, rel, 0.02)
}

// weightSet is the set Load binds (WeightSet) on the CPU: what estimates
// must size.
func weightSet(t *testing.T, set *weights.Set, policy nn.TypePolicy) *weights.Set {
	t.Helper()
	out, err := WeightSet(set, "unet.", policy, false)
	require.NoError(t, err)
	return out
}

// For the flash kernel's f16 keys and values, self-attention casts its
// fused projection once, whole, and hands the kernel views of it; other
// options split keys and values as nn.SplitKV does (a cast of each on a
// GPU without the fused product's cast, none in f32).
func TestSelfAttentionCastsOnce(t *testing.T) {
	u := loadSmall(t, smallSpec())
	block := &u.m.Mid.Attentions[0].Blocks[0]
	casts := func(opt nn.AttentionOptions) (n int, shapes [][4]int64) {
		c := ggml.NewContext(4096, 4096)
		defer c.Free()
		out := block.Attn1.Forward(c, &u.cfg, opt, c.NewTensor(ggml.TypeF32, block.Attn1.ToQKV.Weight.Ne(0), 16, 2))
		g := c.NewGraph(4096)
		g.Expand(out)
		for i := range g.Nodes() {
			if nd := g.Node(i); nd.Op() == "CPY" && nd.Type() == ggml.TypeF16 {
				n++
				shapes = append(shapes, nd.Shape())
			}
		}
		return n, shapes
	}
	n, shapes := casts(nn.AttentionOptions{Flash: true, KVType: ggml.TypeF16})
	require.Equal(t, 1, n, "one cast")
	require.Equal(t, block.Attn1.ToQKV.Weight.Ne(1), shapes[0][0], "of query, key and value together")
	n, _ = casts(nn.AttentionOptions{Flash: true, KVType: ggml.TypeF16, SoftmaxUpTo: 1 << 20})
	require.Equal(t, 2, n, "the softmax path's split: keys and values cast apart")
	n, _ = casts(nn.AttentionOptions{Flash: true, KVType: ggml.TypeF32})
	require.Zero(t, n)
}
