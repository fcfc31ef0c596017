package unet

import (
	"math"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
)

// Shapes in comments are ggml order: images [W, H, C, B], token sequences
// [C, N, B], per-sample vectors [C, B].

// mlpEmbedding is diffusers' TimestepEmbedding: linear_1, SiLU, linear_2.
type mlpEmbedding struct {
	Linear1 nn.Linear `w:"linear_1"`
	Linear2 nn.Linear `w:"linear_2"`
}

func (m *mlpEmbedding) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	return m.Linear2.Forward(c, c.SiLU(m.Linear1.Forward(c, x)))
}

// resnet is ResnetBlock2D with a time-embedding projection.
type resnet struct {
	Norm1       nn.GroupNorm `w:"norm1"`
	Conv1       nn.Conv2D    `w:"conv1"`
	TimeEmbProj nn.Linear    `w:"time_emb_proj"`
	Norm2       nn.GroupNorm `w:"norm2"`
	Conv2       nn.Conv2D    `w:"conv2"`
	Shortcut    *nn.Conv2D   `w:"conv_shortcut,optional"` // 1×1 when channels change
}

// Forward maps x [W, H, Cin, B] with the activated time embedding
// embAct = SiLU(emb) [T, B] to [W, H, Cout, B].
func (r *resnet) Forward(c *ggml.Context, cfg *Config, x, embAct *ggml.Tensor) *ggml.Tensor {
	t := r.TimeEmbProj.Forward(c, embAct) // [Cout, B]
	// A GPU graph adds a convolution's bias in a pass of its own, which the
	// time embedding joins; our CPU kernels add the bias as they store.
	conv1 := r.Conv1
	joined := conv1.Bias != nil && !c.CPUKernels()
	if joined {
		conv1.Bias = c.Add(t, conv1.Bias)
	}
	h := conv1.Forward(c, r.Norm1.ForwardSiLU(c, x, cfg.NormGroups, cfg.ResnetEps), 1, 1)
	if !joined {
		h = c.Add(h, c.Reshape(t, 1, 1, t.Ne(0), t.Ne(1)))
	}
	h = r.Conv2.Forward(c, r.Norm2.ForwardSiLU(c, h, cfg.NormGroups, cfg.ResnetEps), 1, 1)
	if r.Shortcut != nil {
		x = r.Shortcut.Forward(c, x, 1, 0)
	}
	return c.Add(x, h)
}

// attention is diffusers' Attention with q/k/v without bias and to_out.0.
type attention struct {
	ToQ   nn.Linear `w:"to_q"`
	ToK   nn.Linear `w:"to_k"`
	ToV   nn.Linear `w:"to_v"`
	ToOut nn.Linear `w:"to_out.0"`
}

func (a *attention) heads(cfg *Config) int { return int(a.ToQ.Weight.Ne(1)) / cfg.HeadDim }

// keysValues projects ctx [Cctx, M, B] to keys and values split into heads.
func (a *attention) keysValues(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, ctx *ggml.Tensor) nn.HeadsKV {
	return nn.SplitKV(c, a.ToK.Forward(c, ctx), a.ToV.Forward(c, ctx), a.heads(cfg), opt)
}

// Forward attends from x [C, N, B] to keys and values made by keysValues.
func (a *attention) Forward(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, x *ggml.Tensor, kv nn.HeadsKV) *ggml.Tensor {
	scale := float32(1 / math.Sqrt(float64(cfg.HeadDim)))
	return a.ToOut.Forward(c, nn.AttendHeads(c, a.ToQ.Forward(c, x), kv, a.heads(cfg), nil, scale, opt))
}

// selfAttention is attn1 as WeightSet leaves it: one product makes the
// query, key and value (to_qkv: their rows stacked). Its bias, once
// foldBlock has made it, is the query's (zero for the rest).
type selfAttention struct {
	ToQKV nn.Linear `w:"to_qkv"`
	ToOut nn.Linear `w:"to_out.0"`
}

