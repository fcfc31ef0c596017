package vae

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
	"github.com/stretchr/testify/require"
)

func newRuntime(t *testing.T) *nn.Runtime {
	t.Helper()
	// One thread: the shared 2-core test machine is oversubscribed, and
	// ggml's spinning barriers then cost far more than they win.
	rt, err := nn.NewRuntime("cpu", 1)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	return rt
}

// loadTiny loads the reference kit's tiny SDXL VAE.
func loadTiny(t *testing.T, rt *nn.Runtime, policy nn.TypePolicy) *VAE {
	t.Helper()
	m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	v, err := Load(context.Background(), rt, m.Tensors, "vae.", policy)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

// goldenLatents returns the vae.decode case's latents divided by the
// scaling factor, as the reference call does.
func goldenLatents(t *testing.T) (lat []float32, want golden.Tensor) {
	cs := golden.FindCase(t, "vae.decode")
	in := golden.Ref(t, golden.String(t, cs.Inputs["latents"]))
	require.Equal(t, []int64{1, 4, 16, 16}, in.Shape)
	lat = make([]float32, len(in.Data))
	for i, x := range in.Data {
		lat[i] = x / float32(SDXLScalingFactor)
	}
	return lat, golden.Ref(t, golden.String(t, cs.Outputs["image"]))
}

func TestTinyConfig(t *testing.T) {
	v := loadTiny(t, newRuntime(t), nil)
	require.Equal(t, Config{
		InChannels: 3, OutChannels: 3, LatentChannels: 4,
		BlockOutChannels: []int{32, 32, 64, 64}, LayersPerBlock: 2,
		MidAttention: true, QuantConv: true, PostQuantConv: true, Encoder: true, Factor: 8,
	}, v.Config)
	require.Len(t, v.Decoder.UpBlocks[0].Resnets, 3)
	require.Len(t, v.Encoder.DownBlocks[0].Resnets, 2)
}

func TestDecodeGolden(t *testing.T) {
	rt := newRuntime(t)
	lat, want := goldenLatents(t)
	require.Equal(t, []int64{1, 3, 128, 128}, want.Shape)
	for _, tc := range []struct {
		name     string
		policy   nn.TypePolicy
		mode     ConvMode
		colLimit int64
		twoStep  bool // upsample, then convolve (as on GPUs)
		ggmlOps  bool // without our CPU kernels: the graphs a GPU computes
	}{
		{"f32 Winograd", nil, ConvAuto, 0, false, false}, // our CPU kernels' 3×3 convolutions
		{"f32 im2col", nil, ConvAuto, 0, false, true},
		{"f32 direct", nil, ConvDirect, 0, false, true},
		// Columns limited to 20 KiB: every 3×3 convolution runs in bands
		// of a few rows (one row at the 128-pixel level).
		{"f32 banded", nil, ConvAuto, 20 << 10, false, true},
		{"f32 two-step upsamplers", nil, ConvAuto, 0, true, true},
		// The file holds f16 weights: f16 storage is lossless and the graph
		// casts them to f32, so the same tolerance holds.
		{"f16 storage", func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ8_0 }, ConvAuto, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := loadTiny(t, rt, tc.policy)
			require.True(t, v.PhaseUpsamplers, "Load on the CPU")
			v.Conv, v.colLimit, v.PhaseUpsamplers = tc.mode, tc.colLimit, !tc.twoStep
			rt.CPUKernels = !tc.ggmlOps
			defer func() { rt.CPUKernels = true }()
			got, err := v.DecodeImage(context.Background(), rt, lat, 16, 16)
			require.NoError(t, err)
			golden.AssertClose(t, "vae.decode image", got, want.Data, 1e-4, 1e-4)
		})
	}
}

