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
// cuBLAS). The bands' products are written into one zero-padded output
// (placeBand). A "same" 3×3 kernel of
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
// with zeros, later ones are written over those zeros (placeBand).
func addBand(c *ggml.Context, y, yb *ggml.Tensor, at, total int64) *ggml.Tensor {
	if y == nil {
		return c.Pad(yb, 0, int(total-yb.Ne(0)), 0, 0, 0, 0, 0, 0)
	}
	return placeBand(c, y, yb, at*4)
}

// placeBand writes band yb over the zeros of y at byte offset (y's
// strides): with SET where the backend has it (ggml-cuda's takes a
// contiguous band), else by adding it in place (ACC, which every backend
// has; ggml-cuda's rewrites all of y each time: 316 passes over the VAE
// decoder's largest tensors at 1024²).
func placeBand(c *ggml.Context, y, yb *ggml.Tensor, offset int64) *ggml.Tensor {
	if c.BandsBySet() && yb.Contiguous() {
		return c.SetInplace(y, yb, y.Nb(1), y.Nb(2), y.Nb(3), offset)
	}
	return c.AccInplace(y, yb, y.Nb(1), y.Nb(2), y.Nb(3), offset)
}

// UpsampleConv2D is a nearest 2× upsample of one image x [W, H, Cin, 1]
// followed by a "same" 3×3 convolution (padding 1, stride 1) with kernel w
// [3, 3, Cin, Cout] (f32 or f16; multiplied in f32), computed without the
// upsampled image: each of the output's four phases (the parity of its
// column and row) is a 2×2 convolution of x whose taps are sums of w's
// (phaseKernels). That is 4/9 of the arithmetic, and a third of the
// columns of the 3×3 kernel by row. It runs in bands of input rows whose
// columns and products take about maxCols bytes. Returns [2W, 2H, Cout,
// 1]; the sums of taps round differently, so the result matches the
// two-step one to float32 rounding.
func UpsampleConv2D(c *ggml.Context, w, x *ggml.Tensor, maxCols int64) *ggml.Tensor {
	W, H, cin, cout := x.Ne(0), x.Ne(1), w.Ne(2), w.Ne(3)
	if w.Ne(0) != 3 || w.Ne(1) != 3 || x.Ne(2) != cin || x.Ne(3) != 1 || (w.Type() != ggml.TypeF32 && w.Type() != ggml.TypeF16) {
		panic(fmt.Sprintf("nn.UpsampleConv2D: kernel %v (%s) does not fit image %v (a 3×3 f32 or f16 kernel, one image)", w.Shape(), w.Type(), x.Shape()))
	}
	typ := ggml.TypeF32
	kernel := c.Reshape(phaseKernels(c, w), 4*cin, 4*cout)
	shape := c.NewTensor(ggml.TypeF16, 2, 2, cin, 1) // only its shape is read
	// Per input row: 2×2 columns and the four phases' products (both over
	// W+1 positions), then the interleaving's copies of the output.
	perRow := (4*cin*typ.BlockBytes() + 4*cout*4 + 8*cout*4) * (W + 1)
	rows := max(1, maxCols/perRow)
	var y *ggml.Tensor
	for r0 := int64(0); r0 < H; r0 += rows {
		n := min(rows, H-r0)
		// Phase row b of output row r0+j reads the product at position row
		// r0+j+b, whose 2×2 window covers input rows r0+j+b-1 and r0+j+b
		// (row -1 and row H being zeros): n+1 positions from r0.
		lo, hi := max(r0-1, 0), min(r0+n+1, H)
		padRows, skip := 0, int64(0)
		switch {
		case r0 == 0: // im2col pads the top (and the bottom, which is cut off when not the image's)
			padRows = 1
		case r0+n == H: // im2col pads the bottom; its first position reads a row not needed
			padRows, skip = 1, 1
		}
		cols := c.Im2Col(shape, im2colInput(c, rowsOf(c, x, lo, hi)), 1, 1, 1, padRows, 1, 1, typ) // [4·Cin, W+1, positions]
		m := (W + 1) * (n + 1)
		cols = c.View(cols, [4]int64{4 * cin, m, 1, 1}, cols.Nb(1), cols.Nb(1)*m, cols.Nb(1)*m, skip*cols.Nb(2))
		yb := interleavePhases(c, c.MulMat(cols, kernel), W, n, cout) // [2W, 2n, Cout]
		// The first band padded with zeros below, the others added in.
		if y == nil {
			y = c.Pad(yb, 0, 0, 0, int(2*(H-n)), 0, 0, 0, 0)
		} else {
			y = placeBand(c, y, yb, 2*r0*y.Nb(1))
		}
	}
	return y
}

