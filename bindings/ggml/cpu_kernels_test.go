package ggml

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/half"
)

// TestGEGLUKernel checks our CPU GEGLU (pm_geglu_erf) value by value
// against h·x·Φ(x) in float64, and against ggml's GEGLU_ERF kernel: on
// rows of every length around the vector width (the tail path), several
// rows and planes (the row split across threads, strides of the halves),
// and inputs from zero to the far tails.
func TestGEGLUKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 0.5, -0.5, 2, -2, 5, -5, 9, -9, 13, -13, 20, -20, 100, -100, 3e38, -3e38}
	for _, shape := range [][3]int{{1, 1, 1}, {7, 3, 1}, {8, 2, 2}, {9, 5, 1}, {33, 4, 3}, {1000, 3, 1}} {
		n, rows, planes := shape[0], shape[1], shape[2]
		t.Run(fmt.Sprintf("%dx%dx%d", n, rows, planes), func(t *testing.T) {
			a := make([]float32, 2*n*rows*planes)
			for i := range a {
				switch {
				case i%5 == 0:
					a[i] = special[r.IntN(len(special))]
				default:
					a[i] = float32(r.NormFloat64() * 3)
				}
			}
			build := func(ours bool) func(c *Context) *Tensor {
				return func(c *Context) *Tensor {
					c.SetCPUKernels(ours)
					return c.GEGLUSecondHalf(c.InputF32(a, int64(2*n), int64(rows), int64(planes)))
				}
			}
			got, gotShape := compute(t, build(true))
			require.Equal(t, [4]int64{int64(n), int64(rows), int64(planes), 1}, gotShape)
			ggmls, _ := compute(t, build(false))
			for row := 0; row < rows*planes; row++ {
				for i := 0; i < n; i++ {
					h, x := float64(a[2*n*row+i]), float64(a[2*n*row+n+i])
					want := h * x * 0.5 * math.Erfc(-x/math.Sqrt2)
					scale := math.Abs(h * x) // both kernels' errors are relative to h·x
					if math.IsInf(want, 0) || scale > math.MaxFloat32 {
						continue // h·x overflows float32: both give ±Inf or NaN
					}
					k := row*n + i
					require.InDelta(t, want, float64(got[k]), 3e-7*scale+1e-37, "h %g x %g: ours", h, x)
					require.InDelta(t, float64(ggmls[k]), float64(got[k]), 6e-7*scale+1e-37, "h %g x %g: against ggml", h, x)
				}
			}
		})
	}
}

// TestGEGLUKernelOnlyOnCPU checks that GEGLUSecondHalf takes ggml's op
// unless the context says the graph runs on the CPU, and for inputs the
// kernel does not take.
func TestGEGLUKernelOnlyOnCPU(t *testing.T) {
	c := NewContext(16, 0)
	defer c.Free()
	a := c.NewTensor(TypeF32, 8, 2)
	require.Equal(t, "GEGLU_ERF", c.GEGLUSecondHalf(a).Op())
	c.SetCPUKernels(true)
	require.Equal(t, "MAP_CUSTOM2", c.GEGLUSecondHalf(a).Op())
	require.Equal(t, "GEGLU_ERF", c.GEGLUSecondHalf(c.NewTensor(TypeF16, 8, 2)).Op())
}

// TestIm2ColKernel checks our CPU im2col (pm_im2col) value for value
// against ggml's: the by-row 1×3 columns the convolutions use (with and
// without padded rows), the 2×2 phase columns, strided 3×3 and patch
// kernels, batches, a band of rows viewed out of a taller image, and f16
// columns.
func TestIm2ColKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for _, tc := range []struct {
		kw, kh, s0, s1, p0, p1 int
		w, h, ch, n            int
		band                   bool // the image is rows 2..h+1 of one h+3 rows tall
	}{
		{3, 1, 1, 1, 1, 1, 9, 5, 4, 2, false},
		{3, 1, 1, 1, 1, 0, 9, 5, 4, 1, true},
		{3, 1, 2, 1, 1, 1, 10, 6, 3, 2, false},
		{2, 2, 1, 1, 1, 1, 7, 4, 5, 1, true},
		{2, 2, 1, 1, 1, 0, 7, 4, 5, 1, false},
		{3, 3, 2, 2, 1, 1, 11, 9, 3, 2, false},
		{14, 14, 14, 14, 0, 0, 28, 28, 3, 1, false},
		{3, 1, 1, 1, 1, 1, 3000, 2, 3, 1, false}, // columns longer than one chunk
	} {
		for _, typ := range []Type{TypeF32, TypeF16} {
			name := fmt.Sprintf("%dx%d_s%d,%d_p%d,%d_%dx%dx%dx%d_band%v_%s", tc.kw, tc.kh, tc.s0, tc.s1, tc.p0, tc.p1, tc.w, tc.h, tc.ch, tc.n, tc.band, typ)
			t.Run(name, func(t *testing.T) {
				tall := tc.h
				if tc.band {
					tall = tc.h + 3
				}
				x := make([]float32, tc.w*tall*tc.ch*tc.n)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				build := func(ours bool) func(c *Context) *Tensor {
					return func(c *Context) *Tensor {
						c.SetCPUKernels(ours)
						img := c.InputF32(x, int64(tc.w), int64(tall), int64(tc.ch), int64(tc.n))
						if tc.band {
							img = c.View(img, [4]int64{int64(tc.w), int64(tc.h), int64(tc.ch), int64(tc.n)}, img.Nb(1), img.Nb(2), img.Nb(3), 2*img.Nb(1))
						}
						shape := c.NewTensor(TypeF16, int64(tc.kw), int64(tc.kh), int64(tc.ch), 1)
						cols := c.Im2Col(shape, img, tc.s0, tc.s1, tc.p0, tc.p1, 1, 1, typ)
						require.Equal(t, ours, cols.Op() == "CUSTOM", cols.Op())
						return cols
					}
				}
				got, gotShape := compute(t, build(true))
				want, wantShape := compute(t, build(false))
				require.Equal(t, wantShape, gotShape)
				require.Equal(t, want, got)
			})
		}
	}
}

// Op profiles list our kernels by name, not as ggml's anonymous custom ops.
func TestOpProfileNamesOurKernels(t *testing.T) {
	s := schedulerOn(t, cpuBackend(t), 64)
	ctx := NewContext(64, 64)
	defer ctx.Free()
	ctx.SetCPUKernels(true)
	img := ctx.InputF32(make([]float32, 8*8*4), 8, 8, 4, 1)
	cols := ctx.Im2Col(ctx.NewTensor(TypeF16, 3, 1, 4, 1), img, 1, 1, 1, 1, 1, 1, TypeF32)
	out := ctx.GEGLUSecondHalf(ctx.Reshape(cols, 12*8*10))
	out.SetOutput()
	g := ctx.NewGraph(64)
	g.Expand(out)
	p := NewOpProfile()
	s.Profile(p)
	require.NoError(t, s.Compute(t.Context(), g))
	var ops []string
	for _, op := range p.Times() {
		ops = append(ops, op.Op)
	}
	require.ElementsMatch(t, []string{"IM2COL (ours)", "GEGLU_ERF (ours)"}, ops)
}

