package nn

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/stretchr/testify/require"
)

// TestBandedConv2D checks the banded convolution against ggml's one-buffer
// im2col convolution, with f32 and f16 kernels: bands of one row, of a few rows (with a ragged last
// band), and a single band, for "same" 3×3 convolutions, a stride-2 one, and
// a 3×3 one without padding, on sizes that do not divide evenly.
func TestBandedConv2D(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, tc := range []struct {
		w, h, cin, cout, k, stride, pad int64
	}{
		{13, 11, 5, 7, 3, 1, 1},
		{16, 9, 8, 4, 3, 2, 1},
		{10, 12, 3, 6, 3, 1, 0},
		{9, 17, 4, 5, 5, 1, 2},
	} {
		x := make([]float32, tc.w*tc.h*tc.cin)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		wk := make([]float32, tc.k*tc.k*tc.cin*tc.cout)
		for i := range wk {
			wk[i] = float32(r.NormFloat64())
		}
		s, p := int(tc.stride), int(tc.pad)
		for _, typ := range []ggml.Type{ggml.TypeF32, ggml.TypeF16} { // f16: kernel and columns
			kernel := func(c *ggml.Context) *ggml.Tensor {
				return c.Cast(c.InputF32(wk, tc.k, tc.k, tc.cin, tc.cout), typ)
			}
			want := run(t, func(c *ggml.Context) *ggml.Tensor {
				return c.Conv2D(kernel(c), c.InputF32(x, tc.w, tc.h, tc.cin, 1), s, s, p, p, 1, 1)
			})
			ow := (tc.w+2*tc.pad-tc.k)/tc.stride + 1
			rowCols := tc.k * tc.k * tc.cin * ow * typ.BlockBytes()
			for i, rows := range []int64{0, 1, 2, 3, 1000} { // 0: one output row per band
				got := run(t, func(c *ggml.Context) *ggml.Tensor {
					c.SetContiguousIm2Col(i%2 == 1) // bands as views, or copied as for Vulkan
					c.SetBandsBySet(i >= 2)         // bands written (CUDA, CPU), or added into zeros (Vulkan)
					y := BandedConv2D(c, kernel(c), c.InputF32(x, tc.w, tc.h, tc.cin, 1), s, p, rows*rowCols)
					require.Equal(t, [4]int64{ow, (tc.h+2*tc.pad-tc.k)/tc.stride + 1, tc.cout, 1}, y.Shape())
					if last := y.Src(0).Op(); rows < 3 {
						require.Equal(t, map[bool]string{true: "SET", false: "ACC"}[i >= 2], last, "how the last band is placed")
					}
					return y
				})
				require.Len(t, got, len(want))
				// Both are ggml's products, whose f16 ones sum in f16 on ARM
				// with fp16 arithmetic: each of the k·k·cin additions may
				// round by half an f16 step, and differently in bands.
				tol := 1e-5
				if typ == ggml.TypeF16 && ggml.CPUSumsF16() {
					tol = float64(tc.k*tc.k*tc.cin) * 0x1p-11
				}
				for i := range want {
					require.InDelta(t, want[i], got[i], tol*math.Max(1, math.Abs(float64(want[i]))),
						"%+v %s, %d rows per band: element %d", tc, typ, rows, i)
				}
			}
		}
	}
}

// TestF32Accumulation checks that the runtime's switch reaches the products
// of f16 weights in Linear and Conv2D graphs, and only them.
func TestF32Accumulation(t *testing.T) {
	// The convolution's product of f16 columns (a plain build's CPU would
	// cast the kernel to f32 instead: productsInF32).
	defer func(old func() bool) { productsInF32 = old }(productsInF32)
	productsInF32 = func() bool { return false }
	for _, on := range []bool{false, true} {
		rt, err := NewRuntime("cpu", 1)
		require.NoError(t, err)
		require.True(t, rt.F32Accumulation, "the default")
		rt.F32Accumulation = on
		var muls []*ggml.Tensor
		g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
			f16 := func(ne ...int64) *ggml.Tensor {
				n := int64(1)
				for _, d := range ne {
					n *= d
				}
				return c.Cast(c.InputF32(make([]float32, n), ne...), ggml.TypeF16)
			}
			lin := Linear{Weight: f16(8, 4)}
			conv := Conv2D{Weight: f16(3, 3, 4, 2)}
			x := c.InputF32(make([]float32, 8*5), 8, 5)
			img := c.InputF32(make([]float32, 6*6*4), 6, 6, 4, 1)
			y := lin.Forward(c, x)
			z := conv.Forward(c, img, 1, 1)
			f32 := c.MulMat(c.InputF32(make([]float32, 8*3), 8, 3), x)
			muls = []*ggml.Tensor{y, z.Src(0), f32}
			return []*ggml.Tensor{y, z, f32}
		})
		require.NoError(t, err)
		require.Equal(t, on, muls[0].PreciseF32(), "Linear, f32 accumulation %v", on)
		require.Equal(t, on, muls[1].PreciseF32(), "Conv2D, f32 accumulation %v", on)
		require.False(t, muls[2].PreciseF32(), "f32 weights need no flag")
		g.Close()
		rt.Close()
	}
}

