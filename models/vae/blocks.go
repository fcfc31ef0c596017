package vae

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
)

// Shapes in comments are ggml order: an image is [W, H, C, B], a token
// sequence [C, N, B].

// Fixed AutoencoderKL conventions (not readable from the weights).
const (
	groups = 32   // GroupNorm groups everywhere
	eps    = 1e-6 // GroupNorm epsilon everywhere

	logvarMin = -30 // DiagonalGaussianDistribution clamps logvar to [-30, 20]
	logvarMax = 20
)

// ResnetBlock is diffusers' ResnetBlock2D without a time embedding:
// norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus the input (through a
// 1×1 conv_shortcut when the channel count changes).
type ResnetBlock struct {
	Norm1    nn.GroupNorm `w:"norm1"`
	Conv1    nn.Conv2D    `w:"conv1"`
	Norm2    nn.GroupNorm `w:"norm2"`
	Conv2    nn.Conv2D    `w:"conv2"`
	Shortcut *nn.Conv2D   `w:"conv_shortcut,optional"`
}

func (r *ResnetBlock) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	c := b.c
	h := b.normSiLU(&r.Norm1, x)
	h = b.convNormed(&r.Conv1, h, 1, 1)
	h = b.normSiLU(&r.Norm2, h)
	h = b.convNormed(&r.Conv2, h, 1, 1)
	if r.Shortcut != nil {
		x = b.conv(r.Shortcut, x, 1, 0)
	}
	return c.Add(x, h)
}

// Attention is the mid block's single-head self-attention over all pixels
// with a group norm before it and a residual connection.
type Attention struct {
	GroupNorm nn.GroupNorm `w:"group_norm"`
	ToQ       nn.Linear    `w:"to_q"`
	ToK       nn.Linear    `w:"to_k"`
	ToV       nn.Linear    `w:"to_v"`
	ToOut     nn.Linear    `w:"to_out.0"`
}

func (a *Attention) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	c := b.c
	W, H, C, B := x.Ne(0), x.Ne(1), x.Ne(2), x.Ne(3)
	h := b.norm(&a.GroupNorm, x)
	// [W, H, C, B] → [W·H, C, B] → [C, W·H, B]
	tok := c.Cont(c.Permute(c.Reshape(h, W*H, C, B), 1, 0, 2, 3))
	q, k, v := b.linear(&a.ToQ, tok), b.linear(&a.ToK, tok), b.linear(&a.ToV, tok)
	// One head over the full width, in f32: our CPU kernel on the CPU, else
	// the plain path (the flash kernels do not cover a 512-wide head and
	// would cast K/V to f16).
	o := nn.Attend(c, q, k, v, 1, nil, nn.AttentionOptions{CPUKernel: true})
	o = b.linear(&a.ToOut, o) // [C, W·H, B]
	o = c.Reshape(c.Cont(c.Permute(o, 1, 0, 2, 3)), W, H, C, B)
	return c.Add(x, o)
}

// MidBlock is UNetMidBlock2D: resnet, attention (optional), resnet.
type MidBlock struct {
	Resnets    []ResnetBlock `w:"resnets"`
	Attentions []Attention   `w:"attentions,optional"`
}

func (m *MidBlock) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	x = m.Resnets[0].forward(b, x)
	for i := 1; i < len(m.Resnets); i++ {
		if i-1 < len(m.Attentions) {
			x = m.Attentions[i-1].forward(b, x)
		}
		x = m.Resnets[i].forward(b, x)
	}
	return x
}

// Downsample is the encoder's Downsample2D: pad right and bottom by one,
// then a 3×3 convolution with stride 2 and no padding.
type Downsample struct {
	Conv nn.Conv2D `w:"conv"`
}

func (d *Downsample) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	return b.conv(&d.Conv, b.c.Pad(x, 0, 1, 0, 1, 0, 0, 0, 0), 2, 0)
}

// DownBlock is DownEncoderBlock2D: resnets, then an optional downsampler.
type DownBlock struct {
	Resnets      []ResnetBlock `w:"resnets"`
	Downsamplers []Downsample  `w:"downsamplers,optional"`
}