// Im2Col takes ggml's op where ours does not apply: other backends,
// dilation, f16 images, parameters beyond four bits, f16 columns longer
// than the kernel's buffer.
func TestIm2ColKernelFallsBack(t *testing.T) {
	c := NewContext(32, 0)
	defer c.Free()
	img, shape := c.NewTensor(TypeF32, 8, 8, 4, 1), c.NewTensor(TypeF16, 3, 3, 4, 1)
	require.Equal(t, "IM2COL", c.Im2Col(shape, img, 1, 1, 1, 1, 1, 1, TypeF32).Op())
	c.SetCPUKernels(true)
	require.Equal(t, "CUSTOM", c.Im2Col(shape, img, 1, 1, 1, 1, 1, 1, TypeF16).Op())
	require.Equal(t, "IM2COL", c.Im2Col(shape, img, 1, 1, 1, 1, 2, 2, TypeF32).Op())
	require.Equal(t, "IM2COL", c.Im2Col(shape, c.NewTensor(TypeF16, 8, 8, 4, 1), 1, 1, 1, 1, 1, 1, TypeF16).Op())
	require.Equal(t, "IM2COL", c.Im2Col(shape, img, 16, 1, 1, 1, 1, 1, TypeF32).Op())
	wide, wideShape := c.NewTensor(TypeF32, 8, 8, 2000, 1), c.NewTensor(TypeF16, 3, 3, 2000, 1) // 18000 values a column
	require.Equal(t, "IM2COL", c.Im2Col(wideShape, wide, 1, 1, 1, 1, 1, 1, TypeF16).Op())
	require.Equal(t, "CUSTOM", c.Im2Col(wideShape, wide, 1, 1, 1, 1, 1, 1, TypeF32).Op())
}

// TestAttentionKernel checks our CPU attention (pm_attention) against
// softmax attention in float64: heads of 8 to 512 values; key counts below,
// at and past the tiles of 4 (77 is the text context's); query blocks cut
// short, and more than one block; two images, with keys and values shared
// or per image; queries as a strided view; scores so far apart that the
// softmax's running maximum must be exact. The tolerance follows float32
// rounding of the scores' and the outputs' sums.
func TestAttentionKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		d, heads, nq, nk, b, kvb int
		spread                   float32 // the queries' scale: the scores' standard deviation
	}{
		{64, 2, 9, 77, 2, 2, 2}, {64, 3, 4, 16, 1, 1, 2}, {8, 1, 1, 1, 1, 1, 2}, {16, 4, 6, 7, 2, 1, 2},
		{64, 1, 70, 100, 1, 1, 2}, {512, 1, 3, 33, 1, 1, 2}, {24, 2, 13, 40, 2, 2, 2},
		{16, 1, 6, 9000, 1, 1, 2},  // fewer queries per block than the most; many chunks of keys
		{32, 2, 150, 100, 1, 1, 2}, // three blocks of queries, the last short
		// scores thousands apart: e^(s − max) overflows unless max is each chunk's true maximum
		{64, 1, 20, 300, 1, 1, 1000},
	} {
		t.Run(fmt.Sprintf("d%d_h%d_q%d_k%d_b%d_kv%d_s%g", tc.d, tc.heads, tc.nq, tc.nk, tc.b, tc.kvb, tc.spread), func(t *testing.T) {
			require.True(t, AttentionCPUFits(int64(tc.d), int64(tc.nk)))
			C := tc.d * tc.heads
			q := randn(r, (C+3)*tc.nq*tc.b) // rows of C+3: a view's stride
			k, v := randn(r, C*tc.nk*tc.kvb), randn(r, C*tc.nk*tc.kvb)
			for i := range q {
				q[i] *= tc.spread // 2: scores spread enough for a peaked softmax
			}
			scale := float32(1 / math.Sqrt(float64(tc.d)))
			got, shape := compute(t, func(c *Context) *Tensor {
				qt := c.InputF32(q, int64(C+3), int64(tc.nq), int64(tc.b))
				qv := c.View(qt, [4]int64{int64(tc.d), int64(tc.heads), int64(tc.nq), int64(tc.b)}, 4*int64(tc.d), qt.Nb(1), qt.Nb(2), 0)
				kk := c.InputF32(k, int64(tc.d), int64(tc.heads), int64(tc.nk), int64(tc.kvb))
				return c.AttentionCPU(qv, kk, c.InputF32(v, int64(tc.d), int64(tc.heads), int64(tc.nk), int64(tc.kvb)), scale)
			})
			require.Equal(t, [4]int64{int64(C), int64(tc.nq), int64(tc.b), 1}, shape)
			for b := 0; b < tc.b; b++ {
				kb := b % tc.kvb
				for h := 0; h < tc.heads; h++ {
					for i := 0; i < tc.nq; i++ {
						s, size := make([]float64, tc.nk), make([]float64, tc.nk) // scores, and Σ|q·k| of each
						mx := math.Inf(-1)
						for j := range s {
							for d := 0; d < tc.d; d++ {
								p := float64(q[(b*tc.nq+i)*(C+3)+h*tc.d+d]) * float64(k[(kb*tc.nk+j)*C+h*tc.d+d])
								s[j] += p
								size[j] += math.Abs(p)
							}
							s[j] *= float64(scale)
							size[j] *= float64(scale)
							mx = math.Max(mx, s[j])
						}
						var sum float64
						for j := range s {
							s[j] = math.Exp(s[j] - mx)
							sum += s[j]
						}
						for d := 0; d < tc.d; d++ {
							var want, vAbs float64
							for j := range s {
								vj := float64(v[(kb*tc.nk+j)*C+h*tc.d+d])
								want += s[j] / sum * vj
								vAbs += s[j] / sum * math.Abs(vj)
							}
							var scoreErr float64 // how the output moves with each score's rounding
							for j := range s {
								scoreErr += s[j] / sum * size[j] * math.Abs(float64(v[(kb*tc.nk+j)*C+h*tc.d+d])-want)
							}
							g := float64(got[(b*tc.nq+i)*C+h*tc.d+d])
							// float32 sums of n terms round by about √n·2⁻²⁴ of
							// their magnitude: D products per score, Nk
							// weighted values per output (4: a safety factor)
							tol := 4 * 0x1p-24 * (math.Sqrt(float64(tc.d))*scoreErr + math.Sqrt(float64(tc.nk))*vAbs)
							require.InDelta(t, want, g, tol, "image %d head %d query %d dim %d", b, h, i, d)
						}
					}
				}
			}
		})
	}
	require.False(t, AttentionCPUFits(68, 10), "heads must be a multiple of 8")
	require.True(t, AttentionCPUFits(64, 1<<20), "any number of keys (online softmax)")
}

// requireProduct checks got, column j's row i at j·m+i, against a·bᵀ
// (a [m][k], b [n][k]) plus bias[i] (if any) in float64, within float32
// sums' rounding: 1e-6 of the terms' absolute sum.
func requireProduct(t *testing.T, a, b, bias []float32, k, m, n int, got []float32) {
	t.Helper()
	for j := 0; j < n; j++ {
		for i := 0; i < m; i++ {
			var want, size float64
			if bias != nil {
				want, size = float64(bias[i]), math.Abs(float64(bias[i]))
			}
			for kk := 0; kk < k; kk++ {
				p := float64(a[i*k+kk]) * float64(b[j*k+kk])
				want += p
				size += math.Abs(p)
			}
			require.InDelta(t, want, float64(got[j*m+i]), 1e-6*size, "row %d column %d", i, j)
		}
	}
}