// phaseKernels turns a 3×3 kernel w [3, 3, Cin, Cout] into the 2×2 kernels
// of the four phases of "nearest 2× upsample, then convolve": [2, 2, Cin,
// 4·Cout], phase a+2b in the a+2b-th block of Cout, a the output column's
// parity and b the row's. Along one axis the upsampled pixels 2i-1, 2i,
// 2i+1 are input pixels i-1, i, i, so the even phase reads offsets −1 and 0
// with taps w0 and w1+w2; the odd one reads 0 and +1 with w0+w1 and w2.
func phaseKernels(c *ggml.Context, w *ggml.Tensor) *ggml.Tensor {
	cin, cout := w.Ne(2), w.Ne(3)
	slabs := c.Cont(c.Permute(c.Cast(w, ggml.TypeF32), 2, 3, 0, 1)) // [Cin, Cout, 3, 3]: each tap contiguous
	tap := func(kx, ky int64) *ggml.Tensor {
		return c.View(slabs, [4]int64{cin, cout, 1, 1}, slabs.Nb(1), slabs.Nb(2), slabs.Nb(3), (kx+3*ky)*slabs.Nb(2))
	}
	taps := [2][2][]int64{{{0}, {1, 2}}, {{0, 1}, {2}}} // [parity][tap] → the 3×3 taps it sums
	var phases *ggml.Tensor
	for p := range 4 {
		a, b := p%2, p/2
		var k [2][2]*ggml.Tensor // [ty][tx]
		for ty := range 2 {
			for tx := range 2 {
				for _, ky := range taps[b][ty] {
					for _, kx := range taps[a][tx] {
						if t := tap(kx, ky); k[ty][tx] == nil {
							k[ty][tx] = t
						} else {
							k[ty][tx] = c.Add(k[ty][tx], t)
						}
					}
				}
			}
		}
		phase := c.Concat(c.Concat(k[0][0], k[0][1], 2), c.Concat(k[1][0], k[1][1], 2), 3) // [Cin, Cout, 2, 2]
		if phases == nil {
			phases = phase
		} else {
			phases = c.Concat(phases, phase, 1)
		}
	}
	return c.Cont(c.Permute(phases, 2, 3, 0, 1)) // [2, 2, Cin, 4·Cout]
}

// interleavePhases turns the product of a band's 2×2 columns with the phase
// kernels, p [(W+1)·(n+1), 4·Cout], into its n output row pairs
// [2W, 2n, Cout, 1]: output pixel (2i+a, 2j+b) is phase a+2b at position
// (i+a, j+b).
func interleavePhases(c *ggml.Context, p *ggml.Tensor, W, n, cout int64) *ggml.Tensor {
	phase := func(a, b int64) *ggml.Tensor { // [1, W, n, Cout]
		return c.View(p, [4]int64{1, W, n, cout}, p.Nb(0), (W+1)*p.Nb(0), p.Nb(1), (a+(W+1)*b)*p.Nb(0)+(a+2*b)*cout*p.Nb(1))
	}
	row := func(b int64) *ggml.Tensor { // [2W, 1, n, Cout]: the columns of phase row b interleaved
		return c.Reshape(c.Concat(phase(0, b), phase(1, b), 0), 2*W, 1, n, cout)
	}
	return c.Reshape(c.Concat(row(0), row(1), 1), 2*W, 2*n, cout, 1)
}
