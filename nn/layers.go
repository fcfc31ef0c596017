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
	if l.Bias != nil {
		return c.MulMatBias(l.Weight, x, l.Bias)
	}
	return c.MulMat(l.Weight, x)
}

// OutFeatures returns the output width.
func (l *Linear) OutFeatures() int64 { return l.Weight.Ne(1) }

// InFeatures returns the input width.
func (l *Linear) InFeatures() int64 { return l.Weight.Ne(0) }

// Conv2D is a 2-D convolution with PyTorch's [out, in, kh, kw] weight and
// "same"-style padding of kernel/2, as every SDXL convolution uses. A
// block-quantized kernel is stored flattened, [in·k·k, out] in ggml order
// (ggml quantizes along dimension 0); its size k is then 2·pad+1.
//
// A float 3×3 kernel may instead be stored by kernel row, [kw, in, out, kh]
// in ggml order (Weights.StoreKernelsByRow): the convolution is then three
// products, one per kernel row, over a 1×3 im2col. ggml's im2col kernels
// spend their time per column element, and the full 3×3 im2col writes nine
// per input value: on an H200 it took a fifth of a 1024² UNet step, and by
// row the step went from 110 to 95 ms.
type Conv2D struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias,optional"`
	byRow  bool
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
	case l.byRow:
		if pad != 1 {
			panic(fmt.Sprintf("nn.Conv2D: a 3×3 kernel stored by row takes padding 1, not %d", pad))
		}
		return l.forwardByRow(c, x, stride)
	case (l.flat() && k == 1 || !l.flat() && l.Weight.Ne(0) == 1 && l.Weight.Ne(1) == 1) && stride == 1 && pad == 0:
		// A 1×1 convolution is a matrix product over channels: on the CPU
		// our kernel's, without transposing the image and the result.
		if w2 := c.Reshape(l.Weight, ch, cout); c.CPUKernels() && ggml.Conv1x1CPUFits(w2, x) && l.preciseBias() {
			return c.Conv1x1CPU(w2, x, l.Bias)
		}
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
		kernel := l.productKernel(c)
		cols := c.Im2Col(kernel, x, stride, stride, pad, pad, 1, 1, kernel.Type()) // [K, OW, OH, B]
		k, ow, oh := cols.Ne(0), cols.Ne(1), cols.Ne(2)
		y = c.MulMat(c.Reshape(cols, k, ow*oh*b), c.Reshape(kernel, k, cout)) // [OW·OH·B, Cout]
		if b == 1 {
			y = c.Reshape(y, ow, oh, cout, 1)
		} else {
			y = c.Cont(c.Permute(c.Reshape(y, ow, oh, b, cout), 0, 1, 3, 2))
		}
	}
	if l.Bias != nil {
		y = c.Add(y, l.imageBias(c))
	}
	return y
}

// forwardByRow convolves x [W, H, Cin, B] with a kernel stored by row
// ([3, Cin, Cout, 3]) and padding 1. The 1×3 im2col, padded by one row
// above and below each image, is [3·Cin, OW, H+2, B]; the products read it
// across the whole batch as one matrix, so they also compute two rows of
// junk between images. The bias add (or a copy) then picks the output
// rows: every stride-th, skipping the junk.
func (l *Conv2D) forwardByRow(c *ggml.Context, x *ggml.Tensor, stride int) *ggml.Tensor {
	if stride == 1 && l.winograd(c, x, 1) {
		// Our CPU kernels' Winograd convolution: 4/9 of the multiplies.
		return c.Conv3x3CPU(l.Weight, x, l.Bias)
	}
	h, b := x.Ne(1), x.Ne(3)
	cout := l.Weight.Ne(2)
	kernel := l.productKernel(c)
	cols := rowIm2Col(c, kernel, x, stride, 1)
	ow, padded := cols.Ne(1), cols.Ne(2) // padded = H+2
	y := rowProducts(c, cols, kernel, 0, b*padded-2)
	oh := (h-1)/int64(stride) + 1
	row := y.Nb(0) * ow
	out := c.View(y, [4]int64{ow, oh, cout, b}, row*int64(stride), y.Nb(1), row*padded, 0)
	switch {
	case l.Bias != nil:
		return c.Add(out, l.imageBias(c))
	case b == 1 && stride == 1:
		return c.Reshape(y, ow, oh, cout, 1)
	}
	return c.Cont(out)
}

// productKernel is the kernel an im2col convolution's columns and product
// take: an f16 kernel cast to f32 on the CPU where productsInF32 says so,
// else as stored.
func (l *Conv2D) productKernel(c *ggml.Context) *ggml.Tensor {
	if c.CPUKernels() && l.Weight.Type() == ggml.TypeF16 && productsInF32() {
		return c.Cast(l.Weight, ggml.TypeF32)
	}
	return l.Weight
}

// productsInF32 says whether our CPU kernels' convolutions of an f16
// kernel over im2col columns (by row, or the full im2col) take f32 columns
// and the kernel cast to f32 (our f32 product) rather than f16 columns
// (ggml's f16 product, faster with F16C and AVX2 than our product plus the
// cast): where ggml's kernels were compiled without them (a plain `go
// build` on x86-64), whose f16 product ran at 2 GFLOP/s. Tests set it.
var productsInF32 = ggml.CPUKernelsOutpaceGGML

// winograd says whether our CPU kernels' Winograd convolution
// (ggml.Context.Conv3x3CPU) takes this by-row kernel, bias and image
// (upsampled up times), and is faster there.
func (l *Conv2D) winograd(c *ggml.Context, x *ggml.Tensor, up int) bool {
	return c.CPUKernels() && ggml.Conv3x3CPUFits(l.Weight, x) && ggml.Conv3x3CPUPays(x, up) && l.preciseBias()
}