// UpBlock is UpDecoderBlock2D: resnets, then an optional upsampler
// (nearest ×2 and a 3×3 convolution).
type UpBlock struct {
	Resnets    []ResnetBlock `w:"resnets"`
	Upsamplers []nn.Upsample `w:"upsamplers,optional"`
}

// Encoder maps pixels [W, H, in, B] to 2·latent channels at 1/factor size.
type Encoder struct {
	ConvIn      nn.Conv2D    `w:"conv_in"`
	DownBlocks  []DownBlock  `w:"down_blocks"`
	MidBlock    MidBlock     `w:"mid_block"`
	ConvNormOut nn.GroupNorm `w:"conv_norm_out"`
	ConvOut     nn.Conv2D    `w:"conv_out"`
}

func (e *Encoder) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	x = b.conv(&e.ConvIn, x, 1, 1)
	for i := range e.DownBlocks {
		blk := &e.DownBlocks[i]
		for j := range blk.Resnets {
			x = blk.Resnets[j].forward(b, x)
		}
		for j := range blk.Downsamplers {
			x = blk.Downsamplers[j].forward(b, x)
		}
	}
	x = e.MidBlock.forward(b, x)
	x = b.normSiLU(&e.ConvNormOut, x)
	return b.convNormed(&e.ConvOut, x, 1, 1)
}

// Decoder maps latents [W, H, latent, B] to pixels at factor× size.
type Decoder struct {
	ConvIn      nn.Conv2D    `w:"conv_in"`
	MidBlock    MidBlock     `w:"mid_block"`
	UpBlocks    []UpBlock    `w:"up_blocks"`
	ConvNormOut nn.GroupNorm `w:"conv_norm_out"`
	ConvOut     nn.Conv2D    `w:"conv_out"`
}

func (d *Decoder) forward(b *builder, x *ggml.Tensor) *ggml.Tensor {
	x = b.conv(&d.ConvIn, x, 1, 1)
	x = d.MidBlock.forward(b, x)
	last := -1 // the up block that upsamples to the top resolution
	for i := range d.UpBlocks {
		if len(d.UpBlocks[i].Upsamplers) > 0 {
			last = i
		}
	}
	for i := range d.UpBlocks {
		blk := &d.UpBlocks[i]
		for j := range blk.Resnets {
			x = blk.Resnets[j].forward(b, x)
		}
		for j := range blk.Upsamplers {
			x = b.upsample(&blk.Upsamplers[j].Conv, x, i == last)
		}
	}
	x = b.normSiLU(&d.ConvNormOut, x)
	return b.convNormed(&d.ConvOut, x, 1, 1)
}

// builder carries the graph context and the VAE's compute choices through
// the forward functions. Weights are used in f32 (weights stored as f16 are
// cast in the graph), since SDXL's VAE overflows f16, except that with f16
// set the convolutions whose input is fresh from a group norm multiply f16
// operands (see VAE.F16Products).
type builder struct {
	c        *ggml.Context
	mode     ConvMode
	colLimit int64 // 0: see Im2ColLimit
	f16      bool
	phases   bool // VAE.PhaseUpsamplers
}

func f32(c *ggml.Context, t *ggml.Tensor) *ggml.Tensor {
	if t == nil {
		return nil
	}
	return c.Cast(t, ggml.TypeF32)
}

// conv applies a convolution with "same"-style padding pad and stride, in
// f32.
func (b *builder) conv(l *nn.Conv2D, x *ggml.Tensor, stride, pad int) *ggml.Tensor {
	return b.convAs(l, x, stride, pad, ggml.TypeF32)
}

// convNormed is conv for an input fresh from a group norm (and SiLU): its
// values are bounded by the norm's scale, so f16 operands cannot overflow.
// The residual stream, which can (the shortcuts' and upsamplers' input),
// never goes through it.
func (b *builder) convNormed(l *nn.Conv2D, x *ggml.Tensor, stride, pad int) *ggml.Tensor {
	if b.f16 {
		return b.convAs(l, x, stride, pad, ggml.TypeF16)
	}
	return b.conv(l, x, stride, pad)
}