// TestDecodeF16Products decodes the golden latents with F16Products, whole
// and in bands, and checks where the f16 operands go: only into products
// whose image input is a SiLU output (a group norm's, in this VAE), never
// the residual stream; and how far the result moves. The reference kit
// expects about 3e-3 per call from f16 compute; 5e-3 is 0.6 of one 8-bit
// level in [-1, 1].
func TestDecodeF16Products(t *testing.T) {
	if ggml.CPUSumsF16() {
		t.Skip("ggml's CPU products of f16 operands sum in f16 on this build (ARM fp16 arithmetic); the GPUs' sum in f32")
	}
	rt := newRuntime(t)
	// The GPUs' graphs: on the CPU, our Winograd convolutions take f32
	// operands, faster there than f16 ones.
	rt.CPUKernels = false
	lat, want := goldenLatents(t)
	for _, colLimit := range []int64{0, 80 << 10} { // whole, and in bands of a few rows
		v := loadTiny(t, rt, func(string, *weights.Tensor) ggml.Type { return ggml.TypeF16 })
		v.colLimit = colLimit
		exact, err := v.DecodeImage(context.Background(), rt, lat, 16, 16)
		require.NoError(t, err)
		v.F16Products = true
		got, err := v.DecodeImage(context.Background(), rt, lat, 16, 16)
		require.NoError(t, err)
		golden.AssertClose(t, "vae.decode image, f16 products", got, want.Data, 5e-3, 0)
		require.Greater(t, golden.MaxAbsDiff(t, got, exact), 1e-5, "f16 products changed nothing: were they used?")

		c := ggml.NewContext(nn.GraphSize*2, nn.GraphSize)
		g := c.NewGraph(nn.GraphSize)
		g.Expand(v.Decode(c, c.InputF32(lat, 16, 16, 4, 1)))
		var f16, f32, phased int
		for i := 0; i < g.Nodes(); i++ {
			n := g.Node(i)
			if n.Op() == "IM2COL" && n.Src(0).Ne(0) == 2 { // a phase-form upsampler's 2×2 columns (nn.UpsampleConv2D)
				phased++
			}
			if n.Op() != "MUL_MAT" {
				continue
			}
			if n.Src(0).Type() == ggml.TypeF32 {
				f32++
				continue
			}
			f16++
			require.Equal(t, ggml.TypeF16, n.Src(1).Type(), "node %d", i)
			cols := source(n.Src(0))
			require.Equal(t, "IM2COL", cols.Op(), "node %d: f16 operand from %s", i, cols.Op())
			require.Equal(t, "SILU", source(cols.Src(1)).Op(), "node %d: f16 columns of a tensor not fresh from a norm", i)
		}
		c.Free()
		// 29 convolutions follow a norm (3 products each by kernel row, or
		// more in bands); f32 stay the 3 upsamplers (the first two one
		// product of their phases each, the last 3 by row), conv_in (3 by
		// row), post_quant_conv, the shortcut, and the attention (4
		// projections, 2 products).
		require.GreaterOrEqual(t, f16, 3*29, "colLimit %d", colLimit)
		require.GreaterOrEqual(t, f32, 2+3+3+1+1+4+2, "colLimit %d", colLimit)
		require.GreaterOrEqual(t, phased, 2, "the upsamplers below the top resolution take the phase form")
	}
}

// source is the op that computed t, through views, reshapes and copies.
func source(t *ggml.Tensor) *ggml.Tensor {
	for {
		switch t.Op() {
		case "VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE", "CONT", "PAD":
			t = t.Src(0)
		default:
			return t
		}
	}
}

