package nn

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// Shapes in comments are ggml order (fastest first): a sequence of N tokens
// of width C in a batch of B is [C, N, B]; an image is [W, H, C, B].

// Linear is y = W·x + b with PyTorch's [out, in] weight.
type Linear struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias,optional"`
}

// Forward maps [in, ...] to [out, ...].
func (l *Linear) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	y := c.MulMat(l.Weight, x)
	if l.Bias != nil {
		y = c.Add(y, l.Bias)
	}
	return y
}

// OutFeatures returns the output width.
func (l *Linear) OutFeatures() int64 { return l.Weight.Ne(1) }

// InFeatures returns the input width.
func (l *Linear) InFeatures() int64 { return l.Weight.Ne(0) }

// Conv2D is a 2-D convolution with PyTorch's [out, in, kh, kw] weight and
// "same"-style padding of kernel/2, as every SDXL convolution uses. A
// block-quantized kernel is stored flattened, [in·k·k, out] in ggml order
// (ggml quantizes along dimension 0); its size k is then 2·pad+1.
type Conv2D struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias,optional"`
}

// flat says whether the kernel is stored as an im2col matrix.
func (l *Conv2D) flat() bool {
	return l.Weight.Ne(2) == 1 && l.Weight.Ne(3) == 1 && l.Weight.Type().Quantized()
}

// Forward convolves x [W, H, Cin, B] with the given stride and padding.
func (l *Conv2D) Forward(c *ggml.Context, x *ggml.Tensor, stride, pad int) *ggml.Tensor {
	var y *ggml.Tensor
	w, h, ch, b := x.Ne(0), x.Ne(1), x.Ne(2), x.Ne(3)
	cout := l.OutChannels()
	switch k := int64(2*pad + 1); {
	case (l.flat() && k == 1 || !l.flat() && l.Weight.Ne(0) == 1 && l.Weight.Ne(1) == 1) && stride == 1 && pad == 0:
		// A 1×1 convolution is a matrix product over channels.
		flat := c.Cont(c.Permute(c.Reshape(x, w*h, ch, b), 1, 0, 2, 3)) // [Cin, W·H, B]
		y = c.MulMat(c.Reshape(l.Weight, ch, cout), flat)               // [Cout, W·H, B]
		y = c.Reshape(c.Cont(c.Permute(y, 1, 0, 2, 3)), w, h, cout, b)
	case l.flat():
		if l.Weight.Ne(0) != k*k*ch {
			panic(fmt.Sprintf("nn.Conv2D: flattened %v kernel does not fit %d channels with a %d×%d kernel", l.Weight.Shape(), ch, k, k))
		}
		// im2col (f32: a quantized product takes f32 activations) then one
		// product with the kernel as the quantized operand.
		shape := c.NewTensor(ggml.TypeF16, k, k, ch, 1) // only its shape is read
		cols := c.Im2Col(shape, x, stride, stride, pad, pad, 1, 1, ggml.TypeF32)
		ow, oh := cols.Ne(1), cols.Ne(2)
		y = c.MulMat(l.Weight, c.Reshape(cols, k*k*ch, ow*oh*b))         // [Cout, OW·OH·B]
		y = c.Cont(c.Permute(c.Reshape(y, cout, ow, oh, b), 2, 0, 1, 3)) // [OW, OH, Cout, B]
	default:
		// im2col + one product, as ggml_conv_2d does, written out so that
		// the product follows the context's accumulation setting and one
		// image needs no final copy.
		cols := c.Im2Col(l.Weight, x, stride, stride, pad, pad, 1, 1, l.Weight.Type()) // [K, OW, OH, B]
		k, ow, oh := cols.Ne(0), cols.Ne(1), cols.Ne(2)
		y = c.MulMat(c.Reshape(cols, k, ow*oh*b), c.Reshape(l.Weight, k, cout)) // [OW·OH·B, Cout]
		if b == 1 {
			y = c.Reshape(y, ow, oh, cout, 1)
		} else {
			y = c.Cont(c.Permute(c.Reshape(y, ow, oh, b, cout), 0, 1, 3, 2))
		}
	}
	if l.Bias != nil {
		y = c.Add(y, c.Reshape(l.Bias, 1, 1, l.Bias.Ne(0), 1))
	}
	return y
}

// OutChannels returns the number of output channels.
func (l *Conv2D) OutChannels() int64 {
	if l.flat() {
		return l.Weight.Ne(1)
	}
	return l.Weight.Ne(3)
}

// GroupNorm normalises groups of channels of an image [W, H, C, B].
type GroupNorm struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias"`
}

// Forward applies the norm with the given group count and epsilon.
func (l *GroupNorm) Forward(c *ggml.Context, x *ggml.Tensor, groups int, eps float32) *ggml.Tensor {
	y := c.GroupNorm(x, groups, eps)
	ch := l.Weight.Ne(0)
	if x.Ne(2) == ch { // image layout: channels are dimension 2
		return c.Add(c.Mul(y, c.Reshape(l.Weight, 1, 1, ch, 1)), c.Reshape(l.Bias, 1, 1, ch, 1))
	}
	return c.Add(c.Mul(y, l.Weight), l.Bias)
}

// LayerNorm normalises dimension 0 and applies an affine transform.
type LayerNorm struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias,optional"`
}

// Forward normalises each row of x.
func (l *LayerNorm) Forward(c *ggml.Context, x *ggml.Tensor, eps float32) *ggml.Tensor {
	y := c.Mul(c.Norm(x, eps), l.Weight)
	if l.Bias != nil {
		y = c.Add(y, l.Bias)
	}
	return y
}

// Embedding looks up rows of a [vocab, dim] table.
type Embedding struct {
	Weight *ggml.Tensor `w:"weight"`
}

// Forward gathers the rows for I32 ids [N] → [dim, N].
func (l *Embedding) Forward(c *ggml.Context, ids *ggml.Tensor) *ggml.Tensor {
	return c.GetRows(l.Weight, ids)
}

// GEGLU is diffusers' gated GELU: proj to 2·inner, split (h, gate),
// h·GELU_erf(gate). Note the SECOND half is activated.
type GEGLU struct {
	Proj Linear `w:"proj"`
}

// Forward maps [dim, ...] to [inner, ...].
func (l *GEGLU) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	return c.GEGLUSecondHalf(l.Proj.Forward(c, x))
}

// Downsample is a stride-2 3×3 convolution (diffusers' Downsample2D).
type Downsample struct {
	Conv Conv2D `w:"conv"`
}

// Forward halves the spatial size.
func (l *Downsample) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	return l.Conv.Forward(c, x, 2, 1)
}

// Upsample is nearest ×2 followed by a 3×3 convolution (diffusers' Upsample2D).
type Upsample struct {
	Conv Conv2D `w:"conv"`
}

// Forward doubles the spatial size.
func (l *Upsample) Forward(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	return l.Conv.Forward(c, c.UpscaleNearest(x, 2), 1, 1)
}

// ForwardTo resizes to w×h with nearest-neighbour sampling before the
// convolution: diffusers' upsample_size, used when a skip connection's size
// is odd (the latent side was not a multiple of the UNet's total downscale).
func (l *Upsample) ForwardTo(c *ggml.Context, x *ggml.Tensor, w, h int64) *ggml.Tensor {
	if w == 2*x.Ne(0) && h == 2*x.Ne(1) {
		return l.Forward(c, x)
	}
	return l.Conv.Forward(c, c.InterpolateNearest(x, w, h, x.Ne(2), x.Ne(3)), 1, 1)
}