// TestMulMatKernel checks our CPU product of f32 matrices (pm_mul_mat)
// against float64 and against ggml's: K in one block of MM_KC, split into
// two and three, and short; M below, at and past the register tile and
// the packed block (both thread splits: by M and, for few tiles, by N);
// N not a multiple of the tile; a and b as strided views, b with outer
// dimensions; q8_0 weights.
func TestMulMatKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, tc := range []struct{ k, m, n, b2 int }{
		{384, 25, 300, 1}, {385, 241, 30, 1}, {1000, 130, 17, 3}, {8, 4096, 70, 1},
		{64, 24, 1400, 1}, {384, 500, 12, 1},
	} {
		t.Run(fmt.Sprintf("k%d_m%d_n%d_b%d", tc.k, tc.m, tc.n, tc.b2), func(t *testing.T) {
			lda, ldb := tc.k+3, tc.k+5 // rows of views
			a, b := randn(r, lda*tc.m), randn(r, ldb*tc.n*tc.b2)
			build := func(ours bool) func(c *Context) *Tensor {
				return func(c *Context) *Tensor {
					at := c.InputF32(a, int64(lda), int64(tc.m))
					bt := c.InputF32(b, int64(ldb), int64(tc.n), int64(tc.b2))
					av := c.View(at, [4]int64{int64(tc.k), int64(tc.m), 1, 1}, at.Nb(1), at.Nb(2), at.Nb(3), 0)
					bv := c.View(bt, [4]int64{int64(tc.k), int64(tc.n), int64(tc.b2), 1}, bt.Nb(1), bt.Nb(2), bt.Nb(3), 0)
					c.SetCPUKernels(ours)
					y := c.MulMat(av, bv)
					require.Equal(t, ours, y.Op() == "CUSTOM", "our kernel takes the product")
					return y
				}
			}
			got, shape := compute(t, build(true))
			require.Equal(t, [4]int64{int64(tc.m), int64(tc.n), int64(tc.b2), 1}, shape)
			sameForThreads(t, "f32 product", build(true))
			ggmls, _ := compute(t, build(false))
			for j := 0; j < tc.n*tc.b2; j++ {
				for i := 0; i < tc.m; i++ {
					var want, size float64
					for k := 0; k < tc.k; k++ {
						p := float64(a[i*lda+k]) * float64(b[j*ldb+k])
						want += p
						size += math.Abs(p)
					}
					// float32 sums of K products, each rounded
					tol := 1e-6 * size
					require.InDelta(t, want, float64(got[j*tc.m+i]), tol, "row %d column %d", i, j)
					require.InDelta(t, want, float64(ggmls[j*tc.m+i]), tol, "ggml: row %d column %d", i, j)
				}
			}
		})
	}
	// q8_0 weights: dequantized as they are packed, times f32 activations
	// (ggml's CPU would quantize those to q8_0 too, so only float64 is
	// the reference).
	for _, tc := range []struct{ k, m, n int }{{640, 100, 300}, {2560, 30, 64}, {96, 4096, 8}, {320, 300, 97}} {
		t.Run(fmt.Sprintf("q8_0_k%d_m%d_n%d", tc.k, tc.m, tc.n), func(t *testing.T) {
			a, b := randn(r, tc.k*tc.m), randn(r, tc.k*tc.n)
			q, err := Quantize(TypeQ8_0, a, int64(tc.k))
			require.NoError(t, err)
			a, err = Dequantize(TypeQ8_0, q, int64(len(a)))
			require.NoError(t, err)
			b[7] = float32(math.NaN()) // column 0 shows it
			build := func(c *Context) *Tensor {
				y := c.MulMat(c.Input(TypeQ8_0, q, int64(tc.k), int64(tc.m)), c.InputF32(b, int64(tc.k), int64(tc.n)))
				require.Equal(t, "CUSTOM", y.Op(), "our kernel takes the product")
				return y
			}
			got, _ := compute(t, build)
			sameForThreads(t, "q8_0 product", build)
			for i := 0; i < tc.m; i++ {
				require.True(t, math.IsNaN(float64(got[i])), "row %d of the NaN's column: %g", i, got[i])
			}
			// With AVX2 the activations are rounded to 16 bits per 32, with
			// VNNI to 8 (quantizeActs): then checked as for q4_K, against
			// float64 of the rounded activations and the exact product
			// within the rounding's bound.
			levels := cpuKernelsQ8Levels()
			rounded := levels > 0 && tc.n >= 16
			for j := 1; j < tc.n; j++ {
				for i := 0; i < tc.m; i++ {
					var want, size, quantized, qsize, bound float64
					for k0 := 0; k0 < tc.k; k0 += 32 {
						x := b[j*tc.k+k0 : j*tc.k+k0+32]
						d, q := quantizeActs(x, max(levels, 1))
						for k := range 32 {
							v := float64(a[i*tc.k+k0+k])
							want += v * float64(x[k])
							size += math.Abs(v * float64(x[k]))
							quantized += v * d * q[k]
							qsize += math.Abs(v * d * q[k])
							bound += math.Abs(v) * d / 2
						}
					}
					if !rounded {
						require.InDelta(t, want, float64(got[j*tc.m+i]), 1e-6*size, "row %d column %d", i, j)
						continue
					}
					require.InDelta(t, quantized, float64(got[j*tc.m+i]), 1e-6*qsize, "row %d column %d", i, j)
					require.InDelta(t, want, float64(got[j*tc.m+i]), bound*(1+1e-5)+1e-6*size, "row %d column %d: exact", i, j)
				}
			}
		})
	}
	// In our kernels for x86 with AVX2, weights of quantized types without
	// integer products of ours (widenedTypes) are widened as they are
	// packed, by ggml's decoders, times at least cpuKernelsWidenMinN
	// activation rows (from exactly that many here): K in one and several
	// blocks of 256 values, against float64 of the decoded weights. One
	// row fewer stays ggml's.
	if minN := cpuKernelsWidenMinN(); minN > 0 {
		require.Equal(t, "amd64", runtime.GOARCH, "x86 only")
		for _, typ := range widenedTypes {
			for _, tc := range []struct{ k, m, n int }{{256, 100, 90}, {1024, 41, 64}, {768, 100, 33}} {
				tc.n = max(tc.n, minN+tc.n%8)
				t.Run(fmt.Sprintf("%s_k%d_m%d_n%d", typ, tc.k, tc.m, tc.n), func(t *testing.T) {
					a, b := randn(r, tc.k*tc.m), randn(r, tc.k*tc.n)
					q, err := Quantize(typ, a, int64(tc.k))
					require.NoError(t, err)
					a, err = Dequantize(typ, q, int64(len(a)))
					require.NoError(t, err)
					build := func(c *Context) *Tensor {
						y := c.MulMat(c.Input(typ, q, int64(tc.k), int64(tc.m)), c.InputF32(b, int64(tc.k), int64(tc.n)))
						require.Equal(t, "CUSTOM", y.Op(), "our kernel takes the product")
						return y
					}
					got, _ := compute(t, build)
					sameForThreads(t, typ.String()+" product", build)
					requireProduct(t, a, b, nil, tc.k, tc.m, tc.n, got)
				})
			}
			c := NewContext(8, 0)
			c.SetCPUKernels(true)
			y := c.MulMat(c.NewTensor(typ, 1024, 100), c.NewTensor(TypeF32, 1024, int64(minN-1)))
			require.Equal(t, "MUL_MAT", y.Op(), "%s times %d rows: ggml's", typ, minN-1)
			c.Free()
		}
	}
	// f16 and bf16 weights: widened as they are packed, times the f32
	// activations with f32 sums (ggml's CPU rounds the activations to the
	// weights' type, and sums f16 products in f16 on ARM with fp16
	// arithmetic), also with f32 accumulation asked for (the GPU's
	// setting) and a bias.
	for _, typ := range []Type{TypeF16, TypeBF16} {
		if typ == TypeBF16 && !cpuKernelsTakeBF16() {
			continue
		}
		for _, tc := range []struct{ k, m, n int }{{640, 100, 300}, {385, 100, 130}, {1000, 50, 129}} {
			t.Run(fmt.Sprintf("%s_k%d_m%d_n%d", typ, tc.k, tc.m, tc.n), func(t *testing.T) {
				a, b, bias := randn(r, tc.k*tc.m), randn(r, tc.k*tc.n), randn(r, tc.m)
				h, err := Quantize(typ, a, int64(tc.k))
				require.NoError(t, err)
				a, err = Dequantize(typ, h, int64(len(a)))
				require.NoError(t, err)
				build := func(c *Context) *Tensor {
					c.SetCPUKernels(true)
					c.SetF32Accumulation(true)
					y := c.MulMatBias(c.Input(typ, h, int64(tc.k), int64(tc.m)), c.InputF32(b, int64(tc.k), int64(tc.n)),
						c.InputF32(bias, int64(tc.m)))
					require.Equal(t, "CUSTOM", y.Op(), "our kernel takes the product")
					return y
				}
				got, _ := compute(t, build)
				sameForThreads(t, typ.String()+" product", build)
				requireProduct(t, a, b, bias, tc.k, tc.m, tc.n, got)
			})
		}
	}
	c := NewContext(32, 0)
	defer c.Free()
	c.SetCPUKernels(true)
	big := c.NewTensor(TypeF32, 256, 256)
	require.Equal(t, "CUSTOM", c.MulMat(big, c.NewTensor(TypeF32, 256, 64)).Op())
	require.Equal(t, "CUSTOM", c.MulMat(c.NewTensor(TypeF16, 256, 256), c.NewTensor(TypeF32, 256, 128)).Op(), "f16 weights")
	require.Equal(t, map[bool]string{true: "CUSTOM", false: "MUL_MAT"}[CPUSumsF16()],
		c.MulMat(c.NewTensor(TypeF16, 1280, 1280), c.NewTensor(TypeF32, 1280, 77)).Op(), "f16 weights, 77 tokens")
	require.Equal(t, map[bool]string{true: "CUSTOM", false: "MUL_MAT"}[cpuKernelsTakeBF16()],
		c.MulMat(c.NewTensor(TypeBF16, 256, 256), c.NewTensor(TypeF32, 256, 128)).Op(), "bf16 weights")
	require.Equal(t, map[bool]string{true: "CUSTOM", false: "MUL_MAT"}[CPUKernelsTakeInts(TypeQ4_K)],
		c.MulMat(c.NewTensor(TypeQ4_K, 256, 256), c.NewTensor(TypeF32, 256, 64)).Op(), "q4_K weights")
	require.Equal(t, "MUL_MAT", c.MulMat(c.NewTensor(TypeQ4_K, 256, 256), c.NewTensor(TypeF32, 256, 8)).Op(), "narrow q4_K products")
	require.Equal(t, "MUL_MAT", c.MulMat(big, c.NewTensor(TypeF32, 256, 3)).Op(), "matrix-vector products")
	require.Equal(t, "MUL_MAT", c.MulMat(c.NewTensor(TypeF32, 256, 256, 2), c.NewTensor(TypeF32, 256, 64, 2)).Op(), "batched a")
	require.Equal(t, "MUL_MAT", c.MulMat(c.NewTensor(TypeF32, 64, 64), c.NewTensor(TypeF32, 64, 64)).Op(), "small products")
}