func TestEncodeGolden(t *testing.T) {
	rt := newRuntime(t)
	v := loadTiny(t, rt, nil)
	cs := golden.FindCase(t, "vae.encode")
	img := golden.Ref(t, golden.String(t, cs.Inputs["image"]))
	require.Equal(t, []int64{1, 3, 128, 128}, img.Shape)
	ref := func(k string) []float32 { return golden.Ref(t, golden.String(t, cs.Outputs[k])).Data }

	dist, err := v.EncodeImage(context.Background(), rt, img.Data, 128, 128)
	require.NoError(t, err)
	require.Equal(t, [4]int{16, 16, 4, 1}, [4]int{dist.W, dist.H, dist.C, dist.N})
	golden.AssertClose(t, "vae.encode mean", dist.Mean, ref("mean"), 1e-4, 1e-4)
	golden.AssertClose(t, "vae.encode logvar", dist.LogVar, ref("logvar"), 1e-4, 1e-4)
	golden.AssertClose(t, "vae.encode std", dist.Std(), ref("std"), 1e-4, 1e-4)

	out, err := rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor {
		return []*ggml.Tensor{v.EncodeMoments(c, c.InputF32(img.Data, 128, 128, 3, 1))}
	})
	require.NoError(t, err)
	require.Equal(t, [4]int64{16, 16, 8, 1}, out[0].Shape)
	golden.AssertClose(t, "vae.encode moments", out[0].Data, ref("moments"), 1e-4, 1e-4)

	// Sampling is mean + std·noise with the caller's noise.
	noise := make([]float32, len(dist.Mean))
	noise[0], noise[1] = 1, -2
	s, err := dist.Sample(noise)
	require.NoError(t, err)
	std := dist.Std()
	require.Equal(t, dist.Mean[0]+std[0], s[0])
	require.Equal(t, dist.Mean[1]-2*std[1], s[1])
	require.Equal(t, dist.Mean[2], s[2])
	_, err = dist.Sample(noise[1:])
	require.Error(t, err)
}

func TestClampExact(t *testing.T) {
	rt := newRuntime(t)
	in := []float32{-1e20, -100, -30.000002, -30, -29.999998, -3.3333333, 0, 1e-30, 7.123457, 19.999998, 20, 20.000002, 1e20}
	out, err := rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor {
		return []*ggml.Tensor{clamp(c, c.InputF32(in, int64(len(in))), logvarMin, logvarMax)}
	})
	require.NoError(t, err)
	for i, x := range in {
		want := float32(math.Min(math.Max(float64(x), logvarMin), logvarMax))
		require.Equal(t, want, out[0].Data[i], "clamp(%g)", x)
	}
}