// TestConv2DByRow binds the same kernels twice, in PyTorch's layout and by
// kernel row (Weights.StoreKernelsByRow), and checks that both convolve
// alike: strides 1 and 2, batches of 1 to 3 (the junk rows between images
// skipped), odd sizes, with and without a bias, f32 and f16 kernels.
func TestConv2DByRow(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2))
	set := weights.NewSet()
	vals := map[string][]float32{}
	add := func(name string, shape ...int64) {
		tt, v := randT(r, name, shape...)
		require.NoError(t, set.Add(tt))
		vals[name] = v
	}
	add("a.weight", 6, 5, 3, 3)
	add("a.bias", 6)
	add("b.weight", 64, 3, 3, 3) // wide enough for MulMatF32's two halves
	type convs struct {
		A Conv2D `w:"a"`
		B Conv2D `w:"b"`
	}
	for _, typ := range []ggml.Type{ggml.TypeF32, ggml.TypeF16} {
		policy := func(string, *weights.Tensor) ggml.Type { return typ }
		rt, err := NewRuntime("cpu", 2)
		require.NoError(t, err)
		plain, byRow := NewWeights(8, KeepPrecise(policy)), NewWeights(8, KeepPrecise(policy))
		byRow.StoreKernelsByRow()
		var p, q convs
		require.NoError(t, plain.Bind(set, "", &p))
		require.NoError(t, byRow.Bind(set, "", &q))
		require.True(t, q.A.byRow && q.B.byRow && !p.A.byRow)
		require.Equal(t, [4]int64{3, 5, 6, 3}, q.A.Weight.Shape())
		require.Equal(t, p.A.OutChannels(), q.A.OutChannels())
		require.NoError(t, plain.Upload(context.Background(), rt.Device, nil))
		require.NoError(t, byRow.Upload(context.Background(), rt.Device, nil))
		// What the layers hold: kernels rounded to typ, biases in f32
		// (KeepPrecise).
		stored := func(name string) []float64 {
			v, ok := vals[name]
			if !ok {
				return nil
			}
			if typ == ggml.TypeF16 && strings.HasSuffix(name, ".weight") {
				b, err := ggml.Quantize(typ, v, int64(len(v)))
				require.NoError(t, err)
				v, err = ggml.Dequantize(typ, b, int64(len(v)))
				require.NoError(t, err)
			}
			out := make([]float64, len(v))
			for i, x := range v {
				out[i] = float64(x)
			}
			return out
		}
		for _, tc := range []struct{ w, h, b, stride int64 }{
			{7, 5, 1, 1}, {7, 5, 2, 1}, {8, 9, 3, 1}, {9, 7, 1, 2}, {10, 11, 2, 2}, {1, 1, 2, 1},
			{17, 15, 1, 1}, {12, 12, 2, 1}, // enough tiles for the Winograd kernel (ggml.Conv3x3CPUPays)
		} {
			winograd := tc.stride == 1 && (tc.w+1)/2*((tc.h+1)/2)*tc.b >= 64
			for i, name := range []string{"a", "b"} {
				pair := [2]*Conv2D{&p.A, &q.A}
				if name == "b" {
					pair = [2]*Conv2D{&p.B, &q.B}
				}
				cin := pair[0].Weight.Ne(2)
				x := make([]float32, tc.w*tc.h*cin*tc.b)
				for j := range x {
					x[j] = float32(r.NormFloat64())
				}
				conv := func(l *Conv2D, ourKernels bool, f32Columns bool) []float32 {
					defer func(old func() bool) { productsInF32 = old }(productsInF32)
					productsInF32 = func() bool { return f32Columns }
					out, err := rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor {
						c.SetCPUKernels(ourKernels)
						y := l.Forward(c, c.InputF32(x, tc.w, tc.h, cin, tc.b), int(tc.stride), 1)
						o := (tc.w-1)/tc.stride + 1
						require.Equal(t, [4]int64{o, (tc.h-1)/tc.stride + 1, l.OutChannels(), tc.b}, y.Shape())
						return []*ggml.Tensor{y}
					})
					require.NoError(t, err)
					return out[0].Data
				}
				want, size := conv2D64(x, stored(name+".weight"), stored(name+".bias"), tc.w, tc.h, cin, tc.b, tc.stride)
				for _, run := range []struct {
					what string
					got  []float32
				}{
					{"plain", conv(pair[0], true, false)},
					{"plain, f32 columns", conv(pair[0], true, true)},
					{"by row", conv(pair[1], false, false)},
					{"by row, our kernels", conv(pair[1], true, false)}, // Winograd for enough tiles
					{"by row, our kernels, f32 columns", conv(pair[1], true, true)},
				} {
					require.Len(t, run.got, len(want))
					exact := run.what == "by row, our kernels" && winograd || strings.HasSuffix(run.what, "f32 columns")
					for j := range want {
						// float32 sums; f16 kernels multiply f16 columns in
						// ggml's products: each input rounded by up to 2⁻¹¹
						tol := 1e-5 * size[j]
						if typ == ggml.TypeF16 && !exact {
							tol += math.Ldexp(size[j], -11)
						}
						require.InDelta(t, want[j], run.got[j], tol, "%s %+v conv %d %s: element %d", typ, tc, i, run.what, j)
					}
				}
			}
		}
		plain.Free()
		byRow.Free()
		rt.Close()
	}
}

