package unet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
	"github.com/stretchr/testify/require"
)

// genSpec describes a random SDXL-style UNet for genUNet.
type genSpec struct {
	in, out      int
	channels     []int
	layers       int
	attention    []bool // per level
	depth        int    // transformer blocks per attention
	cross        int    // encoder_hidden_states width
	tproj, temb  int
	pooled, tdim int // text_embeds width and per-time-id width (6 ids)
}

func smallSpec() genSpec {
	return genSpec{in: 4, out: 4, channels: []int{32, 64}, layers: 1, attention: []bool{false, true}, depth: 1,
		cross: 96, tproj: 32, temb: 128, pooled: 48, tdim: 16}
}

// genUNet writes random weights under diffusers' UNet2DConditionModel names
// ("unet." + key), following diffusers' own channel bookkeeping. edit (may
// be nil) may change a shape or drop the tensor by returning nil.
func genUNet(t testing.TB, s genSpec, edit func(name string, shape []int64) []int64) *weights.Set {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	set := weights.NewSet()
	add := func(name string, shape ...int64) {
		if edit != nil {
			if shape = edit(name, shape); shape == nil {
				return
			}
		}
		n, fan := int64(1), int64(1)
		for i, d := range shape {
			n *= d
			if i > 0 {
				fan *= d
			}
		}
		seed := r.Uint64()
		isScale := len(shape) == 1 && strings.HasSuffix(name, ".weight")
		load := func() ([]byte, error) { // generated on demand, so shape-only tests stay cheap
			r := rand.New(rand.NewPCG(seed, 1))
			v := make([]float32, n)
			for i := range v {
				switch {
				case isScale:
					v[i] = 1 + 0.1*float32(r.NormFloat64()) // norm scales
				case len(shape) == 1:
					v[i] = 0.05 * float32(r.NormFloat64())
				default:
					v[i] = float32(r.NormFloat64() / math.Sqrt(float64(fan)))
				}
			}
			return ggml.F32Bytes(v), nil
		}
		require.NoError(t, set.Add(weights.NewTensor("unet."+name, safetensors.F32, shape, "mem", load)))
	}
	linear := func(name string, in, out int, bias bool) {
		add(name+".weight", int64(out), int64(in))
		if bias {
			add(name+".bias", int64(out))
		}
	}
	conv := func(name string, in, out, k int) {
		add(name+".weight", int64(out), int64(in), int64(k), int64(k))
		add(name+".bias", int64(out))
	}
	norm := func(name string, ch int) {
		add(name+".weight", int64(ch))
		add(name+".bias", int64(ch))
	}
	resnet := func(name string, in, out int) {
		norm(name+".norm1", in)
		conv(name+".conv1", in, out, 3)
		linear(name+".time_emb_proj", s.temb, out, true)
		norm(name+".norm2", out)
		conv(name+".conv2", out, out, 3)
		if in != out {
			conv(name+".conv_shortcut", in, out, 1)
		}
	}
	transformer := func(name string, ch int) {
		norm(name+".norm", ch)
		linear(name+".proj_in", ch, ch, true)
		for k := 0; k < s.depth; k++ {
			b := fmt.Sprintf("%s.transformer_blocks.%d.", name, k)
			norm(b+"norm1", ch)
			norm(b+"norm2", ch)
			norm(b+"norm3", ch)
			for a, ctx := range map[string]int{"attn1": ch, "attn2": s.cross} {
				linear(b+a+".to_q", ch, ch, false)
				linear(b+a+".to_k", ctx, ch, false)
				linear(b+a+".to_v", ctx, ch, false)
				linear(b+a+".to_out.0", ch, ch, true)
			}
			linear(b+"ff.net.0.proj", ch, 8*ch, true)
			linear(b+"ff.net.2", 4*ch, ch, true)
		}
		linear(name+".proj_out", ch, ch, true)
	}

	ch, L := s.channels, len(s.channels)
	conv("conv_in", s.in, ch[0], 3)
	linear("time_embedding.linear_1", s.tproj, s.temb, true)
	linear("time_embedding.linear_2", s.temb, s.temb, true)
	linear("add_embedding.linear_1", s.pooled+6*s.tdim, s.temb, true)
	linear("add_embedding.linear_2", s.temb, s.temb, true)
	out := ch[0]
	for i := 0; i < L; i++ {
		in := out
		out = ch[i]
		for j := 0; j < s.layers; j++ {
			rin := out
			if j == 0 {
				rin = in
			}
			resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), rin, out)
			if s.attention[i] {
				transformer(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), out)
			}
		}
		if i < L-1 {
			conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), out, out, 3)
		}
	}
	top := ch[L-1]
	resnet("mid_block.resnets.0", top, top)
	transformer("mid_block.attentions.0", top)
	resnet("mid_block.resnets.1", top, top)
	prevOut := top
	for u := 0; u < L; u++ {
		level := L - 1 - u
		outCh, inCh := ch[level], ch[max(level-1, 0)]
		for j := 0; j < s.layers+1; j++ {
			skip := outCh
			if j == s.layers {
				skip = inCh
			}
			rin := outCh
			if j == 0 {
				rin = prevOut
			}
			resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", u, j), rin+skip, outCh)
			if s.attention[level] {
				transformer(fmt.Sprintf("up_blocks.%d.attentions.%d", u, j), outCh)
			}
		}
		if u < L-1 {
			conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", u), outCh, outCh, 3)
		}
		prevOut = outCh
	}
	norm("conv_norm_out", ch[0])
	conv("conv_out", ch[0], s.out, 3)
	return set
}