// Forward attends from x [C, N, B] to itself.
func (a *selfAttention) Forward(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, x *ggml.Tensor) *ggml.Tensor {
	inner := a.ToQKV.Weight.Ne(1) / 3
	heads := int(inner) / cfg.HeadDim
	qkv := c.MulMat(a.ToQKV.Weight, x)
	part := func(t *ggml.Tensor, i int64) *ggml.Tensor { // rows [i·inner, (i+1)·inner)
		return c.View(t, [4]int64{inner, t.Ne(1), t.Ne(2), t.Ne(3)}, t.Nb(1), t.Nb(2), t.Nb(3), i*inner*t.Nb(0))
	}
	q := part(qkv, 0)
	if a.ToQKV.Bias != nil { // the query's part: the key's and value's are zero
		q = c.Add(q, part(a.ToQKV.Bias, 0))
	}
	scale := float32(1 / math.Sqrt(float64(cfg.HeadDim)))
	var kv nn.HeadsKV
	if opt.Flash && opt.SoftmaxUpTo == 0 && opt.KVType == ggml.TypeF16 && qkv.Type() == ggml.TypeF32 {
		// The flash kernel reads f16 keys and values through their
		// strides: one contiguous cast of the whole product instead of a
		// copy of each one's heads, which ran at 380 GB/s on an H200 (5 ms
		// of a 90 ms step at 1024²).
		h := c.Cast(qkv, ggml.TypeF16)
		kv = nn.FlashKV(c, part(h, 1), part(h, 2), heads)
	} else {
		kv = nn.SplitKV(c, part(qkv, 1), part(qkv, 2), heads, opt)
	}
	return a.ToOut.Forward(c, nn.AttendHeads(c, q, kv, heads, nil, scale, opt))
}

// textContext gives cross-attention its keys and values: projected from the
// encoder states in the graph (encoderStates), or read from tensors that a
// Loop computes once per conditioning (crossKV).
type textContext interface {
	keysValues(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, a *attention) nn.HeadsKV
}

// encoderStates is encoder_hidden_states [Cctx, M, B] in the graph.
type encoderStates struct{ t *ggml.Tensor }

func (e encoderStates) keysValues(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, a *attention) nn.HeadsKV {
	return a.keysValues(c, cfg, opt, e.t)
}

// crossKV holds every cross-attention's keys and values for one context.
type crossKV map[*attention]nn.HeadsKV

func (p crossKV) keysValues(_ *ggml.Context, _ *Config, _ nn.AttentionOptions, a *attention) nn.HeadsKV {
	return p[a]
}

// feedForward is GEGLU (net.0) then a linear layer (net.2); net.1 is dropout.
type feedForward struct {
	In  nn.GEGLU  `w:"net.0"`
	Out nn.Linear `w:"net.2"`
}

func (f *feedForward) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	w := f.In.Proj.Weight
	if spare := w.Ne(0) - x.Ne(0); spare > 0 { // the bias in the weight's last columns (foldBlock), times ones
		h := c.MulMat(w, c.Concat(x, c.Ones(spare, x.Ne(1), x.Ne(2)), 0))
		return f.Out.Forward(c, c.GEGLUSecondHalf(h))
	}
	return f.Out.Forward(c, f.In.Forward(c, x))
}

// transformerBlock is BasicTransformerBlock: self-attention, cross-attention
// and feed-forward, each pre-LayerNorm with a residual. The norms are nil
// once folded into the products after them (foldBlock).
type transformerBlock struct {
	Norm1 *nn.LayerNorm `w:"norm1,optional"`
	Attn1 selfAttention `w:"attn1"`
	Norm2 *nn.LayerNorm `w:"norm2,optional"`
	Attn2 attention     `w:"attn2"`
	Norm3 *nn.LayerNorm `w:"norm3,optional"`
	FF    feedForward   `w:"ff"`
}

