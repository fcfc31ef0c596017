package nn

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
	"github.com/stretchr/testify/require"
)

// A tiny module tree exercising every kind of binding.
type testBlock struct {
	Norm LayerNorm `w:"norm"`
	FF   GEGLU     `w:"ff"`
	Out  Linear    `w:"out"`
}

type testModel struct {
	In     Conv2D       `w:"conv_in"`
	GN     GroupNorm    `w:"gn"`
	Blocks []testBlock  `w:"blocks"`
	Skip   *Linear      `w:"skip,optional"`
	Scale  *ggml.Tensor `w:"scale"`
}

func randT(r *rand.Rand, name string, shape ...int64) (*weights.Tensor, []float32) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64()) * 0.5
	}
	b := ggml.F32Bytes(v)
	return weights.NewTensor(name, safetensors.F32, shape, "mem", func() ([]byte, error) { return b, nil }), v
}

type fixture struct {
	set  *weights.Set
	vals map[string][]float32
}

func newFixture(t *testing.T) fixture {
	r := rand.New(rand.NewPCG(1, 1))
	f := fixture{set: weights.NewSet(), vals: map[string][]float32{}}
	add := func(name string, shape ...int64) {
		tt, v := randT(r, name, shape...)
		require.NoError(t, f.set.Add(tt))
		f.vals[name] = v
	}
	add("m.conv_in.weight", 32, 4, 3, 3)
	add("m.conv_in.bias", 32)
	add("m.gn.weight", 32)
	add("m.gn.bias", 32)
	for _, b := range []string{"0", "1"} {
		add("m.blocks."+b+".norm.weight", 32)
		add("m.blocks."+b+".norm.bias", 32)
		add("m.blocks."+b+".ff.proj.weight", 128, 32)
		add("m.blocks."+b+".ff.proj.bias", 128)
		add("m.blocks."+b+".out.weight", 32, 64)
	}
	add("m.scale", 1)
	return f
}

func TestBindAndUpload(t *testing.T) {
	f := newFixture(t)
	rt, err := NewRuntime("cpu", 2)
	require.NoError(t, err)
	defer rt.Close()
	w := NewWeights(64, nil)
	defer w.Free()
	var m testModel
	require.NoError(t, w.Bind(f.set, "m.", &m))
	require.Len(t, m.Blocks, 2)
	require.Nil(t, m.Skip)
	require.Nil(t, m.Blocks[1].Out.Bias)
	require.Equal(t, [4]int64{3, 3, 4, 32}, m.In.Weight.Shape()) // PyTorch [32,4,3,3] reversed
	require.NoError(t, w.Upload(context.Background(), rt.Device, nil))
	require.Equal(t, f.vals["m.blocks.1.ff.proj.weight"], m.Blocks[1].FF.Proj.Weight.Float32())

	// A missing required weight names itself.
	var other struct {
		X Linear `w:"nope"`
	}
	err = NewWeights(4, nil).Bind(f.set, "m.", &other)
	require.ErrorIs(t, err, ErrMissing)
	require.ErrorContains(t, err, "m.nope.weight")
}

// KeepInHost puts the matching weights in a host buffer of their own: the
// device's buffer shrinks by what EstimateBytesOf plans for them, and the
// values arrive all the same. KeepApart keeps them on the device in a
// buffer that can be freed alone.
func TestKeepInHost(t *testing.T) {
	f := newFixture(t)
	rt, err := NewRuntime("cpu", 2)
	require.NoError(t, err)
	defer rt.Close()
	ff := func(name string) bool { return strings.Contains(name, ".ff.") }
	w := NewWeights(64, nil)
	defer w.Free()
	w.KeepInHost(ff)
	var m testModel
	require.NoError(t, w.Bind(f.set, "m.", &m))
	all, host := EstimateBytes(f.set, "m.", nil), EstimateBytesOf(f.set, "m.", nil, ff)
	require.Equal(t, int64(2*(128*32+128)*4), host)
	require.Equal(t, all-host, w.Bytes(rt.Device), "the device's share")
	require.NoError(t, w.Upload(context.Background(), rt.Device, nil))
	require.Equal(t, all, w.Allocated())
	require.Equal(t, f.vals["m.blocks.1.ff.proj.weight"], m.Blocks[1].FF.Proj.Weight.Float32())
	require.Equal(t, f.vals["m.blocks.0.out.weight"], m.Blocks[0].Out.Weight.Float32())
	require.Equal(t, host, w.ApartBytes())
	w.Free()
	require.Zero(t, w.Allocated())

	// KeepApart: on the device, in a buffer that FreeApart releases.
	w = NewWeights(64, nil)
	defer w.Free()
	w.KeepApart(ff)
	require.NoError(t, w.Bind(f.set, "m.", &m))
	require.NoError(t, w.Upload(context.Background(), rt.Device, nil))
	require.Equal(t, f.vals["m.blocks.0.ff.proj.weight"], m.Blocks[0].FF.Proj.Weight.Float32())
	require.Equal(t, host, w.ApartBytes())
	w.FreeApart()
	require.Zero(t, w.ApartBytes())
	require.Equal(t, all-host, w.Allocated())
}