func TestDecodeTiled(t *testing.T) {
	rt := newRuntime(t)
	v := loadTiny(t, rt, nil)
	lat, _ := goldenLatents(t)
	ctx := context.Background()
	full, err := v.DecodeImage(ctx, rt, lat, 16, 16)
	require.NoError(t, err)

	// One tile covering the image is the untiled decode, bit for bit.
	got, err := v.DecodeTiled(ctx, rt, lat, 16, 16, 16, 4)
	require.NoError(t, err)
	require.Equal(t, full, got)

	// Small tiles: GroupNorm statistics and attention are per tile, so only
	// close (this random-weight model is a harsh case: its output is noise
	// driven by global statistics).
	tiled := map[[2]int][]float32{}
	for _, tc := range [][2]int{{8, 4}, {12, 6}} {
		got, err := v.DecodeTiled(ctx, rt, lat, 16, 16, tc[0], tc[1])
		require.NoError(t, err)
		tiled[tc] = got
		d := golden.MaxAbsDiff(t, got, full)
		mean := 0.0
		for i := range got {
			mean += math.Abs(float64(got[i] - full[i]))
		}
		mean /= float64(len(got))
		t.Logf("tile %d overlap %d: max abs diff vs untiled %.3g, mean abs diff %.3g; untiled output range ±%.2f",
			tc[0], tc[1], d, mean, maxAbs(full))
		require.Less(t, d, 0.35*maxAbs(full), "tiled decode strays too far")
		require.Less(t, mean, 0.04*maxAbs(full))
	}

	// Where only one tile covers the output (8×8 tiles overlapping by 4:
	// the top-left 32×32 pixels), the tiled result is that tile's decode.
	crop := make([]float32, 4*8*8)
	for ch := 0; ch < 4; ch++ {
		for y := 0; y < 8; y++ {
			copy(crop[(ch*8+y)*8:][:8], lat[(ch*16+y)*16:][:8])
		}
	}
	one, err := v.DecodeImage(ctx, rt, crop, 8, 8)
	require.NoError(t, err)
	for ch := 0; ch < 3; ch++ {
		for y := 0; y < 32; y++ {
			for x := 0; x < 32; x++ {
				require.Equal(t, one[(ch*64+y)*64+x], tiled[[2]int{8, 4}][(ch*128+y)*128+x], "c %d y %d x %d", ch, y, x)
			}
		}
	}

	_, err = v.DecodeTiled(ctx, rt, lat, 16, 16, 8, 8)
	require.Error(t, err)
	_, err = v.DecodeTiled(ctx, rt, lat[1:], 16, 16, 8, 4)
	require.Error(t, err)
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

func TestTileStarts(t *testing.T) {
	require.Equal(t, []int{0}, tileStarts(16, 16, 4))
	require.Equal(t, []int{0}, tileStarts(10, 16, 4))
	require.Equal(t, []int{0, 4, 8}, tileStarts(16, 8, 4))
	require.Equal(t, []int{0, 6, 8}, tileStarts(16, 8, 2))
	require.Equal(t, []int{0, 7, 13}, tileStarts(20, 7, 0))
	// Two overlapping tiles' weights sum to 1 across the overlap.
	s := tileStarts(16, 8, 4)
	a, b := ramp(s, 0, 8, 8), ramp(s, 1, 8, 8)
	for p := 32; p < 64; p++ {
		require.InDelta(t, 1, a[p]+b[p-32], 1e-6)
	}
}

// tinyConfig describes a random AutoencoderKL for tests.
type tinyConfig struct {
	in, out, latent int
	blocks          []int
	layers          int
	attn, quant     bool
}

// randomVAE builds the diffusers tensors of such a model under "vae.".
func randomVAE(t *testing.T, cfg tinyConfig, edit func(name string, shape []int64) []int64) *weights.Set {
	r := rand.New(rand.NewPCG(3, 4))
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
		v := make([]float32, n)
		for i := range v {
			switch {
			case len(shape) == 1 && len(name) > 7 && name[len(name)-7:] == ".weight": // norm scale
				v[i] = 1 + 0.1*float32(r.NormFloat64())
			case len(shape) == 1:
				v[i] = 0.1 * float32(r.NormFloat64())
			default:
				v[i] = float32(r.NormFloat64() / math.Sqrt(float64(fan)))
			}
		}
		b := ggml.F32Bytes(v)
		require.NoError(t, set.Add(weights.NewTensor("vae."+name, safetensors.F32, shape, "mem", func() ([]byte, error) { return b, nil })))
	}
	conv := func(name string, out, in, k int) {
		add(name+".weight", int64(out), int64(in), int64(k), int64(k))
		add(name+".bias", int64(out))
	}
	norm := func(name string, ch int) {
		add(name+".weight", int64(ch))
		add(name+".bias", int64(ch))
	}
	resnet := func(name string, in, out int) {
		norm(name+".norm1", in)
		conv(name+".conv1", out, in, 3)
		norm(name+".norm2", out)
		conv(name+".conv2", out, out, 3)
		if in != out {
			conv(name+".conv_shortcut", out, in, 1)
		}
	}
	mid := func(name string, ch int) {
		resnet(name+".resnets.0", ch, ch)
		resnet(name+".resnets.1", ch, ch)
		if cfg.attn {
			norm(name+".attentions.0.group_norm", ch)
			for _, p := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
				add(name+".attentions.0."+p+".weight", int64(ch), int64(ch))
				add(name+".attentions.0."+p+".bias", int64(ch))
			}
		}
	}
	last := len(cfg.blocks) - 1
	ch := cfg.blocks[0]
	conv("encoder.conv_in", ch, cfg.in, 3)
	for i, out := range cfg.blocks {
		for j := 0; j < cfg.layers; j++ {
			resnet(fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), ch, out)
			ch = out
		}
		if i < last {
			conv(fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i), ch, ch, 3)
		}
	}
	mid("encoder.mid_block", ch)
	norm("encoder.conv_norm_out", ch)
	conv("encoder.conv_out", 2*cfg.latent, ch, 3)
	conv("decoder.conv_in", ch, cfg.latent, 3)
	mid("decoder.mid_block", ch)
	for i := range cfg.blocks {
		out := cfg.blocks[last-i]
		for j := 0; j <= cfg.layers; j++ {
			resnet(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), ch, out)
			ch = out
		}
		if i < last {
			conv(fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i), ch, ch, 3)
		}
	}
	norm("decoder.conv_norm_out", ch)
	conv("decoder.conv_out", cfg.out, ch, 3)
	if cfg.quant {
		conv("quant_conv", 2*cfg.latent, 2*cfg.latent, 1)
		conv("post_quant_conv", cfg.latent, cfg.latent, 1)
	}
	return set
}