// TestConv3x3Kernel checks our CPU Winograd convolution (pm_conv3x3)
// against the convolution in float64, in both tile sizes: widths and
// heights of every remainder (partial tiles), one pixel, rows of tiles
// longer than a vector; channel counts around the product's tiles; one and
// two images; f32 and f16 kernels; with and without bias; the image as a
// view with padded rows; of the image's nearest 2× upsample (up 2); in
// groups of output channels, each writing its own into the output; the
// kernel stored by row or a convolution's kernel permuted (a view).
func TestConv3x3Kernel(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for i, tc := range []struct {
		w, h, cin, cout, b int
		typ                Type
		bias               bool
		up                 int
		tile               int
		groupFloats        int64 // made in groups of output channels with at most this much transformed kernel each
	}{
		{16, 16, 8, 24, 1, TypeF32, true, 1, 2, 0}, {5, 3, 3, 5, 2, TypeF32, false, 1, 2, 0}, {1, 1, 4, 4, 1, TypeF32, true, 1, 2, 0},
		{33, 9, 37, 30, 2, TypeF16, true, 1, 2, 0}, {40, 2, 1, 1, 1, TypeF16, false, 1, 2, 0}, {7, 20, 64, 48, 1, TypeF32, true, 1, 2, 0},
		{5, 3, 3, 5, 2, TypeF32, true, 2, 2, 0}, {1, 1, 4, 4, 1, TypeF16, false, 2, 2, 0}, {13, 6, 24, 9, 1, TypeF32, true, 2, 2, 0},
		{4, 3, 700, 690, 1, TypeF32, true, 1, 2, 0}, {63, 64, 5, 4, 1, TypeF32, true, 1, 2, 0}, // U too large, or too few pixels, for F(4×4)
		{70, 61, 5, 7, 1, TypeF32, true, 1, 4, 0}, {67, 63, 16, 3, 1, TypeF16, false, 1, 4, 0}, {64, 64, 20, 9, 1, TypeF32, true, 1, 4, 0},
		{50, 45, 6, 9, 2, TypeF16, true, 1, 4, 0}, {33, 33, 4, 5, 1, TypeF32, true, 2, 4, 0}, {32, 34, 3, 2, 1, TypeF16, false, 2, 4, 0},
		{33, 9, 37, 30, 2, TypeF16, true, 1, 2, 16 * 37 * 10}, {13, 6, 24, 21, 1, TypeF32, false, 2, 2, 16 * 24 * 7},
		{50, 45, 6, 20, 2, TypeF16, true, 1, 4, 36 * 6 * 5},
		{3, 1400, 3, 4, 1, TypeF32, true, 1, 4, 0}, {1401, 2, 2, 5, 2, TypeF16, false, 1, 4, 0}, // one tile wide or high
	} {
		name := fmt.Sprintf("%dx%dx%d_to_%d_b%d_%s_bias%v_up%d", tc.w, tc.h, tc.cin, tc.cout, tc.b, tc.typ, tc.bias, tc.up)
		if i%2 == 1 {
			name += "_conv_layout"
		}
		if tc.groupFloats > 0 {
			name += "_groups"
		}
		t.Run(name, func(t *testing.T) {
			pixels := int64(tc.up * tc.w * tc.up * tc.h * tc.b)
			require.Equal(t, tc.tile, conv3x3CPUTile(int64(tc.cin), int64(tc.cout), pixels), "Winograd tile size")
			if tc.groupFloats > 0 {
				old := setConv3x3CPUGroupFloats(tc.groupFloats)
				defer setConv3x3CPUGroupFloats(old)
				require.Greater(t, conv3x3CPUGroups(int64(tc.cin), int64(tc.cout), pixels), int64(1), "groups of output channels")
			} else {
				require.Equal(t, int64(1), conv3x3CPUGroups(int64(tc.cin), int64(tc.cout), pixels), "groups of output channels")
			}
			row := tc.w + 2 // the view's row stride
			x := randn(r, row*tc.h*tc.cin*tc.b)
			byRow := randn(r, 9*tc.cin*tc.cout) // [3, Cin, Cout, 3]
			kb, err := Quantize(tc.typ, byRow, 3)
			require.NoError(t, err)
			if tc.typ == TypeF16 { // the reference multiplies what the kernel holds
				byRow, err = Dequantize(TypeF16, kb, int64(len(byRow)))
				require.NoError(t, err)
			}
			// Every other case takes the kernel in a convolution's layout [3, 3,
			// Cin, Cout], permuted to by-row's shape (a view).
			convLayout := i%2 == 1
			if convLayout {
				conv := make([]float32, len(byRow))
				for co := 0; co < tc.cout; co++ {
					for ci := 0; ci < tc.cin; ci++ {
						for ky := 0; ky < 3; ky++ {
							for kx := 0; kx < 3; kx++ {
								conv[kx+3*(ky+3*(ci+tc.cin*co))] = byRow[kx+3*(ci+tc.cin*(co+tc.cout*ky))]
							}
						}
					}
				}
				kb, err = Quantize(tc.typ, conv, 3) // f16: exact, byRow holds f16 values
				require.NoError(t, err)
			}
			bias := randn(r, tc.cout)
			got, shape := compute(t, func(c *Context) *Tensor {
				xt := c.InputF32(x, int64(row), int64(tc.h), int64(tc.cin), int64(tc.b))
				xv := c.View(xt, [4]int64{int64(tc.w), int64(tc.h), int64(tc.cin), int64(tc.b)}, xt.Nb(1), xt.Nb(2), xt.Nb(3), 0)
				k := c.Input(tc.typ, kb, 3, int64(tc.cin), int64(tc.cout), 3)
				if convLayout {
					k = c.Permute(c.Input(tc.typ, kb, 3, 3, int64(tc.cin), int64(tc.cout)), 0, 3, 1, 2)
				}
				require.True(t, Conv3x3CPUFits(k, xv))
				var bt *Tensor
				if tc.bias {
					bt = c.InputF32(bias, int64(tc.cout))
				}
				if tc.up == 2 {
					return c.UpsampleConv3x3CPU(k, xv, bt)
				}
				return c.Conv3x3CPU(k, xv, bt)
			})
			W, H := tc.up*tc.w, tc.up*tc.h // the convolved image
			// float32 sums, and the transforms' roundings: F(2×2)'s add up
			// to 16 terms; F(4×4)'s scale by up to 5·5 into V and 8·8 out
			// of M, so that its corner outputs carry ~10× the error
			// (measured: up to 4e-7·size with F(2×2), 1.2e-5·size with
			// F(4×4)).
			tol := map[int]float64{2: 1e-5, 4: 1e-4}[tc.tile]
			require.Equal(t, [4]int64{int64(W), int64(H), int64(tc.cout), int64(tc.b)}, shape)
			for b := 0; b < tc.b; b++ {
				for co := 0; co < tc.cout; co++ {
					for y := 0; y < H; y++ {
						for xx := 0; xx < W; xx++ {
							var want, size float64
							if tc.bias {
								want, size = float64(bias[co]), math.Abs(float64(bias[co]))
							}
							for ci := 0; ci < tc.cin; ci++ {
								for ky := 0; ky < 3; ky++ {
									for kx := 0; kx < 3; kx++ {
										sx, sy := xx+kx-1, y+ky-1
										if sx < 0 || sx >= W || sy < 0 || sy >= H {
											continue
										}
										sx, sy = sx/tc.up, sy/tc.up // nearest upsample
										p := float64(byRow[kx+3*(ci+tc.cin*(co+tc.cout*ky))]) * float64(x[((b*tc.cin+ci)*tc.h+sy)*row+sx])
										want += p
										size += math.Abs(p)
									}
								}
							}
							g := float64(got[((b*tc.cout+co)*H+y)*W+xx])
							require.InDelta(t, want, g, tol*size+1e-6, "image %d channel %d pixel %d,%d", b, co, xx, y)
						}
					}
				}
			}
		})
	}
}