func randInputs(s genSpec, w, h, b int) Inputs {
	r := rand.New(rand.NewPCG(3, 3))
	randv := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	in := Inputs{Width: w, Height: h, Batch: b, Sample: randv(w * h * s.in * b), Context: randv(b * 77 * s.cross),
		TextEmbeds: randv(b * s.pooled)}
	for i := 0; i < b; i++ {
		in.Timesteps = append(in.Timesteps, float32(100+400*i))
		in.TimeIDs = append(in.TimeIDs, float32(8*h), float32(8*w), 0, 0, float32(8*h), float32(8*w))
	}
	return in
}

// TestInferOtherShape loads a differently shaped UNet and runs it.
func TestInferOtherShape(t *testing.T) {
	s := smallSpec()
	set := genUNet(t, s, nil)
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	defer rt.Close()
	u, err := Load(context.Background(), rt, set, "unet.", Options{})
	require.NoError(t, err)
	defer u.Close()
	cfg := u.Config()
	require.Equal(t, []int{32, 64}, cfg.BlockOutChannels)
	require.Equal(t, []int{1, 1}, cfg.LayersPerBlock)
	require.Equal(t, [][]int{nil, {1}}, cfg.DownDepth)
	require.Equal(t, []int{1}, cfg.MidDepth)
	require.Equal(t, [][]int{{1, 1}, nil}, cfg.UpDepth)
	require.Equal(t, 96, cfg.CrossAttentionDim)
	require.Equal(t, 32, cfg.TimeProjDim)
	require.Equal(t, 128, cfg.TimeEmbedDim)
	require.Equal(t, 48+6*16, cfg.AddEmbedInDim)

	// A non-square batch of two; each element must equal its own B=1 run.
	in := randInputs(s, 12, 8, 2)
	got, err := u.Predict(context.Background(), in)
	require.NoError(t, err)
	require.Len(t, got, 12*8*4*2)
	for _, v := range got {
		require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
	}
	one := Inputs{Width: 12, Height: 8, Batch: 1, Sample: in.Sample[12*8*4:], Timesteps: in.Timesteps[1:],
		Context: in.Context[77*96:], TextEmbeds: in.TextEmbeds[48:], TimeIDs: in.TimeIDs[6:]}
	single, err := u.Predict(context.Background(), one)
	require.NoError(t, err)
	for i, v := range single {
		require.InDelta(t, v, got[12*8*4+i], 1e-5)
	}
}

// TestInferSDXLShapes checks that real SDXL base shapes are understood
// (shapes only: the tensors are never generated).
func TestInferSDXLShapes(t *testing.T) {
	s := genSpec{in: 4, out: 4, channels: []int{320, 640, 1280}, layers: 2, attention: []bool{false, true, true}, depth: 2,
		cross: 2048, tproj: 320, temb: 1280, pooled: 1280, tdim: 256}
	cfg, err := Infer(genUNet(t, s, nil), "unet.")
	require.NoError(t, err)
	require.Equal(t, []int{320, 640, 1280}, cfg.BlockOutChannels)
	require.Equal(t, [][]int{nil, {2, 2}, {2, 2}}, cfg.DownDepth)
	require.Equal(t, 2048, cfg.CrossAttentionDim)
	require.Equal(t, 2816, cfg.AddEmbedInDim)
	require.Equal(t, 1280, cfg.TimeEmbedDim)
	require.Equal(t, 320, cfg.TimeProjDim)
	require.Equal(t, 4, cfg.Factor())
}

func TestInferRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec func(*genSpec)
		edit func(name string, shape []int64) []int64
		want string
	}{
		{name: "inpaint conv_in", edit: func(n string, s []int64) []int64 {
			if n == "conv_in.weight" {
				return []int64{32, 9, 3, 3}
			}
			return s
		}, want: "inpainting"},
		{name: "missing to_v", edit: func(n string, s []int64) []int64 {
			if n == "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight" {
				return nil
			}
			return s
		}, want: "missing weight"},
		{name: "inconsistent context width", edit: func(n string, s []int64) []int64 {
			if n == "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight" {
				return []int64{s[0], 80}
			}
			return s
		}, want: "to_k.weight has shape [64 80]"},
		{name: "no add_embedding", edit: func(n string, s []int64) []int64 {
			if n == "add_embedding.linear_1.weight" {
				return nil
			}
			return s
		}, want: "not an SDXL UNet"},
		{name: "channels not a multiple of 32", spec: func(s *genSpec) { s.channels = []int{48, 64} }, want: "not a multiple of 32"},
		{name: "channels not a multiple of the head width", spec: func(s *genSpec) { s.channels = []int{32, 96} }, want: "not a multiple of 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smallSpec()
			if tc.spec != nil {
				tc.spec(&s)
			}
			set := genUNet(t, s, tc.edit)
			_, err := Infer(set, "unet.")
			require.ErrorIs(t, err, ErrUnsupported)
			require.ErrorContains(t, err, tc.want)
		})
	}
	t.Run("unexpected tensor", func(t *testing.T) {
		set := genUNet(t, smallSpec(), nil)
		b := ggml.F32Bytes(make([]float32, 4))
		require.NoError(t, set.Add(weights.NewTensor("unet.class_embedding.linear_1.weight", safetensors.F32, []int64{2, 2}, "mem", func() ([]byte, error) { return b, nil })))
		_, err := Infer(set, "unet.")
		require.ErrorIs(t, err, ErrUnsupported)
		require.ErrorContains(t, err, "unexpected tensor unet.class_embedding")
	})
}

// loadSmall loads a generated UNet of spec s on the CPU for the test.
func loadSmall(t *testing.T, s genSpec) *UNet {
	t.Helper()
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	u, err := Load(context.Background(), rt, genUNet(t, s, nil), "unet.", Options{})
	require.NoError(t, err)
	t.Cleanup(u.Close)
	return u
}

// Sides that are not a multiple of the UNet's downscale (SDXL at 1024×680
// has 85 latent rows) work as in diffusers: the upsamplers resize to the
// skip connection's size.
func TestOddLatentSize(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	in := randInputs(s, 7, 5, 1)
	got, err := u.Predict(context.Background(), in)
	require.NoError(t, err)
	require.Len(t, got, 7*5*4)
	for _, v := range got {
		require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
	}
}

func TestBadInputs(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	for _, tc := range []struct {
		name string
		mod  func(*Inputs)
	}{
		{"zero width", func(in *Inputs) { in.Width, in.Sample = 0, nil }},
		{"8 channels", func(in *Inputs) { in.Sample = append(in.Sample, in.Sample...) }},
		{"timesteps", func(in *Inputs) { in.Timesteps = []float32{1, 2} }},
		{"context width", func(in *Inputs) { in.Context = in.Context[:77*80] }},
		{"text_embeds width", func(in *Inputs) { in.TextEmbeds = in.TextEmbeds[:47] }},
		{"time ids", func(in *Inputs) { in.TimeIDs = in.TimeIDs[:5] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := randInputs(s, 8, 8, 1)
			tc.mod(&in)
			_, err := u.Predict(context.Background(), in)
			var ie *InputError
			require.True(t, errors.As(err, &ie), "got %v", err)
		})
	}
}