func TestInferredHyperparameters(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	for _, cfg := range []tinyConfig{
		{in: 3, out: 3, latent: 16, blocks: []int{32, 64, 96}, layers: 1, attn: true, quant: false},
		{in: 1, out: 2, latent: 3, blocks: []int{64, 32}, layers: 2, attn: false, quant: true},
	} {
		t.Run(fmt.Sprint(cfg.blocks), func(t *testing.T) {
			v, err := Load(ctx, rt, randomVAE(t, cfg, nil), "vae.", nil)
			require.NoError(t, err)
			defer v.Close()
			f := 1 << (len(cfg.blocks) - 1)
			require.Equal(t, Config{
				InChannels: cfg.in, OutChannels: cfg.out, LatentChannels: cfg.latent,
				BlockOutChannels: cfg.blocks, LayersPerBlock: cfg.layers, MidAttention: cfg.attn,
				QuantConv: cfg.quant, PostQuantConv: cfg.quant, Encoder: true, Factor: f,
			}, v.Config)

			// Decode 5×3 latents (batch 2) and encode the result back.
			lat := make([]float32, 2*cfg.latent*3*5)
			for i := range lat {
				lat[i] = float32(math.Sin(float64(i)))
			}
			img, err := v.DecodeImage(ctx, rt, lat, 5, 3)
			require.NoError(t, err)
			require.Len(t, img, 2*cfg.out*3*f*5*f)
			for _, x := range img {
				require.False(t, math.IsNaN(float64(x)) || math.IsInf(float64(x), 0))
			}
			pix := make([]float32, 2*cfg.in*3*f*5*f)
			for i := range pix {
				pix[i] = float32(math.Cos(float64(i)))
			}
			dist, err := v.EncodeImage(ctx, rt, pix, 5*f, 3*f)
			require.NoError(t, err)
			require.Equal(t, [4]int{5, 3, cfg.latent, 2}, [4]int{dist.W, dist.H, dist.C, dist.N})
			require.Len(t, dist.Mean, len(lat))

			// Tiling with a different geometry also works.
			tiled, err := v.DecodeTiled(ctx, rt, lat, 5, 3, 4, 2)
			require.NoError(t, err)
			require.Len(t, tiled, len(img))
		})
	}
}