// convAs is conv with the kernel, and so the im2col columns, in typ.
func (b *builder) convAs(l *nn.Conv2D, x *ggml.Tensor, stride, pad int, typ ggml.Type) *ggml.Tensor {
	c := b.c
	w := c.Cast(l.Weight, typ)
	kw, kh, cin := w.Ne(0), w.Ne(1), w.Ne(2)
	ow := (x.Ne(0)+2*int64(pad)-kw)/int64(stride) + 1
	oh := (x.Ne(1)+2*int64(pad)-kh)/int64(stride) + 1
	limit := b.colLimit
	if limit == 0 {
		limit = min(Im2ColLimit, max(minColumns, ow*oh*w.Ne(3)*x.Ne(3)*4))
	}
	// What the product needs at once: its im2col buffer, or by kernel row
	// (see nn.Conv2D) a 1×3 im2col and two of the three f32 partial
	// products.
	byRow := kw == 3 && kh == 3 && pad == 1
	bytes := kw * kh * cin * ow * oh * typ.BlockBytes()
	if byRow {
		bytes = (3*cin*(x.Ne(1)+2)*typ.BlockBytes() + 2*w.Ne(3)*oh*4) * ow
	}
	large := bytes*x.Ne(3) > limit
	if byRow && stride == 1 && b.mode == ConvAuto {
		if y := b.winograd(l, x, false); y != nil {
			return y
		}
	}
	var y *ggml.Tensor
	switch {
	case byRow && b.mode == ConvAuto && !large:
		tmp := nn.NewConv2DByRow(nn.KernelByRow(c, w), f32(c, l.Bias))
		return tmp.Forward(c, x, stride, pad)
	case kw == 1 && kh == 1 && stride == 1 && pad == 0, b.mode == ConvAuto && !large:
		tmp := nn.Conv2D{Weight: w, Bias: f32(c, l.Bias)}
		return tmp.Forward(c, x, stride, pad)
	case b.mode == ConvAuto && x.Ne(3) == 1:
		y = nn.BandedConv2D(c, w, x, stride, pad, limit)
	default: // the direct kernel, with the f32 kernels its tests cover
		y = c.Conv2DDirect(f32(c, l.Weight), x, stride, stride, pad, pad, 1, 1)
	}
	if l.Bias != nil {
		y = c.Add(y, c.Reshape(f32(c, l.Bias), 1, 1, l.Bias.Ne(0), 1))
	}
	return y
}

// winograd is our CPU kernels' Winograd convolution of x (or of its
// nearest 2× upsample) with the 3×3 kernel of l, in f32: 4/9 of the
// multiplies, in bands inside the op (no columns and no bands in the
// graph), and faster than ggml's f16 products, so F16Products leaves it.
// nil when the graph is not for the CPU or the op does not take x.
func (b *builder) winograd(l *nn.Conv2D, x *ggml.Tensor, upsample bool) *ggml.Tensor {
	c := b.c
	if !c.CPUKernels() || l.Weight.Ne(0) != 3 || l.Weight.Ne(1) != 3 {
		return nil
	}
	up := 1
	if upsample {
		up = 2
	}
	if !ggml.Conv3x3CPUPays(x, up) {
		return nil
	}
	w := l.Weight // the kernel transform reads f16 itself: no f32 copy
	if w.Type() != ggml.TypeF16 && w.Type() != ggml.TypeF32 {
		w = c.Cast(w, ggml.TypeF32)
	}
	kernel := c.Permute(w, 0, 3, 1, 2) // by row as a view: the kernel transform reads it so, no copy
	switch {
	case !ggml.Conv3x3CPUFits(kernel, x):
		return nil
	case upsample:
		return c.UpsampleConv3x3CPU(kernel, x, f32(c, l.Bias))
	}
	return c.Conv3x3CPU(kernel, x, f32(c, l.Bias))
}