func TestTypePolicy(t *testing.T) {
	f := newFixture(t)
	p := KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ8_0 })
	get := func(n string) *weights.Tensor { x, _ := f.set.Get(n); return x }
	require.Equal(t, ggml.TypeF32, p("m.blocks.0.ff.proj.bias", get("m.blocks.0.ff.proj.bias")))
	require.Equal(t, ggml.TypeF32, p("m.blocks.0.norm.weight", get("m.blocks.0.norm.weight")))
	require.Equal(t, ggml.TypeQ8_0, p("m.blocks.0.out.weight", get("m.blocks.0.out.weight"))) // rows of 64
	require.Equal(t, ggml.TypeF16, p("m.conv_in.weight", get("m.conv_in.weight")))            // rows of 3
}

func run(t *testing.T, build func(c *ggml.Context) *ggml.Tensor) []float32 {
	rt, err := NewRuntime("cpu", 2)
	require.NoError(t, err)
	defer rt.Close()
	out, err := rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor { return []*ggml.Tensor{build(c)} })
	require.NoError(t, err)
	return out[0].Data
}

func maxRel(t *testing.T, got []float32, want []float64) float64 {
	require.Len(t, got, len(want))
	var num, den float64
	for i := range want {
		num += (float64(got[i]) - want[i]) * (float64(got[i]) - want[i])
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

func TestLayersAgainstReferences(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	randv := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	t.Run("linear", func(t *testing.T) {
		W, b, x := randv(6*4), randv(6), randv(4*3)
		got := run(t, func(c *ggml.Context) *ggml.Tensor {
			l := Linear{Weight: c.InputF32(W, 4, 6), Bias: c.InputF32(b, 6)}
			return l.Forward(c, c.InputF32(x, 4, 3))
		})
		want := make([]float64, 18)
		for n := 0; n < 3; n++ {
			for o := 0; o < 6; o++ {
				s := float64(b[o])
				for i := 0; i < 4; i++ {
					s += float64(W[o*4+i]) * float64(x[n*4+i])
				}
				want[n*6+o] = s
			}
		}
		require.Less(t, maxRel(t, got, want), 1e-6)
	})
	t.Run("conv 1x1 equals general conv", func(t *testing.T) {
		W, b, x := randv(8*16), randv(8), randv(5*4*16*2)
		one := run(t, func(c *ggml.Context) *ggml.Tensor {
			l := Conv2D{Weight: c.InputF32(W, 1, 1, 16, 8), Bias: c.InputF32(b, 8)}
			return l.Forward(c, c.InputF32(x, 5, 4, 16, 2), 1, 0)
		})
		gen := run(t, func(c *ggml.Context) *ggml.Tensor {
			y := c.Conv2D(c.InputF32(W, 1, 1, 16, 8), c.InputF32(x, 5, 4, 16, 2), 1, 1, 0, 0, 1, 1)
			return c.Add(y, c.Reshape(c.InputF32(b, 8), 1, 1, 8, 1))
		})
		want := make([]float64, len(gen))
		for i, v := range gen {
			want[i] = float64(v)
		}
		require.Less(t, maxRel(t, one, want), 1e-6)
	})
	t.Run("quantized kernels are stored flattened", func(t *testing.T) {
		// Same weights through the flattened q8_0 path and a float
		// convolution with the dequantized kernel: they differ only by the
		// 8-bit activations of the quantized product (a layout mistake would
		// be off by ~100 %).
		const I, O = 32, 16
		x, b := randv(9*7*I*2), randv(O)
		for _, tc := range []struct{ k, stride, pad int }{{3, 1, 1}, {3, 2, 1}, {1, 1, 0}} {
			W := randv(O * I * tc.k * tc.k)
			q, err := ggml.Quantize(ggml.TypeQ8_0, W, int64(I*tc.k*tc.k))
			require.NoError(t, err)
			deq, err := ggml.Dequantize(ggml.TypeQ8_0, q, int64(len(W)))
			require.NoError(t, err)
			k := int64(tc.k)
			got := run(t, func(c *ggml.Context) *ggml.Tensor {
				l := Conv2D{Weight: c.Input(ggml.TypeQ8_0, q, k*k*I, O), Bias: c.InputF32(b, O)}
				require.Equal(t, int64(O), l.OutChannels())
				return l.Forward(c, c.InputF32(x, 9, 7, I, 2), tc.stride, tc.pad)
			})
			ref := run(t, func(c *ggml.Context) *ggml.Tensor {
				l := Conv2D{Weight: c.InputF32(deq, k, k, I, O), Bias: c.InputF32(b, O)}
				return l.Forward(c, c.InputF32(x, 9, 7, I, 2), tc.stride, tc.pad)
			})
			want := make([]float64, len(ref))
			for i, v := range ref {
				want[i] = float64(v)
			}
			require.Len(t, got, len(ref), "k=%d stride=%d", tc.k, tc.stride)
			var num, den float64
			for i := range got {
				d := float64(got[i]) - want[i]
				num, den = num+d*d, den+want[i]*want[i]
			}
			require.Less(t, math.Sqrt(num/den), 1e-2, "k=%d stride=%d", tc.k, tc.stride)
		}
	})
	t.Run("layer norm + geglu", func(t *testing.T) {
		x, g, bb := randv(8*2), randv(8), randv(8)
		got := run(t, func(c *ggml.Context) *ggml.Tensor {
			ln := LayerNorm{Weight: c.InputF32(g, 8), Bias: c.InputF32(bb, 8)}
			return ln.Forward(c, c.InputF32(x, 8, 2), 1e-5)
		})
		want := make([]float64, 16)
		for row := 0; row < 2; row++ {
			m, v := 0.0, 0.0
			for i := 0; i < 8; i++ {
				m += float64(x[row*8+i]) / 8
			}
			for i := 0; i < 8; i++ {
				v += (float64(x[row*8+i]) - m) * (float64(x[row*8+i]) - m) / 8
			}
			for i := 0; i < 8; i++ {
				want[row*8+i] = (float64(x[row*8+i])-m)/math.Sqrt(v+1e-5)*float64(g[i]) + float64(bb[i])
			}
		}
		require.Less(t, maxRel(t, got, want), 1e-6)
	})
	t.Run("attention flash == softmax path", func(t *testing.T) {
		q, k, v := randv(128*16*2), randv(128*9*2), randv(128*9*2)
		build := func(flash bool, kv ggml.Type) func(c *ggml.Context) *ggml.Tensor {
			return func(c *ggml.Context) *ggml.Tensor {
				return Attend(c, c.InputF32(q, 128, 16, 2), c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2, nil,
					AttentionOptions{Flash: flash, KVType: kv})
			}
		}
		a, b := run(t, build(true, ggml.TypeF32)), run(t, build(false, ggml.TypeF32))
		half := run(t, build(true, ggml.TypeF16)) // the GPUs' setting: K/V cast to f16 from the permuted heads
		// The CPU's setting: the softmax path from keys and values split
		// for the flash kernel, in pieces of queries whose scores take at
		// most SoftmaxUpTo bytes (all 16 queries: 16·9·2·2 f32 = 2304).
		pieces := func(limit int64, want int) func(c *ggml.Context) *ggml.Tensor {
			return func(c *ggml.Context) *ggml.Tensor {
				out := Attend(c, c.InputF32(q, 128, 16, 2), c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2, nil,
					AttentionOptions{Flash: true, KVType: ggml.TypeF32, SoftmaxUpTo: limit})
				require.Equal(t, want, countPieces(out), "pieces within %d bytes", limit)
				return out
			}
		}
		whole, two, three := run(t, pieces(2304, 1)), run(t, pieces(2303, 2)), run(t, pieces(1000, 3)) // 6+6+4 queries
		// Past maxPieces (here 24), the flash kernel.
		require.Equal(t, a, run(t, pieces(100, 0)))
		// f64 reference for head h, token i of batch bt.
		want := make([]float64, len(a))
		for bt := 0; bt < 2; bt++ {
			for h := 0; h < 2; h++ {
				for i := 0; i < 16; i++ {
					s := make([]float64, 9)
					mx := math.Inf(-1)
					for j := 0; j < 9; j++ {
						for d := 0; d < 64; d++ {
							s[j] += float64(q[(bt*16+i)*128+h*64+d]) * float64(k[(bt*9+j)*128+h*64+d])
						}
						s[j] /= 8
						mx = math.Max(mx, s[j])
					}
					sum := 0.0
					for j := range s {
						s[j] = math.Exp(s[j] - mx)
						sum += s[j]
					}
					for j := 0; j < 9; j++ {
						for d := 0; d < 64; d++ {
							want[(bt*16+i)*128+h*64+d] += s[j] / sum * float64(v[(bt*9+j)*128+h*64+d])
						}
					}
				}
			}
		}
		require.Less(t, maxRel(t, a, want), 1e-5)
		require.Less(t, maxRel(t, b, want), 1e-5)
		for _, got := range [][]float32{whole, two, three} {
			require.Less(t, maxRel(t, got, want), 1e-5)
		}
		// With a mask (the plain path's), each piece takes its queries' rows.
		mask := make([]float32, 9*16)
		for i := 0; i < 16; i++ {
			for j := i%9 + 1; j < 9; j++ {
				mask[i*9+j] = float32(math.Inf(-1))
			}
		}
		masked := func(limit int64) func(c *ggml.Context) *ggml.Tensor {
			return func(c *ggml.Context) *ggml.Tensor {
				return Attend(c, c.InputF32(q, 128, 16, 2), c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2,
					c.InputF32(mask, 9, 16), AttentionOptions{SoftmaxUpTo: limit})
			}
		}
		require.Equal(t, run(t, masked(0)), run(t, masked(1000)))
		// The plain path has no kernel to fall back on: at most maxPieces
		// larger pieces (here one query each).
		require.Equal(t, run(t, masked(0)), run(t, func(c *ggml.Context) *ggml.Tensor {
			out := masked(100)(c)
			require.Equal(t, maxPieces, countPieces(out))
			return out
		}))
		require.Less(t, maxRel(t, half, want), 2e-3)
		// Our CPU kernel (the CPU runtime's choice), and its keys and values
		// turned back into the plain path's when a mask comes with them. A
		// graph not built for the CPU's kernels (a GPU's) ignores the option.
		for _, cpuGraph := range []bool{true, false} {
			got := run(t, func(c *ggml.Context) *ggml.Tensor {
				c.SetCPUKernels(cpuGraph)
				out := Attend(c, c.InputF32(q, 128, 16, 2), c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2, nil,
					AttentionOptions{CPUKernel: true})
				require.Equal(t, cpuGraph, out.Op() == "CUSTOM")
				return out
			})
			require.Less(t, maxRel(t, got, want), 1e-5)
		}
		oursMasked := run(t, func(c *ggml.Context) *ggml.Tensor {
			opt := AttentionOptions{CPUKernel: true}
			kv := SplitKV(c, c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2, opt)
			require.True(t, kv.CPUKernel)
			return AttendHeads(c, c.InputF32(q, 128, 16, 2), kv, 2, c.InputF32(mask, 9, 16), 0.125, opt)
		})
		plainMasked := run(t, masked(0))
		wantMasked := make([]float64, len(plainMasked))
		for i, x := range plainMasked {
			wantMasked[i] = float64(x)
		}
		require.Less(t, maxRel(t, oursMasked, wantMasked), 1e-6)
		require.Equal(t, plainMasked, run(t, func(c *ggml.Context) *ggml.Tensor {
			return Attend(c, c.InputF32(q, 128, 16, 2), c.InputF32(k, 128, 9, 2), c.InputF32(v, 128, 9, 2), 2,
				c.InputF32(mask, 9, 16), AttentionOptions{CPUKernel: true}) // a mask turns the kernel off
		}))
	})
}

// countPieces counts the pieces of an attention's output (joined by
// concats; 0 when the flash kernel computed it).
func countPieces(out *ggml.Tensor) int {
	if out.Src(0).Op() == "FLASH_ATTN_EXT" {
		return 0
	}
	n := 1
	for t := out; t.Op() == "CONCAT"; t = t.Src(0) {
		n++
	}
	return n
}

// Nearest resizing to an odd size picks source index floor(dst·in/out), as
// PyTorch's F.interpolate(mode="nearest") does (diffusers' upsample_size).
func TestUpsampleToOddSize(t *testing.T) {
	x := make([]float32, 5*3)
	for i := range x {
		x[i] = float32(i)
	}
	got := run(t, func(c *ggml.Context) *ggml.Tensor {
		return c.InterpolateNearest(c.InputF32(x, 5, 3, 1, 1), 9, 5, 1, 1)
	})
	for oy := 0; oy < 5; oy++ {
		for ox := 0; ox < 9; ox++ {
			sx, sy := ox*5/9, oy*3/5
			require.Equal(t, x[sy*5+sx], got[oy*9+ox], "pixel %d,%d", ox, oy)
		}
	}
}

// TestEstimateBytes plans exactly what binding and uploading allocates.
func TestEstimateBytes(t *testing.T) {
	f := newFixture(t)
	rt, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer rt.Close()
	for _, typ := range []ggml.Type{ggml.TypeF32, ggml.TypeF16, ggml.TypeQ8_0} {
		p := KeepPrecise(func(string, *weights.Tensor) ggml.Type { return typ })
		w := NewWeights(64, p)
		var m testModel
		require.NoError(t, w.Bind(f.set, "m.", &m))
		// testModel binds every tensor of the fixture: sizes agree exactly.
		require.Equal(t, w.Bytes(rt.Device), EstimateBytes(f.set, "m.", p), typ.String())
		w.Free()
	}
	big := EstimateBytes(f.set, "m.", AllF32)
	require.Equal(t, int64(128*32*4), LargestBytes(f.set, "m.", AllF32, 1))
	require.Equal(t, int64(2*128*32*4+2*32*64*4), LargestBytes(f.set, "m.", AllF32, 4))
	require.Equal(t, big, LargestBytes(f.set, "m.", AllF32, 1000))
	require.Greater(t, big, EstimateBytes(f.set, "m.", KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ8_0 })))
}