// TestConv1x1Kernel checks our CPU 1×1 convolution (pm_conv1x1) against
// float64: both thread splits (many pixels, or few pixels and many output
// channels), output channels not a multiple of the tile, two images, the
// channel planes a view's strided ones, with and without bias, f32 and f16
// kernels.
func TestConv1x1Kernel(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 13))
	for _, tc := range []struct {
		w, h, cin, cout, b int
		bias, f16          bool
	}{
		{64, 64, 80, 7, 1, true, false}, {5, 5, 300, 900, 2, false, false}, {33, 17, 64, 130, 2, true, false},
		{5, 5, 300, 900, 2, true, true}, {33, 17, 64, 130, 2, false, true},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d_to_%d_b%d_bias%v_f16%v", tc.w, tc.h, tc.cin, tc.cout, tc.b, tc.bias, tc.f16), func(t *testing.T) {
			plane := tc.w*tc.h + 5 // the view's plane stride
			x := randn(r, plane*tc.cin*tc.b)
			w, bias := randn(r, tc.cin*tc.cout), randn(r, tc.cout)
			wtype := TypeF32
			if tc.f16 {
				wtype = TypeF16
				for i, v := range w { // the reference multiplies the values f16 holds
					w[i] = half.F16ToF32(half.F32ToF16(v))
				}
			}
			wb, err := Quantize(wtype, w, int64(tc.cin))
			require.NoError(t, err)
			build := func(c *Context) *Tensor {
				xt := c.InputF32(x, int64(plane), int64(tc.cin), int64(tc.b))
				xv := c.View(xt, [4]int64{int64(tc.w), int64(tc.h), int64(tc.cin), int64(tc.b)}, 4*int64(tc.w), xt.Nb(1), xt.Nb(2), 0)
				wt := c.Input(wtype, wb, int64(tc.cin), int64(tc.cout))
				require.True(t, Conv1x1CPUFits(wt, xv))
				var bt *Tensor
				if tc.bias {
					bt = c.InputF32(bias, int64(tc.cout))
				}
				return c.Conv1x1CPU(wt, xv, bt)
			}
			got, shape := compute(t, build)
			require.Equal(t, [4]int64{int64(tc.w), int64(tc.h), int64(tc.cout), int64(tc.b)}, shape)
			sameForThreads(t, "1×1 convolution", build)
			P := tc.w * tc.h
			for b := 0; b < tc.b; b++ {
				for co := 0; co < tc.cout; co++ {
					for p := 0; p < P; p++ {
						var want, size float64
						if tc.bias {
							want, size = float64(bias[co]), math.Abs(float64(bias[co]))
						}
						for ci := 0; ci < tc.cin; ci++ {
							v := float64(w[co*tc.cin+ci]) * float64(x[(b*tc.cin+ci)*plane+p])
							want += v
							size += math.Abs(v)
						}
						require.InDelta(t, want, float64(got[(b*tc.cout+co)*P+p]), 1e-6*size+1e-7, "image %d channel %d pixel %d", b, co, p)
					}
				}
			}
		})
	}
}

// TestConv3x3KernelThreads checks that the Winograd convolution's result
// does not depend on how threads split it (rows of tiles, and for few
// tiles output channels too): each output sums the same products in the
// same order, so 2, 3 and 8 threads give one thread's values bit for bit
// (F(2×2), in groups of output channels for the first case, and F(4×4)
// for the last).
func TestConv3x3KernelThreads(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 15))
	defer setConv3x3CPUGroupFloats(setConv3x3CPUGroupFloats(16 * 16 * 100)) // the first case in three groups
	for _, tc := range []struct{ w, h, cin, cout, b int }{{8, 8, 32, 256, 2}, {40, 12, 16, 40, 1}, {6, 6, 8, 520, 1}, {66, 64, 16, 40, 1}} {
		x, k, bias := randn(r, tc.w*tc.h*tc.cin*tc.b), randn(r, 9*tc.cin*tc.cout), randn(r, tc.cout)
		build := func(c *Context) *Tensor {
			return c.Conv3x3CPU(c.InputF32(k, 3, int64(tc.cin), int64(tc.cout), 3),
				c.InputF32(x, int64(tc.w), int64(tc.h), int64(tc.cin), int64(tc.b)), c.InputF32(bias, int64(tc.cout)))
		}
		sameForThreads(t, fmt.Sprintf("%+v", tc), build)
	}
}