func (t *transformerBlock) Forward(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, x *ggml.Tensor, text textContext) *ggml.Tensor {
	norm := func(n *nn.LayerNorm, x *ggml.Tensor) *ggml.Tensor {
		if n == nil {
			return c.Norm(x, cfg.LayerNormEps)
		}
		return n.Forward(c, x, cfg.LayerNormEps)
	}
	x = c.Add(t.Attn1.Forward(c, cfg, opt, norm(t.Norm1, x)), x)
	x = c.Add(t.Attn2.Forward(c, cfg, opt, norm(t.Norm2, x), text.keysValues(c, cfg, opt, &t.Attn2)), x)
	return c.Add(t.FF.Forward(c, norm(t.Norm3, x)), x)
}

// transformer is Transformer2DModel with linear projections in and out.
type transformer struct {
	Norm    nn.GroupNorm       `w:"norm"`
	ProjIn  nn.Linear          `w:"proj_in"`
	Blocks  []transformerBlock `w:"transformer_blocks"`
	ProjOut nn.Linear          `w:"proj_out"`
}

// Forward maps x [W, H, C, B] attending to text to [W, H, C, B].
func (t *transformer) Forward(c *ggml.Context, cfg *Config, opt nn.AttentionOptions, x *ggml.Tensor, text textContext) *ggml.Tensor {
	w, h, ch, b := x.Ne(0), x.Ne(1), x.Ne(2), x.Ne(3)
	y := t.Norm.Forward(c, x, cfg.NormGroups, cfg.TransformerNormEps)
	y = c.Cont(c.Permute(c.Reshape(y, w*h, ch, b), 1, 0, 2, 3)) // [C, W·H, B]: token index h·W + w, as PyTorch's
	y = t.ProjIn.Forward(c, y)
	for i := range t.Blocks {
		y = t.Blocks[i].Forward(c, cfg, opt, y, text)
	}
	y = t.ProjOut.Forward(c, y)
	y = c.Reshape(c.Cont(c.Permute(y, 1, 0, 2, 3)), w, h, ch, b)
	return c.Add(y, x)
}

// downBlock is DownBlock2D or CrossAttnDownBlock2D (with attentions).
type downBlock struct {
	Resnets      []resnet        `w:"resnets"`
	Attentions   []transformer   `w:"attentions,optional"`
	Downsamplers []nn.Downsample `w:"downsamplers,optional"`
}

// midBlock is UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) pairs.
type midBlock struct {
	Resnets    []resnet      `w:"resnets"`
	Attentions []transformer `w:"attentions,optional"`
}

// upBlock is UpBlock2D or CrossAttnUpBlock2D.
type upBlock struct {
	Resnets    []resnet      `w:"resnets"`
	Attentions []transformer `w:"attentions,optional"`
	Upsamplers []nn.Upsample `w:"upsamplers,optional"`
}

// model mirrors UNet2DConditionModel's state dict.
type model struct {
	ConvIn        nn.Conv2D    `w:"conv_in"`
	TimeEmbedding mlpEmbedding `w:"time_embedding"`
	AddEmbedding  mlpEmbedding `w:"add_embedding"`
	Down          []downBlock  `w:"down_blocks"`
	Mid           midBlock     `w:"mid_block"`
	Up            []upBlock    `w:"up_blocks"`
	NormOut       nn.GroupNorm `w:"conv_norm_out"`
	ConvOut       nn.Conv2D    `w:"conv_out"`
}

// eachBlock calls f with every transformer block, in the order forward
// runs them.
func (m *model) eachBlock(f func(*transformerBlock)) {
	add := func(ts []transformer) {
		for i := range ts {
			for j := range ts[i].Blocks {
				f(&ts[i].Blocks[j])
			}
		}
	}
	for i := range m.Down {
		add(m.Down[i].Attentions)
	}
	add(m.Mid.Attentions)
	for i := range m.Up {
		add(m.Up[i].Attentions)
	}
}

// crossAttentions lists every transformer block's cross-attention, in the
// order forward runs them.
func (m *model) crossAttentions() []*attention {
	var out []*attention
	m.eachBlock(func(b *transformerBlock) { out = append(out, &b.Attn2) })
	return out
}
