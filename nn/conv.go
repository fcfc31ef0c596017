package nn

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// BandedConv2D convolves one image x [W, H, Cin, 1] with an f32 or f16
// kernel w [K, K, Cin, Cout] (its columns in the kernel's type) (padding pad on every side, stride stride) as im2col +
// matrix product in bands of output rows, each band's columns taking at
// most maxCols bytes. One im2col buffer for SDXL's VAE decoder at 1024²
// would take gigabytes, and ggml's direct kernel is several times slower
// than a matrix product (on a GPU it is a naive loop; the products go to
// cuBLAS). The bands' products are added in place into one zeroed output
// (ggml's ACC: every backend has it, unlike SET). A "same" 3×3 kernel of
// stride 1 runs by kernel row (see Conv2D): a third of the columns.
func BandedConv2D(c *ggml.Context, w, x *ggml.Tensor, stride, pad int, maxCols int64) *ggml.Tensor {
	kw, kh, cin, cout := w.Ne(0), w.Ne(1), w.Ne(2), w.Ne(3)
	W, H := x.Ne(0), x.Ne(1)
	if x.Ne(2) != cin || x.Ne(3) != 1 || (w.Type() != ggml.TypeF32 && w.Type() != ggml.TypeF16) {
		panic(fmt.Sprintf("nn.BandedConv2D: kernel %v (%s) does not fit image %v (one image, f32 or f16 kernel)", w.Shape(), w.Type(), x.Shape()))
	}
	if kw == 3 && kh == 3 && stride == 1 && pad == 1 {
		return bandedByRow(c, KernelByRow(c, w), x, maxCols)
	}
	s, p := int64(stride), int64(pad)
	ow, oh := (W+2*p-kw)/s+1, (H+2*p-kh)/s+1
	k := kw * kh * cin
	rows := max(1, maxCols/(k*ow*w.Type().BlockBytes()))
	kernel := c.Reshape(w, k, cout)
	var y *ggml.Tensor
	for r0 := int64(0); r0 < oh; r0 += rows {
		n := min(rows, oh-r0)
		lo, hi := r0*s-p, (r0+n-1)*s-p+kh // the input rows output rows [r0, r0+n) read
		var cols *ggml.Tensor
		switch {
		case lo >= 0 && hi <= H: // inside: no padding along H
			cols = c.Im2Col(w, im2colInput(c, rowsOf(c, x, lo, hi)), stride, stride, pad, 0, 1, 1, w.Type())
		case r0 == 0 && hi <= H: // top edge: im2col pads; the extra rows it makes at the bottom are dropped
			cols = c.Im2Col(w, im2colInput(c, rowsOf(c, x, 0, hi)), stride, stride, pad, pad, 1, 1, w.Type())
		default: // other edge bands: pad their rows explicitly
			in := c.Pad(c.Cont(rowsOf(c, x, max(lo, 0), min(hi, H))), 0, 0, int(max(0, -lo)), int(max(0, hi-H)), 0, 0, 0, 0)
			cols = c.Im2Col(w, in, stride, stride, pad, 0, 1, 1, w.Type())
		}
		cols = c.View(cols, [4]int64{k, ow * n, 1, 1}, cols.Nb(1), cols.Nb(1)*ow*n, cols.Nb(1)*ow*n, 0)
		y = addBand(c, y, c.MulMat(cols, kernel), r0*ow, ow*oh)
	}
	return c.Reshape(y, ow, oh, cout, 1)
}

// bandedByRow is BandedConv2D for a "same" 3×3 kernel of stride 1, stored
// by row ([3, Cin, Cout, 3]): each band's 1×3 im2col (see rowIm2Col) covers
// its output rows and one input row above and below, zeros at the edges.
// maxCols bounds the columns and the two partial products that are alive
// with them.
func bandedByRow(c *ggml.Context, kernel, x *ggml.Tensor, maxCols int64) *ggml.Tensor {
	W, H, cout := x.Ne(0), x.Ne(1), kernel.Ne(2)
	rows := max(1, maxCols/((3*x.Ne(2)*kernel.Type().BlockBytes()+2*cout*4)*W))
	var y *ggml.Tensor
	for r0 := int64(0); r0 < H; r0 += rows {
		n := min(rows, H-r0)
		lo, hi := max(r0-1, 0), min(r0+n+1, H) // the input rows the band reads
		cols := rowIm2Col(c, kernel, im2colInput(c, rowsOf(c, x, lo, hi)), 1, 1)
		// cols' row j is input row lo-1+j (row -1 and H being zeros); the
		// band's first kernel row reads input row r0-1.
		y = addBand(c, y, rowProducts(c, cols, kernel, r0-lo, n), r0*W, W*H)
	}
	return c.Reshape(y, W, H, cout, 1)
}

// rowsOf is the view of input rows [lo, hi) of one image x [W, H, C, 1].
func rowsOf(c *ggml.Context, x *ggml.Tensor, lo, hi int64) *ggml.Tensor {
	return c.View(x, [4]int64{x.Ne(0), hi - lo, x.Ne(2), 1}, x.Nb(1), x.Nb(2), x.Nb(3), lo*x.Nb(1))
}

// im2colInput is a band of rows as im2col reads it: copied where the
// backend's im2col takes only contiguous inputs (Vulkan's; the CPU and
// CUDA read views).
func im2colInput(c *ggml.Context, band *ggml.Tensor) *ggml.Tensor {
	if c.ContiguousIm2Col() {
		return c.Cont(band)
	}
	return band
}

// addBand places one band's product yb ([pixels, Cout], starting at output
// pixel at) into the output y ([total, Cout]): the first band is padded
// with zeros, later ones are added in place into those zeros.
func addBand(c *ggml.Context, y, yb *ggml.Tensor, at, total int64) *ggml.Tensor {
	if y == nil {
		return c.Pad(yb, 0, int(total-yb.Ne(0)), 0, 0, 0, 0, 0, 0)
	}
	return c.AccInplace(y, yb, y.Nb(1), y.Nb(2), y.Nb(3), at*4)
}