// On the CPU, Upload stores the q4_0 products' weights repacked (when ggml
// has the repack buffer and our kernels do not take them; here they are
// made not to): the model computes what it computes with them stored
// plainly (UploadHost never repacks). Where our kernels take them, Upload
// leaves them plain.
func TestUploadRepacks(t *testing.T) {
	if !ggml.CanRepack() {
		t.Skip("ggml was built without GGML_USE_CPU_REPACK (make test sets it)")
	}
	if !ggml.RepackKernelsBuilt() {
		t.Skip("ggml's repacked products need AVX2 (arm64: dotprod or i8mm) compiled in (make test sets it)")
	}
	f := newFixture(t)
	rt, err := NewRuntime("cpu", 2)
	require.NoError(t, err)
	defer rt.Close()
	q4 := KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeQ4_0 })
	r := rand.New(rand.NewPCG(5, 5))
	x := make([]float32, 32*7*2)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	run := func(upload func(*Weights) error) ([]float32, *Weights) {
		w := NewWeights(64, q4)
		var m testModel
		require.NoError(t, w.Bind(f.set, "m.", &m))
		require.NoError(t, upload(w))
		out, err := rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor {
			b := &m.Blocks[0]
			return []*ggml.Tensor{b.Out.Forward(c, b.FF.Forward(c, c.InputF32(x, 32, 7, 2)))}
		})
		require.NoError(t, err)
		return out[0].Data, w
	}
	want, plain := run(func(w *Weights) error { return w.UploadHost(context.Background(), rt.Device, nil) })
	defer plain.Free()
	require.Nil(t, plain.repacked)
	if ggml.CPUKernelsTakeInts(ggml.TypeQ4_0) {
		ours, w := run(func(w *Weights) error { return w.Upload(context.Background(), rt.Device, nil) })
		require.Nil(t, w.repacked, "our kernels take q4_0: not repacked")
		w.Free()
		require.Equal(t, want, ours)
	}
	takes := cpuKernelsTakeInts
	cpuKernelsTakeInts = func(ggml.Type) bool { return false }
	defer func() { cpuKernelsTakeInts = takes }()
	got, w := run(func(w *Weights) error { return w.Upload(context.Background(), rt.Device, nil) })
	defer w.Free()
	// ff.proj and out of both blocks; the flattened 3×3 kernel's 36-long
	// rows fit no q4_0 block.
	require.NotNil(t, w.repacked)
	require.Equal(t, int64(2*(128*32+32*64)/32*18), w.repacked.Size())
	require.Equal(t, plain.Allocated(), w.Allocated())
	// The same products, summed in another order.
	require.Len(t, got, len(want))
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num, den = num+d*d, den+float64(want[i])*float64(want[i])
	}
	require.Less(t, math.Sqrt(num/den), 1e-6)
	require.NotZero(t, den)
}