func TestBadWeights(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	base := tinyConfig{in: 3, out: 3, latent: 4, blocks: []int{32, 64}, layers: 1, attn: true, quant: true}
	reshape := func(target string, shape ...int64) func(string, []int64) []int64 {
		return func(name string, s []int64) []int64 {
			if name == target {
				return shape
			}
			return s
		}
	}
	for _, tc := range []struct {
		name string
		cfg  tinyConfig
		edit func(string, []int64) []int64
		want string
	}{
		{"conv out channels", base, reshape("decoder.up_blocks.0.resnets.1.conv1.weight", 32, 64, 3, 3), "conv1.weight"},
		{"conv kernel 2-D", base, reshape("decoder.conv_in.weight", 64, 4), "decoder.conv_in.weight has shape [64 4]; want [out, in, 3, 3]"},
		{"encoder kernel 1x1", base, reshape("encoder.down_blocks.1.resnets.0.conv1.weight", 64, 32, 1, 1), "conv1.weight has shape [64 32 1 1]"},
		{"conv_out channels", base, reshape("decoder.conv_out.weight", 3, 48, 3, 3), "decoder.conv_out.weight"},
		{"attention width", base, reshape("decoder.mid_block.attentions.0.to_k.weight", 64, 32), "to_k.weight"},
		{"attention bias", base, reshape("encoder.mid_block.attentions.0.to_out.0.bias", 65), "to_out.0.bias"},
		{"norm size", base, reshape("encoder.down_blocks.1.resnets.0.norm2.weight", 32), "norm2.weight"},
		{"latent mismatch", base, reshape("post_quant_conv.weight", 8, 8, 1, 1), "post_quant_conv"},
		{"encoder latent", base, reshape("encoder.conv_out.weight", 6, 64, 3, 3), "encoder.conv_out.weight"},
		{"shortcut missing", base, func(n string, s []int64) []int64 {
			if n == "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" || n == "decoder.up_blocks.1.resnets.0.conv_shortcut.bias" {
				return nil
			}
			return s
		}, "no conv_shortcut"},
		{"groups", tinyConfig{in: 3, out: 3, latent: 4, blocks: []int{32, 48}, layers: 1}, nil, "not a multiple of 32"},
		{"missing", base, func(n string, s []int64) []int64 {
			if n == "decoder.mid_block.resnets.1.conv2.weight" {
				return nil
			}
			return s
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Load(ctx, rt, randomVAE(t, tc.cfg, tc.edit), "vae.", nil)
			require.Error(t, err)
			require.Nil(t, v)
			t.Log(err)
			if tc.want != "" {
				require.ErrorIs(t, err, ErrWeights)
				require.ErrorContains(t, err, tc.want)
			} else {
				require.ErrorIs(t, err, nn.ErrMissing)
			}
		})
	}
	_, err := Load(ctx, rt, randomVAE(t, base, nil), "nothing.", nil)
	require.ErrorIs(t, err, ErrWeights)
}

func TestBadInputs(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	v, err := Load(ctx, rt, randomVAE(t, tinyConfig{in: 3, out: 3, latent: 4, blocks: []int{32, 32}, layers: 1, attn: true}, nil), "vae.", nil)
	require.NoError(t, err)
	defer v.Close()
	_, err = v.DecodeImage(ctx, rt, make([]float32, 4*4*4-1), 4, 4)
	require.Error(t, err)
	_, err = v.DecodeImage(ctx, rt, make([]float32, 0), 0, 4)
	require.Error(t, err)
	_, err = v.EncodeImage(ctx, rt, make([]float32, 3*9*8), 9, 8) // not a multiple of 2
	require.Error(t, err)
	// Wrong channel counts in graph builders become errors, not aborts.
	_, err = rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		return []*ggml.Tensor{v.Decode(c, c.InputF32(make([]float32, 3*4*4), 4, 4, 3, 1))}
	})
	require.ErrorContains(t, err, "latents")
	_, err = rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		m, _ := v.Encode(c, c.InputF32(make([]float32, 4*4*4), 4, 4, 4, 1))
		return []*ggml.Tensor{m}
	})
	require.ErrorContains(t, err, "pixels")
	_, err = rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		m, _ := v.Encode(c, c.InputF32(make([]float32, 3), 1, 1, 3, 1)) // smaller than the factor
		return []*ggml.Tensor{m}
	})
	require.ErrorContains(t, err, "pixels")
}

// Older checkpoints store the mid-block attention projections as 1×1 convs.
func TestConvShapedAttention(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	cfg := tinyConfig{in: 3, out: 3, latent: 4, blocks: []int{32, 64}, layers: 1, attn: true}
	as4D := func(n string, s []int64) []int64 {
		if len(s) == 2 && regexp.MustCompile(`attentions\.0\.(to_[qkv]|to_out\.0)\.weight$`).MatchString(n) {
			return []int64{s[0], s[1], 1, 1}
		}
		return s
	}
	lat := make([]float32, 4*6*6)
	for i := range lat {
		lat[i] = float32(math.Sin(float64(3 * i)))
	}
	var outs [][]float32
	for _, edit := range []func(string, []int64) []int64{nil, as4D} {
		v, err := Load(ctx, rt, randomVAE(t, cfg, edit), "vae.", nil)
		require.NoError(t, err)
		img, err := v.DecodeImage(ctx, rt, lat, 6, 6)
		v.Close()
		require.NoError(t, err)
		outs = append(outs, img)
	}
	require.Equal(t, outs[0], outs[1])
}
