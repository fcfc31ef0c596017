package nn

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// BandedConv2D convolves one image x [W, H, Cin, 1] with an f32 kernel w
// [K, K, Cin, Cout] (padding pad on every side, stride stride) as im2col +
// matrix product in bands of output rows, each band's columns taking at
// most maxCols bytes. One im2col buffer for SDXL's VAE decoder at 1024²
// would take gigabytes, and ggml's direct kernel is several times slower
// than a matrix product (on a GPU it is a naive loop; the products go to
// cuBLAS). The bands' products are added in place into one zeroed output
// (ggml's ACC: every backend has it, unlike SET).
func BandedConv2D(c *ggml.Context, w, x *ggml.Tensor, stride, pad int, maxCols int64) *ggml.Tensor {
	kw, kh, cin, cout := w.Ne(0), w.Ne(1), w.Ne(2), w.Ne(3)
	W, H := x.Ne(0), x.Ne(1)
	if x.Ne(2) != cin || x.Ne(3) != 1 || w.Type() != ggml.TypeF32 {
		panic(fmt.Sprintf("nn.BandedConv2D: kernel %v (%s) does not fit image %v (one image, f32 kernel)", w.Shape(), w.Type(), x.Shape()))
	}
	s, p := int64(stride), int64(pad)
	ow, oh := (W+2*p-kw)/s+1, (H+2*p-kh)/s+1
	k := kw * kh * cin
	rows := max(1, maxCols/(k*ow*4))
	kernel := c.Reshape(w, k, cout)
	view := func(lo, hi int64) *ggml.Tensor { // input rows [lo, hi) of x
		return c.View(x, [4]int64{W, hi - lo, cin, 1}, x.Nb(1), x.Nb(2), x.Nb(3), lo*x.Nb(1))
	}
	band := func(lo, hi int64) *ggml.Tensor { // the same as im2col's input
		if c.ContiguousIm2Col() { // Vulkan's: copied (the CPU and CUDA read views)
			return c.Cont(view(lo, hi))
		}
		return view(lo, hi)
	}
	var y *ggml.Tensor
	for r0 := int64(0); r0 < oh; r0 += rows {
		n := min(rows, oh-r0)
		lo, hi := r0*s-p, (r0+n-1)*s-p+kh // the input rows output rows [r0, r0+n) read
		var cols *ggml.Tensor
		switch {
		case lo >= 0 && hi <= H: // inside: no padding along H
			cols = c.Im2Col(w, band(lo, hi), stride, stride, pad, 0, 1, 1, ggml.TypeF32)
		case r0 == 0 && hi <= H: // top edge: im2col pads; the extra rows it makes at the bottom are dropped
			cols = c.Im2Col(w, band(0, hi), stride, stride, pad, pad, 1, 1, ggml.TypeF32)
		default: // other edge bands: pad their rows explicitly
			in := c.Pad(c.Cont(view(max(lo, 0), min(hi, H))), 0, 0, int(max(0, -lo)), int(max(0, hi-H)), 0, 0, 0, 0)
			cols = c.Im2Col(w, in, stride, stride, pad, 0, 1, 1, ggml.TypeF32)
		}
		cols = c.View(cols, [4]int64{k, ow * n, 1, 1}, cols.Nb(1), cols.Nb(1)*ow*n, cols.Nb(1)*ow*n, 0)
		yb := c.MulMat(cols, kernel) // [OW·n, Cout]
		if y == nil {
			y = c.Pad(yb, 0, int(ow*(oh-n)), 0, 0, 0, 0, 0, 0) // [OW·OH, Cout], zeros past the band
		} else {
			y = c.AccInplace(y, yb, y.Nb(1), y.Nb(2), y.Nb(3), r0*ow*4) // into the zeros
		}
	}
	return c.Reshape(y, ow, oh, cout, 1)
}