// conv2D64 convolves x [W, H, Cin, B] with a PyTorch kernel w [Cout, Cin,
// 3, 3] (and bias, if any) at padding 1 in float64; size is each output's
// sum of absolute terms.
func conv2D64(x []float32, w, bias []float64, W, H, cin, B, stride int64) (y, size []float64) {
	cout := int64(len(w)) / (9 * cin)
	ow, oh := (W-1)/stride+1, (H-1)/stride+1
	y, size = make([]float64, ow*oh*cout*B), make([]float64, ow*oh*cout*B)
	for b := int64(0); b < B; b++ {
		for co := int64(0); co < cout; co++ {
			for oy := int64(0); oy < oh; oy++ {
				for ox := int64(0); ox < ow; ox++ {
					var s, abs float64
					if bias != nil {
						s, abs = bias[co], math.Abs(bias[co])
					}
					for ci := int64(0); ci < cin; ci++ {
						for ky := int64(0); ky < 3; ky++ {
							for kx := int64(0); kx < 3; kx++ {
								sx, sy := ox*stride+kx-1, oy*stride+ky-1
								if sx >= 0 && sx < W && sy >= 0 && sy < H {
									p := w[((co*cin+ci)*3+ky)*3+kx] * float64(x[((b*cin+ci)*H+sy)*W+sx])
									s, abs = s+p, abs+math.Abs(p)
								}
							}
						}
					}
					y[((b*cout+co)*oh+oy)*ow+ox], size[((b*cout+co)*oh+oy)*ow+ox] = s, abs
				}
			}
		}
	}
	return y, size
}

// UpsampleConv2D against the two steps it replaces (ggml's nearest upsample
// and im2col convolution), whole and in bands of one, two or three input
// rows, with the bands' rows as views or copies, on odd and even sizes.
func TestUpsampleConv2D(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, tc := range []struct{ w, h, cin, cout int64 }{{5, 7, 3, 4}, {8, 6, 6, 5}, {1, 1, 2, 3}, {4, 9, 16, 8}} {
		x := make([]float32, tc.w*tc.h*tc.cin)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		wk := make([]float32, 3*3*tc.cin*tc.cout)
		for i := range wk {
			wk[i] = float32(r.NormFloat64())
		}
		for _, typ := range []ggml.Type{ggml.TypeF32, ggml.TypeF16} { // the weights' type; products in f32
			kernel := func(c *ggml.Context) *ggml.Tensor { return c.Cast(c.InputF32(wk, 3, 3, tc.cin, tc.cout), typ) }
			want := run(t, func(c *ggml.Context) *ggml.Tensor {
				up := c.UpscaleNearest(c.InputF32(x, tc.w, tc.h, tc.cin, 1), 2)
				return c.Conv2D(c.Cast(kernel(c), ggml.TypeF32), up, 1, 1, 1, 1, 1, 1)
			})
			perRow := (4*tc.cin*4 + 12*tc.cout*4) * (tc.w + 1)
			for i, rows := range []int64{0, 1, 2, 3, 1000} {
				got := run(t, func(c *ggml.Context) *ggml.Tensor {
					c.SetContiguousIm2Col(i%2 == 1)
					y := UpsampleConv2D(c, kernel(c), c.InputF32(x, tc.w, tc.h, tc.cin, 1), rows*perRow)
					require.Equal(t, [4]int64{2 * tc.w, 2 * tc.h, tc.cout, 1}, y.Shape())
					return y
				})
				require.Len(t, got, len(want))
				for i := range want {
					require.InDelta(t, want[i], got[i], 1e-5*math.Max(1, math.Abs(float64(want[i]))),
						"%+v %s, %d rows per band: element %d", tc, typ, rows, i)
				}
			}
		}
	}
}