// upsample is an up block's nearest 2× upsample and 3×3 convolution, in
// f32 (its input is the residual stream). On the CPU it is our Winograd
// convolution reading the input as upsampled. Else, with
// VAE.PhaseUpsamplers, under ConvAuto, for one image, it convolves the
// input's four phases instead (nn.UpsampleConv2D): 4/9 of the arithmetic,
// and no upsampled image. The upsampler to the top resolution (last) keeps
// the two steps: there the phases' buffers left the allocator holes that
// the next resnet's full-size tensors do not fit, and a 1024² decode
// peaked at 3.5 GiB instead of 3.0.
func (b *builder) upsample(l *nn.Conv2D, x *ggml.Tensor, last bool) *ggml.Tensor {
	c := b.c
	if b.mode == ConvAuto {
		if y := b.winograd(l, x, true); y != nil {
			return y
		}
	}
	if !b.phases || last || b.mode != ConvAuto || x.Ne(3) != 1 || l.Weight.Ne(0) != 3 || l.Weight.Ne(1) != 3 {
		return b.conv(l, c.UpscaleNearest(x, 2), 1, 1)
	}
	limit := b.colLimit
	if limit == 0 { // as convAs: bounded by the convolution's own output
		limit = min(Im2ColLimit, max(minColumns, 4*x.Ne(0)*x.Ne(1)*l.Weight.Ne(3)*4))
	}
	y := nn.UpsampleConv2D(c, l.Weight, x, limit)
	if l.Bias != nil {
		y = c.Add(y, c.Reshape(f32(c, l.Bias), 1, 1, l.Bias.Ne(0), 1))
	}
	return y
}

func (b *builder) norm(l *nn.GroupNorm, x *ggml.Tensor) *ggml.Tensor {
	tmp := nn.GroupNorm{Weight: f32(b.c, l.Weight), Bias: f32(b.c, l.Bias)}
	return tmp.Forward(b.c, x, groups, eps)
}

// normSiLU is SiLU(norm(l, x)).
func (b *builder) normSiLU(l *nn.GroupNorm, x *ggml.Tensor) *ggml.Tensor {
	tmp := nn.GroupNorm{Weight: f32(b.c, l.Weight), Bias: f32(b.c, l.Bias)}
	return tmp.ForwardSiLU(b.c, x, groups, eps)
}

// linear applies an [out, in] Linear weight, also accepting the
// [out, in, 1, 1] 1×1-convolution layout of older checkpoints.
func (b *builder) linear(l *nn.Linear, x *ggml.Tensor) *ggml.Tensor {
	w := f32(b.c, l.Weight)
	if w.Ne(0) == 1 && w.Ne(1) == 1 {
		w = b.c.Reshape(w, w.Ne(2), w.Ne(3))
	}
	tmp := nn.Linear{Weight: w, Bias: f32(b.c, l.Bias)}
	return tmp.Forward(b.c, x)
}

// clamp limits x to [lo, hi] exactly. The bindings have no ggml_clamp, so
// each bound is a select between x and the bound with masks that are
// exactly 0 or 1: sigmoid(±1e30·(x−bound)) saturates for every nonzero
// difference (the sign of a float difference is exact). At x == bound both
// masks are ½ and ½x + ½bound == bound.
func clamp(c *ggml.Context, x *ggml.Tensor, lo, hi float32) *ggml.Tensor {
	sel := func(x *ggml.Tensor, bound float32, keepAbove bool) *ggml.Tensor {
		d := c.Sub(x, c.Arange(bound, bound+1, 1)) // x − bound, broadcast
		s := float32(1e30)
		if !keepAbove {
			s = -s
		}
		keep := c.Sigmoid(c.Scale(d, s))
		take := c.Sigmoid(c.Scale(d, -s))
		return c.Add(c.Mul(x, keep), c.Scale(take, bound))
	}
	return sel(sel(x, lo, true), hi, false)
}

// mustImage panics (nn.Runtime.Run turns the panic into an error) unless x
// is an image with the given channel count and at least minSide pixels a
// side: a bad shape must never reach ggml, whose asserts abort the process.
func mustImage(what string, x *ggml.Tensor, channels int, minSide int64) {
	if x.Type() != ggml.TypeF32 {
		panic(fmt.Errorf("vae: %s must be f32, got %s", what, x.Type()))
	}
	if x.Ne(2) != int64(channels) || x.Ne(0) < minSide || x.Ne(1) < minSide {
		panic(fmt.Errorf("vae: %s has ggml shape %v; want [W, H, %d, B] with W, H ≥ %d", what, x.Shape(), channels, minSide))
	}
}