// imageBias is the bias as [1, 1, Cout, 1], or [1, 1, Cout, B] for a bias
// per image ([Cout, B]: a caller's sum of the layer's bias and its own,
// added in the same pass; not for our CPU kernels, see preciseBias).
func (l *Conv2D) imageBias(c *ggml.Context) *ggml.Tensor {
	return c.Reshape(l.Bias, 1, 1, l.Bias.Ne(0), l.Bias.Ne(1))
}

// preciseBias says whether the bias is what our CPU kernels add: none, or
// contiguous f32 (one per channel).
func (l *Conv2D) preciseBias() bool {
	return l.Bias == nil || l.Bias.Type() == ggml.TypeF32 && l.Bias.Contiguous() && l.Bias.Ne(1) == 1
}

// rowIm2Col is the 1×3 im2col of x [W, H, Cin, B] for a kernel stored by
// row, padded by one column on each side and by padRows rows above and
// below: [3·Cin, OW, H+2·padRows, B] in the kernel's type.
func rowIm2Col(c *ggml.Context, kernel, x *ggml.Tensor, stride, padRows int) *ggml.Tensor {
	shape := c.NewTensor(ggml.TypeF16, 3, 1, x.Ne(2), 1) // only its shape is read
	return c.Im2Col(shape, x, stride, 1, 1, padRows, 1, 1, kernel.Type())
}

// rowProducts sums, over the kernel's three rows ky, the product of kernel
// row ky ([3·Cin, Cout] in a kernel stored by row) with n image rows of the
// 1×3 im2col cols taken from row first+ky on: [n·OW, Cout].
func rowProducts(c *ggml.Context, cols, kernel *ggml.Tensor, first, n int64) *ggml.Tensor {
	k, m, cout := cols.Ne(0), n*cols.Ne(1), kernel.Ne(2)
	var y *ggml.Tensor
	for ky := int64(0); ky < 3; ky++ {
		rows := c.View(cols, [4]int64{k, m, 1, 1}, cols.Nb(1), cols.Nb(1)*m, cols.Nb(1)*m, (first+ky)*cols.Nb(2))
		w := c.View(kernel, [4]int64{k, cout, 1, 1}, kernel.Nb(2), kernel.Nb(3), kernel.Nb(3), ky*kernel.Nb(3))
		p := c.MulMat(rows, w)
		if y == nil {
			y = p
		} else {
			y = c.Add(y, p)
		}
	}
	return y
}

// KernelByRow rearranges a 3×3 kernel [3, 3, Cin, Cout] in the graph into
// the by-row layout [3, Cin, Cout, 3], for a kernel that is used once (the
// VAE's, cast per decode to the type it multiplies in) rather than stored
// that way.
func KernelByRow(c *ggml.Context, w *ggml.Tensor) *ggml.Tensor {
	return c.Cont(c.Permute(w, 0, 3, 1, 2))
}

// NewConv2DByRow is a convolution with a kernel already by row (see
// KernelByRow).
func NewConv2DByRow(kernel, bias *ggml.Tensor) Conv2D {
	return Conv2D{Weight: kernel, Bias: bias, byRow: true}
}

// OutChannels returns the number of output channels.
func (l *Conv2D) OutChannels() int64 {
	switch {
	case l.byRow:
		return l.Weight.Ne(2)
	case l.flat():
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
	return l.forward(c, x, groups, eps, false)
}

// ForwardSiLU is SiLU(Forward(…)), in one op on the CPU.
func (l *GroupNorm) ForwardSiLU(c *ggml.Context, x *ggml.Tensor, groups int, eps float32) *ggml.Tensor {
	return l.forward(c, x, groups, eps, true)
}

func (l *GroupNorm) forward(c *ggml.Context, x *ggml.Tensor, groups int, eps float32, silu bool) *ggml.Tensor {
	if c.CPUKernels() && ggml.GroupNormCPUFits(x, l.Weight, l.Bias, groups) {
		return c.GroupNormCPU(x, l.Weight, l.Bias, groups, eps, silu)
	}
	y, ch := c.GroupNorm(x, groups, eps), l.Weight.Ne(0)
	if x.Ne(2) == ch { // image layout: channels are dimension 2
		y = c.Add(c.Mul(y, c.Reshape(l.Weight, 1, 1, ch, 1)), c.Reshape(l.Bias, 1, 1, ch, 1))
	} else {
		y = c.Add(c.Mul(y, l.Weight), l.Bias)
	}
	if silu {
		y = c.SiLU(y)
	}
	return y
}

// LayerNorm normalises dimension 0 and applies an affine transform.
type LayerNorm struct {
	Weight *ggml.Tensor `w:"weight"`
	Bias   *ggml.Tensor `w:"bias,optional"`
}

// Forward normalises each row of x.
func (l *LayerNorm) Forward(c *ggml.Context, x *ggml.Tensor, eps float32) *ggml.Tensor {
	if c.CPUKernels() && ggml.LayerNormCPUFits(x, l.Weight, l.Bias) {
		return c.LayerNormCPU(x, l.Weight, l.Bias, eps)
	}
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
	if k := &l.Conv; k.byRow && k.winograd(c, x, 2) {
		// Our CPU kernels read the input as upsampled: no 4× image.
		return c.UpsampleConv3x3CPU(k.Weight, x, k.Bias)
	}
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