// sameForThreads checks that build's graph computes the same values, bit
// for bit, with 1, 2, 3 and 8 threads: our kernels' thread splits must not
// change any output's arithmetic.
func sameForThreads(t *testing.T, what string, build func(c *Context) *Tensor) {
	t.Helper()
	var want []float32
	for _, threads := range []int{1, 2, 3, 8} {
		b, err := NewCPUBackend(threads)
		require.NoError(t, err)
		t.Cleanup(b.Close) // after the scheduler computeOn frees at cleanup (last registered, first run): freeing it reads its backends
		got, _ := computeOn(t, b, build)
		if want == nil {
			want = got
			continue
		}
		require.Len(t, got, len(want))
		for i := range want {
			if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
				t.Fatalf("%s with %d threads: value %d is %g, with one thread %g", what, threads, i, got[i], want[i])
			}
		}
	}
}

// TestGroupNormKernel checks our CPU group norm (pm_group_norm) with its
// affine transform, with and without SiLU, against float64: row widths
// around the vector width (the tail), one and two images, several groups,
// the image as a view with padded rows, values far from zero mean.
func TestGroupNormKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 17))
	for _, tc := range []struct{ w, h, c, b, groups int }{{16, 8, 32, 1, 32}, {13, 5, 12, 2, 4}, {3, 3, 8, 1, 1}, {40, 7, 64, 2, 32}} {
		for _, silu := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dx%dx%d_b%d_g%d_silu%v", tc.w, tc.h, tc.c, tc.b, tc.groups, silu), func(t *testing.T) {
				row := tc.w + 3
				x := randn(r, row*tc.h*tc.c*tc.b)
				for i := range x {
					x[i] = 3*x[i] + 5 // a mean far from zero: the variance pass must subtract it
				}
				w, bias := randn(r, tc.c), randn(r, tc.c)
				got, shape := compute(t, func(c *Context) *Tensor {
					xt := c.InputF32(x, int64(row), int64(tc.h), int64(tc.c), int64(tc.b))
					xv := c.View(xt, [4]int64{int64(tc.w), int64(tc.h), int64(tc.c), int64(tc.b)}, xt.Nb(1), xt.Nb(2), xt.Nb(3), 0)
					wt, bt := c.InputF32(w, int64(tc.c)), c.InputF32(bias, int64(tc.c))
					require.True(t, GroupNormCPUFits(xv, wt, bt, tc.groups))
					return c.GroupNormCPU(xv, wt, bt, tc.groups, 1e-6, silu)
				})
				require.Equal(t, [4]int64{int64(tc.w), int64(tc.h), int64(tc.c), int64(tc.b)}, shape)
				cg := tc.c / tc.groups
				at := func(b, ch, y, xx int) float64 { return float64(x[((b*tc.c+ch)*tc.h+y)*row+xx]) }
				for b := 0; b < tc.b; b++ {
					for g := 0; g < tc.groups; g++ {
						var sum, sum2 float64
						n := float64(tc.w * tc.h * cg)
						for ch := g * cg; ch < (g+1)*cg; ch++ {
							for y := 0; y < tc.h; y++ {
								for xx := 0; xx < tc.w; xx++ {
									sum += at(b, ch, y, xx)
								}
							}
						}
						mean := sum / n
						for ch := g * cg; ch < (g+1)*cg; ch++ {
							for y := 0; y < tc.h; y++ {
								for xx := 0; xx < tc.w; xx++ {
									d := at(b, ch, y, xx) - mean
									sum2 += d * d
								}
							}
						}
						rstd := 1 / math.Sqrt(sum2/n+1e-6)
						for ch := g * cg; ch < (g+1)*cg; ch++ {
							for y := 0; y < tc.h; y++ {
								for xx := 0; xx < tc.w; xx++ {
									norm := (at(b, ch, y, xx) - mean) * rstd * float64(w[ch])
									want := norm + float64(bias[ch])
									if silu {
										want /= 1 + math.Exp(-want)
									}
									tol := 2e-6 * (math.Abs(norm) + math.Abs(float64(bias[ch])) + 1)
									require.InDelta(t, want, float64(got[((b*tc.c+ch)*tc.h+y)*tc.w+xx]), tol,
										"image %d channel %d pixel %d,%d", b, ch, xx, y)
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestLayerNormKernel checks our CPU layer norm (pm_layer_norm) with its
// affine transform against float64: row lengths around the vector width
// (the tail), rows of a view with padding, outer dimensions, with and
// without bias, values far from zero mean.
func TestLayerNormKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 19))
	for _, tc := range []struct {
		n, rows, planes int
		bias            bool
	}{{8, 3, 1, true}, {13, 4, 2, false}, {1280, 5, 2, true}, {77, 1, 1, true}} {
		t.Run(fmt.Sprintf("%dx%dx%d_bias%v", tc.n, tc.rows, tc.planes, tc.bias), func(t *testing.T) {
			ld := tc.n + 3
			x := randn(r, ld*tc.rows*tc.planes)
			for i := range x {
				x[i] = 2*x[i] - 7
			}
			w, bias := randn(r, tc.n), randn(r, tc.n)
			got, shape := compute(t, func(c *Context) *Tensor {
				xt := c.InputF32(x, int64(ld), int64(tc.rows), int64(tc.planes))
				xv := c.View(xt, [4]int64{int64(tc.n), int64(tc.rows), int64(tc.planes), 1}, xt.Nb(1), xt.Nb(2), xt.Nb(3), 0)
				var bt *Tensor
				if tc.bias {
					bt = c.InputF32(bias, int64(tc.n))
				}
				wt := c.InputF32(w, int64(tc.n))
				require.True(t, LayerNormCPUFits(xv, wt, bt))
				return c.LayerNormCPU(xv, wt, bt, 1e-5)
			})
			require.Equal(t, [4]int64{int64(tc.n), int64(tc.rows), int64(tc.planes), 1}, shape)
			for row := 0; row < tc.rows*tc.planes; row++ {
				in := x[row*ld : row*ld+tc.n]
				var sum, sum2 float64
				for _, v := range in {
					sum += float64(v)
				}
				mean := sum / float64(tc.n)
				for _, v := range in {
					sum2 += (float64(v) - mean) * (float64(v) - mean)
				}
				rstd := 1 / math.Sqrt(sum2/float64(tc.n)+1e-5)
				for i, v := range in {
					norm := (float64(v) - mean) * rstd * float64(w[i])
					want := norm
					if tc.bias {
						want += float64(bias[i])
					}
					require.InDelta(t, want, float64(got[row*tc.n+i]), 2e-6*(math.Abs(norm)+math.Abs(float64(bias[i]))+1), "row %d value %d", row, i)
				}
			}
		})
	}
}

// kBlock is a q4_K or q5_K super-block decoded: value i is
// d·sc[i/32]·q[i] − dmin·mn[i/32] (ggml's layouts, read here independently
// of ggml and of our kernel).
type kBlock struct {
	d, dmin float64
	sc, mn  [8]float64
	q       [256]float64
}

// decodeB32 decodes a block of 32 values of q4_0, q4_1, q5_0 or q5_1 into
// its scale d, offset m and unsigned q: each value d·q + m.
func decodeB32(typ Type, b []byte) (d, m float64, q [32]float64) {
	d = float64(half.F16ToF32(binary.LittleEndian.Uint16(b)))
	qs := b[2:]
	switch typ {
	case TypeQ4_0:
		m = -8 * d
	case TypeQ5_0:
		m = -16 * d
	default:
		m = float64(half.F16ToF32(binary.LittleEndian.Uint16(b[2:])))
		qs = b[4:]
	}
	var qh uint32
	if typ == TypeQ5_0 || typ == TypeQ5_1 {
		qh, qs = binary.LittleEndian.Uint32(qs), qs[4:]
	}
	for j := range 16 {
		q[j] = float64(qs[j]&0xF | byte(qh>>j&1)<<4)
		q[j+16] = float64(qs[j]>>4 | byte(qh>>(j+16)&1)<<4)
	}
	return d, m, q
}

// decodeK decodes a q4_K super-block (144 bytes), or with q5 a q5_K one
// (176: its qh[32] between the scales and the low bits holds bit j of value
// l of sub-block j in bit j of byte l).
func decodeK(b []byte, q5 bool) kBlock {
	var blk kBlock
	blk.d = float64(half.F16ToF32(binary.LittleEndian.Uint16(b)))
	blk.dmin = float64(half.F16ToF32(binary.LittleEndian.Uint16(b[2:])))
	s := b[4:16]
	for j := 0; j < 8; j++ {
		var sc, mn byte
		if j < 4 {
			sc, mn = s[j]&63, s[j+4]&63
		} else {
			sc, mn = s[j+4]&0xF|(s[j-4]>>6)<<4, s[j+4]>>4|(s[j]>>6)<<4
		}
		blk.sc[j], blk.mn[j] = float64(sc), float64(mn)
	}
	qs, qh := b[16:], []byte(nil)
	if q5 {
		qs, qh = b[48:], b[16:48]
	}
	for c := 0; c < 4; c++ {
		for l := 0; l < 32; l++ {
			v := qs[32*c+l]
			blk.q[64*c+l], blk.q[64*c+32+l] = float64(v&0xF), float64(v>>4)
			if q5 {
				blk.q[64*c+l] += float64(16 * (qh[l] >> (2 * c) & 1))
				blk.q[64*c+32+l] += float64(16 * (qh[l] >> (2*c + 1) & 1))
			}
		}
	}
	return blk
}

// quantizeActs is what our integer products make of a block of
// activations, in float32 as the kernels compute it: q = round(x·(levels /
// max|x|)), x ≈ q·max/levels. The q4_K product rounds 256 to 127 levels,
// the q8_0 product 32 to 127 (with VNNI) or 32767.
func quantizeActs(x []float32, levels float32) (d float64, q []float64) {
	q = make([]float64, len(x))
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	if amax == 0 {
		return 0, q
	}
	iscale := levels / amax
	for i, v := range x {
		q[i] = math.RoundToEven(float64(v * iscale))
	}
	return float64(amax / levels), q
}

// TestMulMatIntKernel checks our CPU products of quantized weights in
// integers (pm_mul_mat's cpu_quant.c; q8_0's in TestMulMatKernel) two
// ways: against the same products with the activations quantized as the
// kernel quantizes them (quantizeActs, per 256 values for the K-quants, per
// 32 for the others; any slip in the integer sums, scales, mins or tiles
// shows), and against the exact product with a bound on what quantizing the
// activations may change (half a step per value). Sizes: K of one to ten
// super-blocks (one, two and three K blocks), M and N tails, several row
// blocks and column chunks, a batch, strided rows, an all-zero activation
// row, and each thread split.
func TestMulMatIntKernel(t *testing.T) {
	if !CPUKernelsTakeInts(TypeQ4_K) {
		t.Skip("our integer products need AVX2")
	}
	r := rand.New(rand.NewPCG(21, 21))
	for _, tc := range []struct {
		typ         Type
		k, m, n, b2 int
		largest     bool // weights near their blocks' largest values times equal activations: the 16-bit sums' worst case
	}{
		{TypeQ4_K, 256, 16, 600, 1, false}, {TypeQ4_K, 1280, 45, 100, 1, false}, {TypeQ4_K, 2560, 300, 20, 2, false},
		{TypeQ4_K, 512, 20, 250, 1, false}, {TypeQ4_K, 1024, 130, 200, 1, false}, {TypeQ5_K, 1280, 45, 100, 1, false},
		{TypeQ5_K, 2560, 300, 20, 2, false}, {TypeQ5_K, 256, 16, 600, 1, false},
		{TypeQ4_K, 512, 32, 128, 1, true}, {TypeQ5_K, 512, 32, 128, 1, true},
		{TypeQ6_K, 1280, 45, 100, 1, false}, {TypeQ6_K, 2560, 300, 20, 2, false}, {TypeQ6_K, 256, 16, 600, 1, false},
		{TypeQ6_K, 512, 32, 128, 1, true},
		{TypeQ4_0, 1280, 45, 100, 1, false}, {TypeQ4_0, 2560, 300, 20, 2, false}, {TypeQ4_0, 96, 24, 1000, 1, false},
		{TypeQ4_0, 512, 32, 128, 1, true}, {TypeQ5_0, 640, 45, 100, 1, false}, {TypeQ5_0, 1024, 130, 200, 1, false},
		{TypeQ5_0, 512, 32, 128, 1, true}, {TypeQ4_1, 2560, 300, 20, 2, false}, {TypeQ4_1, 512, 32, 128, 1, true},
		{TypeQ5_1, 320, 40, 250, 1, false}, {TypeQ5_1, 512, 32, 128, 1, true},
		{TypeQ3_K, 1280, 45, 100, 1, false}, {TypeQ3_K, 2560, 300, 20, 2, false}, {TypeQ3_K, 256, 16, 600, 1, false},
		{TypeQ3_K, 512, 32, 128, 1, true},
		{TypeQ2_K, 1280, 45, 100, 1, false}, {TypeQ2_K, 2560, 300, 20, 2, false}, {TypeQ2_K, 256, 16, 600, 1, false},
		{TypeQ2_K, 512, 32, 128, 1, true},
	} {
		t.Run(fmt.Sprintf("%s_k%d_m%d_n%d_b%d_largest%v", tc.typ, tc.k, tc.m, tc.n, tc.b2, tc.largest), func(t *testing.T) {
			ldb, cols := tc.k+8, tc.n*tc.b2 // b's rows are a view's
			a, b := randn(r, tc.k*tc.m), randn(r, ldb*cols)
			if tc.largest {
				for i := range a {
					a[i] = 1 + 0.5*float32(math.Pow(r.Float64(), 0.1))
					if i%32 == 0 && (tc.typ == TypeQ4_0 || tc.typ == TypeQ5_0) {
						a[i] = -1.6 // the block's scale negative, so the others' q are the largest
					}
				}
				for i := range b {
					b[i] = 1
				}
			}
			clear(b[3*ldb : 4*ldb])
			qa, err := Quantize(tc.typ, a, int64(tc.k))
			require.NoError(t, err)
			build := func(c *Context) *Tensor {
				bt := c.InputF32(b, int64(ldb), int64(tc.n), int64(tc.b2))
				bv := c.View(bt, [4]int64{int64(tc.k), int64(tc.n), int64(tc.b2), 1}, bt.Nb(1), bt.Nb(2), bt.Nb(3), 0)
				y := c.MulMat(c.Input(tc.typ, qa, int64(tc.k), int64(tc.m)), bv)
				require.Equal(t, "CUSTOM", y.Op(), "our kernel takes the product")
				return y
			}
			got, shape := compute(t, build)
			require.Equal(t, [4]int64{int64(tc.m), int64(tc.n), int64(tc.b2), 1}, shape)
			// each weight's value, and the size of the float sums' terms it
			// brings (q4_K, q5_K, q2_K: d·sc·q and dmin·mn; q4_0, q4_1, q5_0,
			// q5_1: d·q and m; q6_K, q3_K: the value)
			block := int(tc.typ.BlockSize()) // the activations' blocks: 256 or 32
			nsb := tc.k / block
			value, termSize := make([]float64, tc.k*tc.m), make([]float64, tc.k*tc.m)
			switch tc.typ {
			case TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1:
				for i := range tc.m * nsb {
					d, m, q := decodeB32(tc.typ, qa[int(tc.typ.BlockBytes())*i:])
					for k := range 32 {
						value[32*i+k], termSize[32*i+k] = d*q[k]+m, math.Abs(d*q[k])+math.Abs(m)
					}
				}
			case TypeQ2_K: // d·s_j·q − dmin·m_j per 16 values
				for i := range tc.m * nsb {
					b := qa[int(tc.typ.BlockBytes())*i:]
					d := float64(half.F16ToF32(binary.LittleEndian.Uint16(b[80:])))
					dmin := float64(half.F16ToF32(binary.LittleEndian.Uint16(b[82:])))
					for k := range 256 {
						sm := b[k/16]
						q := float64(b[16+32*(k/128)+k%32] >> (2 * (k / 32 % 4)) & 3)
						sc, mn := d*float64(sm&15)*q, dmin*float64(sm>>4)
						value[256*i+k], termSize[256*i+k] = sc-mn, sc+mn
					}
				}
			case TypeQ6_K, TypeQ3_K:
				v, err := Dequantize(tc.typ, qa, int64(tc.k*tc.m))
				require.NoError(t, err)
				for i := range v {
					value[i], termSize[i] = float64(v[i]), math.Abs(float64(v[i]))
				}
			default:
				for i := range tc.m * nsb {
					w := decodeK(qa[int(tc.typ.BlockBytes())*i:], tc.typ == TypeQ5_K)
					for k := range 256 {
						value[256*i+k] = w.d*w.sc[k/32]*w.q[k] - w.dmin*w.mn[k/32]
						termSize[256*i+k] = w.d*w.sc[k/32]*w.q[k] + w.dmin*w.mn[k/32]
					}
				}
			}
			for j := 0; j < cols; j++ {
				for i := 0; i < tc.m; i++ {
					var exact, quantized, size, bound float64
					for s := 0; s < nsb; s++ {
						x := b[j*ldb+block*s : j*ldb+block*s+block]
						d, q := quantizeActs(x, 127)
						for k := range block {
							v := value[i*tc.k+block*s+k]
							exact += v * float64(x[k])
							quantized += v * d * q[k]
							size += termSize[i*tc.k+block*s+k] * d * math.Abs(q[k])
							bound += math.Abs(v) * d / 2
						}
					}
					require.InDelta(t, quantized, float64(got[j*tc.m+i]), 1e-6*size+1e-30, "row %d column %d", i, j)
					require.InDelta(t, exact, float64(got[j*tc.m+i]), bound*(1+1e-5)+1e-6*size+1e-30, "row %d column %d: exact", i, j)
				}
			}
			sameForThreads(t, tc.typ.String()+" product", build)
		})
	}
	// A NaN or infinite activation shows in its column, as with f32
	// products, for every type (q8_0's in TestMulMatKernel).
	const K, M, N = 512, 32, 256
	a, b := randn(r, K*M), randn(r, K*N)
	b[5*K+300], b[9*K+7] = float32(math.NaN()), float32(math.Inf(1))
	for _, typ := range []Type{TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeQ3_K, TypeQ2_K, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1} {
		qa, err := Quantize(typ, a, K)
		require.NoError(t, err)
		got, _ := compute(t, func(c *Context) *Tensor {
			return c.MulMat(c.Input(typ, qa, K, M), c.InputF32(b, K, N))
		})
		for j := 0; j < N; j++ {
			for i := 0; i < M; i++ {
				v := float64(got[j*M+i])
				if j == 5 || j == 9 {
					require.False(t, !math.IsNaN(v) && !math.IsInf(v, 0), "%s: column %d row %d: %g", typ, j, i, v)
				} else {
					require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%s: column %d row %d: %g", typ, j, i, v)
				}
			}
		}
	}
}

// TestMulMatBias checks that our products add a Linear layer's bias as they
// store their sums bit for bit as MulMat then Add would (every kind of
// product, sums over several blocks of K, row and column tails, a batch),
// and that a bias they do not take goes through Add.
func TestMulMatBias(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 23))
	for _, tc := range []struct {
		typ         Type
		k, m, n, b2 int
	}{
		{TypeF32, 1000, 45, 37, 2}, {TypeQ8_0, 640, 45, 37, 2}, {TypeQ8_0, 4096, 64, 8, 1}, {TypeQ4_K, 1280, 45, 37, 2},
		{TypeQ5_K, 512, 100, 41, 1}, {TypeQ5_0, 640, 45, 37, 2}, {TypeQ4_1, 4096, 64, 20, 1}, {TypeQ3_K, 512, 100, 41, 1},
		{TypeQ6_K, 1024, 45, 37, 2}, {TypeQ2_K, 768, 45, 37, 2},
	} {
		t.Run(fmt.Sprintf("%s_k%d_m%d_n%d_b%d", tc.typ, tc.k, tc.m, tc.n, tc.b2), func(t *testing.T) {
			if tc.typ.Quantized() && tc.typ != TypeQ8_0 && !CPUKernelsTakeInts(tc.typ) {
				t.Skip("our products of this type need AVX2")
			}
			w, err := Quantize(tc.typ, randn(r, tc.k*tc.m), int64(tc.k))
			require.NoError(t, err)
			x, bias := randn(r, tc.k*tc.n*tc.b2), randn(r, tc.m)
			product := func(fused bool) func(c *Context) *Tensor {
				return func(c *Context) *Tensor {
					a, b, bt := c.Input(tc.typ, w, int64(tc.k), int64(tc.m)), c.InputF32(x, int64(tc.k), int64(tc.n), int64(tc.b2)), c.InputF32(bias, int64(tc.m))
					if !fused {
						return c.Add(c.MulMat(a, b), bt)
					}
					y := c.MulMatBias(a, b, bt)
					require.Equal(t, "CUSTOM", y.Op(), "our kernel adds the bias")
					return y
				}
			}
			want, _ := compute(t, product(false))
			got, shape := compute(t, product(true))
			require.Equal(t, [4]int64{int64(tc.m), int64(tc.n), int64(tc.b2), 1}, shape)
			for i := range want {
				require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "value %d: %g, MulMat then Add %g", i, got[i], want[i])
			}
			sameForThreads(t, "product with bias", product(true))
		})
	}
	c := NewContext(16, 0)
	defer c.Free()
	c.SetCPUKernels(true)
	a, b := c.NewTensor(TypeF32, 256, 256), c.NewTensor(TypeF32, 256, 64)
	require.Equal(t, "ADD", c.MulMatBias(a, b, c.NewTensor(TypeF16, 256)).Op(), "an f16 bias")
	require.Equal(t, "ADD", c.MulMatBias(a, b, c.NewTensor(TypeF32, 256, 64)).Op(), "a bias per column")
	c.SetCPUKernels(false)
	require.Equal(t, "ADD", c.MulMatBias(a, b, c.NewTensor(TypeF32, 256)).Op(), "graphs without our kernels")
}

// widenedTypes are quantized types our CPU kernels widen to f32 in their
// products (x86 with AVX2), through ggml's decoders: the types of ggml's
// without integer products of ours (every type photomaker writes has one),
// such as iq4_nl, which files from other tools may hold.
var widenedTypes = []Type{typeIQ4NL}

// typeIQ4NL is ggml's GGML_TYPE_IQ4_NL (TestWidenedTypes checks the name).
const typeIQ4NL Type = 20

func TestWidenedTypes(t *testing.T) {
	require.Equal(t, "iq4_nl", typeIQ4NL.String())
}
