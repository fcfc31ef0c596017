package ggml

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Every bound op is run on the CPU backend and compared with a float64
// reference written here from the op's definition. Shapes follow SDXL's
// (channels 320/640, 64-wide heads, batch 2) scaled down to keep CI fast,
// and several inputs are non-contiguous views.

var cpuBackend = func() func(t testing.TB) *Backend {
	var b *Backend
	return func(t testing.TB) *Backend {
		if b == nil {
			var err error
			b, err = NewCPUBackend(0)
			require.NoError(t, err)
		}
		return b
	}
}()

// compute builds a graph with build and returns the output as float32.
func compute(t testing.TB, build func(c *Context) *Tensor) ([]float32, [4]int64) {
	t.Helper()
	return computeOn(t, cpuBackend(t), build)
}

// schedulerOn is a scheduler preferring b, with the CPU as its fallback.
func schedulerOn(t testing.TB, b *Backend, graphSize int) *Scheduler {
	t.Helper()
	backends := []*Backend{b}
	if !b.IsCPU() {
		backends = append(backends, cpuBackend(t))
	}
	s, err := NewScheduler(backends, graphSize)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func computeOn(t testing.TB, b *Backend, build func(c *Context) *Tensor) ([]float32, [4]int64) {
	t.Helper()
	s := schedulerOn(t, b, 1024)
	ctx := NewContext(1024, 1024)
	defer ctx.Free()
	ctx.SetContiguousIm2Col(!b.Im2ColReadsViews()) // as nn.Runtime does
	ctx.SetCPUKernels(b.IsCPU())
	out := build(ctx)
	if out.Type() != TypeF32 {
		out = ctx.Cast(out, TypeF32)
	}
	out.SetOutput()
	g := ctx.NewGraph(1024)
	g.Expand(out)
	if !b.IsCPU() {
		// Inputs left to the scheduler live on the CPU, and ops on them
		// run there: put them on the device, as weights and latents are.
		var ins []*Tensor
		for _, in := range ctx.inputs {
			ins = append(ins, in.t)
		}
		buf, err := b.AllocTensors(ins...)
		require.NoError(t, err)
		defer buf.Free()
		// Else the CPU would compute them and the comparison prove nothing.
		require.Empty(t, b.Unsupported(g), "ops %s cannot run", b.Dev.Name)
	}
	require.NoError(t, s.Compute(context.Background(), g))
	if !b.IsCPU() {
		var onCPU []string
		for _, n := range s.NodesOn(g, s.backends[len(s.backends)-1]) {
			onCPU = append(onCPU, n.Op())
		}
		require.Empty(t, onCPU, "ops the scheduler ran on the CPU instead of %s", b.Dev.Name)
		require.NotEmpty(t, s.NodesOn(g, b))
	}
	return out.Float32(), out.Shape()
}

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// relErr is ‖got−want‖/‖want‖.
func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func checkRel(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	require.Len(t, got, len(want), what)
	e := relErr(got, want)
	require.False(t, math.IsNaN(e), what)
	require.LessOrEqual(t, e, tol, "%s: relative error %.3g > %g", what, e, tol)
}

// dims is a helper for index arithmetic in ggml order.
type dims [4]int

func (d dims) at(i0, i1, i2, i3 int) int { return i0 + d[0]*(i1+d[1]*(i2+d[2]*i3)) }
func (d dims) n() int                    { return d[0] * d[1] * d[2] * d[3] }

// each calls f with every index of d.
func (d dims) each(f func(i0, i1, i2, i3 int)) {
	for i3 := range d[3] {
		for i2 := range d[2] {
			for i1 := range d[1] {
				for i0 := range d[0] {
					f(i0, i1, i2, i3)
				}
			}
		}
	}
}

func TestMulMat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	K, M, N, B := 1280, 64, 77, 2
	a := randn(r, K*M)
	b := randn(r, K*N*B)
	mulRef := func(a []float32) []float64 {
		ref := make([]float64, M*N*B)
		for bb := 0; bb < B; bb++ {
			for n := 0; n < N; n++ {
				for m := 0; m < M; m++ {
					s := 0.0
					for k := 0; k < K; k++ {
						s += float64(a[m*K+k]) * float64(b[(bb*N+n)*K+k])
					}
					ref[(bb*N+n)*M+m] = s
				}
			}
		}
		return ref
	}
	// Each type is compared with the product of its own dequantized weights
	// (fetched through ggml's cast), so the check isolates the kernel;
	// quantized kernels also quantize the activations (q8), hence the looser
	// bounds.
	for _, typ := range []struct {
		t   Type
		tol float64
	}{{TypeF32, 1e-5}, {TypeF16, 2e-3}, {TypeBF16, 1e-2}, {TypeQ8_0, 1e-2}, {TypeQ4_0, 2e-2}, {TypeQ4_K, 2e-2}, {TypeQ6_K, 1e-2}} {
		wBytes := mustQuantizeOrCast(t, typ.t, a, int64(K))
		deq, _ := compute(t, func(c *Context) *Tensor {
			return c.Cast(c.Input(typ.t, wBytes, int64(K), int64(M)), TypeF32)
		})
		if typ.t == TypeF32 {
			require.Equal(t, a, deq)
		}
		got, shape := compute(t, func(c *Context) *Tensor {
			return c.MulMat(c.Input(typ.t, wBytes, int64(K), int64(M)), c.InputF32(b, int64(K), int64(N), int64(B)))
		})
		require.Equal(t, [4]int64{int64(M), int64(N), int64(B), 1}, shape)
		checkRel(t, "mul_mat "+typ.t.String(), got, mulRef(deq), typ.tol)
		t.Logf("%s weights: relative error of the dequantized weights %.3g", typ.t, relErr(deq, f64(a)))
	}
	// Non-contiguous b: every other row of a [K, 2N] input through a view
	// (rows themselves stay contiguous, as ggml's mul_mat requires).
	got, _ := compute(t, func(c *Context) *Tensor {
		x := c.InputF32(b[:K*N*2], int64(K), int64(2*N))
		v := c.View(x, [4]int64{int64(K), int64(N), 1, 1}, 2*x.Nb(1), 2*x.Nb(1)*int64(N), 2*x.Nb(1)*int64(N), 0)
		return c.MulMat(c.InputF32(a, int64(K), int64(M)), v)
	})
	want := make([]float64, M*N)
	for n := 0; n < N; n++ {
		for m := 0; m < M; m++ {
			for k := 0; k < K; k++ {
				want[n*M+m] += float64(a[m*K+k]) * float64(b[2*n*K+k])
			}
		}
	}
	checkRel(t, "mul_mat strided view", got, want, 1e-5)
}

func mustQuantizeOrCast(t testing.TB, typ Type, v []float32, rowLen int64) []byte {
	t.Helper()
	b, err := Quantize(typ, v, rowLen)
	require.NoError(t, err)
	return b
}

func TestQuantizePlainTypes(t *testing.T) {
	// For plain types Quantize is a conversion; f16/bf16 of exact values round trip.
	v := []float32{1, -2, 0.5, 1024}
	for _, typ := range []Type{TypeF16, TypeBF16, TypeF32} {
		b, err := Quantize(typ, v, 4)
		require.NoError(t, err)
		got, _ := compute(t, func(c *Context) *Tensor { return c.Input(typ, b, 4) })
		require.Equal(t, v, got)
	}
	_, err := Quantize(TypeQ4_K, make([]float32, 100), 100)
	require.ErrorContains(t, err, "not a multiple of the block size")
}

func TestElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	d := dims{64, 16, 8, 2}
	a := randn(r, d.n())
	bRow := randn(r, 64) // broadcast over everything but dim 0
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	cases := []struct {
		name string
		op   func(c *Context, x, y *Tensor) *Tensor
		ref  func(x, y float64) float64
	}{
		{"add", func(c *Context, x, y *Tensor) *Tensor { return c.Add(x, y) }, func(x, y float64) float64 { return x + y }},
		{"sub", func(c *Context, x, y *Tensor) *Tensor { return c.Sub(x, y) }, func(x, y float64) float64 { return x - y }},
		{"mul", func(c *Context, x, y *Tensor) *Tensor { return c.Mul(x, y) }, func(x, y float64) float64 { return x * y }},
		{"div", func(c *Context, x, y *Tensor) *Tensor { return c.Div(x, y) }, func(x, y float64) float64 { return x / y }},
		{"scale", func(c *Context, x, _ *Tensor) *Tensor { return c.Scale(x, 0.125) }, func(x, _ float64) float64 { return x * 0.125 }},
		{"clamp", func(c *Context, x, _ *Tensor) *Tensor { return c.Clamp(x, -0.5, 0.75) }, func(x, _ float64) float64 { return min(max(x, -0.5), 0.75) }},
		{"gelu_erf", func(c *Context, x, _ *Tensor) *Tensor { return c.GELUErf(x) }, func(x, _ float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }},
		{"gelu_tanh", func(c *Context, x, _ *Tensor) *Tensor { return c.GELU(x) }, func(x, _ float64) float64 {
			return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		}},
		{"gelu_quick", func(c *Context, x, _ *Tensor) *Tensor { return c.GELUQuick(x) }, func(x, _ float64) float64 { return x * sig(1.702*x) }},
		{"silu", func(c *Context, x, _ *Tensor) *Tensor { return c.SiLU(x) }, func(x, _ float64) float64 { return x * sig(x) }},
		{"sigmoid", func(c *Context, x, _ *Tensor) *Tensor { return c.Sigmoid(x) }, func(x, _ float64) float64 { return sig(x) }},
		{"tanh", func(c *Context, x, _ *Tensor) *Tensor { return c.Tanh(x) }, func(x, _ float64) float64 { return math.Tanh(x) }},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			ref := make([]float64, d.n())
			for i := range ref {
				ref[i] = cs.ref(float64(a[i]), float64(bRow[i%64]))
			}
			got, _ := compute(t, func(c *Context) *Tensor {
				return cs.op(c, c.InputF32(a, 64, 16, 8, 2), c.InputF32(bRow, 64))
			})
			tol := 1e-5
			if cs.name == "gelu_quick" || cs.name == "gelu_tanh" || cs.name == "gelu_erf" {
				tol = 2e-3 // ggml's CPU GELUs use f16 lookup tables
			}
			checkRel(t, cs.name, got, ref, tol)
		})
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestAllocRefusesMoreThanRAM(t *testing.T) {
	avail, ok := availableHostMemory()
	if !ok {
		t.Skip("no /proc/meminfo")
	}
	ctx := NewContext(2, 0)
	defer ctx.Free()
	// Declared only: a tensor larger than the available RAM is refused
	// before anything is allocated.
	ctx.NewTensor(TypeF32, int64(avail/4/1024)*2+1024, 1024) // twice what is free
	_, err := cpuBackend(t).Alloc(ctx)
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.ErrorContains(t, err, "quantized weights")
}

// TestGraphReuse computes one graph three times with new input values (the
// allocation is kept), then after other graphs took the buffers, and after
// larger ones replaced them.
func TestGraphReuse(t *testing.T) {
	s := schedulerOn(t, cpuBackend(t), 64)
	ctx := NewContext(64, 64)
	defer ctx.Free()
	x := ctx.InputF32([]float32{1, 2, 3}, 3)
	y := ctx.Scale(ctx.Add(x, x), 0.5) // = x
	y.SetOutput()
	g := ctx.NewGraph(64)
	g.Expand(y)
	run := func(v []float32) []float32 {
		require.NoError(t, ctx.SetInputF32(x, v))
		require.NoError(t, s.Compute(context.Background(), g))
		return y.Float32()
	}
	require.Equal(t, []float32{1, 2, 3}, run([]float32{1, 2, 3}))
	require.Equal(t, []float32{4, 5, 6}, run([]float32{4, 5, 6}))
	require.Equal(t, []float32{-1, 0, 7}, run([]float32{-1, 0, 7}))
	ctx2 := NewContext(64, 64) // another graph on the same scheduler
	defer ctx2.Free()
	z := ctx2.Scale(ctx2.InputF32([]float32{3, 3, 3, 3}, 4), 3)
	z.SetOutput()
	g2 := ctx2.NewGraph(64)
	g2.Expand(z)
	require.NoError(t, s.Compute(context.Background(), g2))
	require.Equal(t, []float32{9, 9, 9, 9}, z.Float32())
	require.Equal(t, []float32{8, 8, 8}, run([]float32{8, 8, 8}))

	// Graphs that grow the compute buffer free the one g was placed in;
	// g must be placed again without reading the freed buffer.
	for n := int64(1 << 12); n <= 1<<20; n <<= 2 {
		big := NewContext(64, 64)
		v := big.Scale(big.Repeat(big.InputF32([]float32{1, 2}, 2), big.NewTensor(TypeF32, 2, n)), 2)
		v.SetOutput()
		gb := big.NewGraph(64)
		gb.Expand(v)
		require.NoError(t, s.Compute(context.Background(), gb))
		require.Equal(t, []float32{2, 4}, v.Float32()[:2])
		big.Free()
		f := float32(n)
		require.Equal(t, []float32{f, -f, 1}, run([]float32{f, -f, 1}))
	}

	require.Error(t, ctx.SetInputF32(x, []float32{1}), "wrong size")
	require.Error(t, ctx.SetInputF32(y, []float32{1, 2, 3}), "not an input")
}

// TestAllocateRestoresSources: sizing a graph (checkMemory, on the
// scheduler's sizer) leaves its operands pointing at the sizer's copies of
// split inputs, which only appear with a GPU: allocation must run on the
// graph's own operands, or a GPU reads never-filled copies (every input on
// CUDA read as zeros or garbage in session 19). Here the sizer's leftover is
// made by hand, since a CPU-only scheduler copies nothing.
func TestAllocateRestoresSources(t *testing.T) {
	s := schedulerOn(t, cpuBackend(t), 64)
	ctx := NewContext(64, 64)
	defer ctx.Free()
	x := ctx.InputF32([]float32{1, 2, 3}, 3)
	y := ctx.Scale(x, 2).SetOutput()
	g := ctx.NewGraph(64)
	g.Expand(y)
	g.forgetStale() // records the operands, as Compute does before sizing
	other := NewContext(1, 0)
	defer other.Free()
	y.p.src[0] = other.NewTensor(TypeF32, 3).p // what the sizer's split leaves
	require.NoError(t, s.allocate(g))
	require.NoError(t, s.Compute(context.Background(), g))
	require.Equal(t, []float32{2, 4, 6}, y.Float32())
}

// TestWeightViewsArePlaced: views of weights (kernel rows, reshaped
// kernels) have their memory from the start, so that a scheduler sees the
// weights behind the ops on them (placeWeightView); views of a graph's own
// tensors wait for the allocator. ProductsOn reports where the products ran.
func TestWeightViewsArePlaced(t *testing.T) {
	cpu := cpuBackend(t)
	wctx := NewContext(1, 0)
	defer wctx.Free()
	w := wctx.NewTensor(TypeF32, 4, 6) // 6 rows of 4
	buf, err := cpu.Alloc(wctx)
	require.NoError(t, err)
	defer buf.Free()
	wv := make([]float32, 24)
	for i := range wv {
		wv[i] = float32(i%5) - 2
	}
	require.NoError(t, w.SetData(F32Bytes(wv)))

	ctx := NewContext(64, 64)
	defer ctx.Free()
	rows := ctx.View(w, [4]int64{4, 3, 1, 1}, w.Nb(1), 3*w.Nb(1), 3*w.Nb(1), 3*w.Nb(1)) // rows 3–5
	flat := ctx.Reshape(w, 8, 3)
	for _, v := range []*Tensor{rows, flat, ctx.Permute(flat, 1, 0, 2, 3)} {
		require.Equal(t, w.p.buffer, v.p.buffer, "a view of weights is placed at once")
	}
	require.Equal(t, unsafe.Add(w.p.data, 3*w.Nb(1)), rows.p.data)
	x := ctx.InputF32([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, 2)
	own := ctx.View(x, [4]int64{4, 1, 1, 1}, x.Nb(1), x.Nb(1), x.Nb(1), 0)
	require.Nil(t, own.p.buffer, "a view of the graph's own tensor waits for the allocator")
	y := ctx.MulMat(rows, x).SetOutput() // [3, 2]
	g := ctx.NewGraph(64)
	g.Expand(y)

	s, err := NewScheduler([]*Backend{cpu}, 64)
	require.NoError(t, err)
	defer s.Close()
	require.Empty(t, s.ProductsOn(g, cpu), "not allocated yet")
	require.NoError(t, s.Compute(context.Background(), g))
	want := make([]float32, 6)
	for n := range 2 {
		for r := range 3 {
			for k := range 4 {
				want[3*n+r] += wv[4*(3+r)+k] * float32(4*n+k+1)
			}
		}
	}
	require.Equal(t, want, y.Float32())
	require.Equal(t, g.FLOPs(), flopsOn(s, g, cpu))
	require.Equal(t, int64(2*4*6), g.FLOPs())
}

// flopsOn is the arithmetic of g's products that s placed on b.
func flopsOn(s *Scheduler, g *Graph, b *Backend) int64 {
	var n int64
	for _, t := range s.ProductsOn(g, b) {
		n += t.FLOPs()
	}
	return n
}

// TestComputeRefusesMoreThanRAM: a graph whose working memory exceeds the
// available RAM is refused with the sizes before anything is allocated.
func TestComputeRefusesMoreThanRAM(t *testing.T) {
	old := hostMemory
	t.Cleanup(func() { hostMemory = old })
	hostMemory = func() (uint64, bool) { return 1 << 20, true } // 1 MiB free

	s := schedulerOn(t, cpuBackend(t), 64)
	ctx := NewContext(64, 64)
	defer ctx.Free()
	small := ctx.InputF32([]float32{1, 2}, 2)
	big := ctx.Repeat(small, ctx.NewTensor(TypeF32, 2, 1<<20)) // 8 MiB of output
	big.SetOutput()
	g := ctx.NewGraph(64)
	g.Expand(big)
	err := s.Compute(context.Background(), g)
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.EqualError(t, err, "out of memory: this computation needs 8.0 MiB of working memory on CPU but only 1.0 MiB is free")
	var me *ComputeMemoryError
	require.ErrorAs(t, err, &me)
	require.True(t, me.CPU)
	require.Equal(t, "CPU", me.Device)
	require.Equal(t, int64(1<<20), me.Free)
	require.GreaterOrEqual(t, me.Need, int64(8<<20))
	failed := &ComputeMemoryError{Device: "CUDA0", Need: 3 << 30, Free: -1, Op: "allocate"}
	require.EqualError(t, failed, "out of memory: could not allocate 3.0 GiB of compute buffers on CUDA0")
	require.ErrorIs(t, s.Reserve(g), ErrOutOfMemory)

	hostMemory = old
	require.NoError(t, s.Compute(context.Background(), g))
	require.Equal(t, []float32{1, 2, 1, 2}, big.Float32()[:4])
}

// TestQuantizeRows checks that the parallel quantizer writes the bytes of
// one Quantize call, for row counts that do not split evenly, more workers
// than pieces, and a tensor too small to split; and that it reports
// Quantize's errors.
func TestQuantizeRows(t *testing.T) {
	f := make([]float32, 257*1024)
	for i := range f {
		f[i] = float32(math.Sin(float64(i) * 0.37))
	}
	for _, typ := range []Type{TypeQ4_K, TypeQ8_0} {
		one, err := Quantize(typ, f, 1024)
		require.NoError(t, err)
		for _, workers := range []int{0, 1, 2, 7, 1000} {
			many, err := QuantizeRows(typ, f, 1024, workers)
			require.NoError(t, err)
			require.Equal(t, one, many, "%s, %d workers", typ, workers)
		}
		small, err := QuantizeRows(typ, f[:4096], 1024, 8)
		require.NoError(t, err)
		require.Equal(t, one[:4*typ.RowBytes(1024)], small)
	}
	_, err := QuantizeRows(TypeQ4_K, f[:1000], 100, 4)
	require.ErrorContains(t, err, "block size")
	_, err = QuantizeRows(TypeQ4_K, f[:1000], 256, 4)
	require.ErrorContains(t, err, "whole rows")
}

// A context that runs out of room panics in Go, with the count, before
// ggml would abort the process.
func TestContextRunsOutOfRoom(t *testing.T) {
	ctx := NewContext(64, 16) // a graph of 16 nodes: room for 14 tensors
	defer ctx.Free()
	x := ctx.NewTensor(TypeF32, 4)
	for range 13 {
		x = ctx.Add(x, x)
	}
	require.PanicsWithValue(t, "ggml: the graph needs more than 14 tensors; a smaller image or batch needs fewer", func() { ctx.Add(x, x) })
	// Without a graph, the headers bound it.
	w := NewContext(2, 0)
	defer w.Free()
	w.NewTensor(TypeF32, 1)
	w.NewTensor(TypeF32, 1)
	require.Panics(t, func() { w.NewTensor(TypeF32, 1) })
}

// TestComputeCancel: cancelling the context stops a CPU computation between
// nodes with ErrCanceled, and the next computation on the same scheduler
// runs whole, as if nothing had been cancelled.
func TestComputeCancel(t *testing.T) {
	s := schedulerOn(t, cpuBackend(t), 256)
	ctx := NewContext(256, 256)
	defer ctx.Free()
	const n, links = 512, 60 // about 16 GFLOP: far longer than the millisecond before cancelling
	r := rand.New(rand.NewPCG(1, 2))
	wv := make([]float32, n*n)
	for i := range wv {
		wv[i] = float32(r.NormFloat64())
	}
	w := ctx.InputF32(wv, n, n)
	x := ctx.InputF32(wv, n, n)
	for range links {
		x = ctx.Scale(ctx.MulMat(w, x), float32(1/math.Sqrt(n)))
	}
	x.SetOutput()
	g := ctx.NewGraph(256)
	g.Expand(x)

	require.NoError(t, s.Compute(context.Background(), g))
	want := x.Float32()
	for range 3 {
		c, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		err := s.Compute(c, g)
		cancel()
		require.ErrorIs(t, err, ErrCanceled)
		require.NoError(t, s.Compute(context.Background(), g), "a cancelled computation's abort must not reach the next")
		require.Equal(t, want, x.Float32())
	}
}

// TestCPUComputesShareTheCPUs: a CPU computation waits while other ones use
// the logical CPUs its threads need (cancelling the wait gives
// ErrCanceled), and runs once they are free; one with fewer threads runs
// beside them when CPUs are left.
func TestCPUComputesShareTheCPUs(t *testing.T) {
	ncpu := int64(runtime.NumCPU())
	if ncpu < 2 {
		t.Skip("needs two logical CPUs")
	}
	compute := func(threads int) func(context.Context) error {
		b, err := NewCPUBackend(threads)
		require.NoError(t, err)
		t.Cleanup(b.Close)
		s, err := NewScheduler([]*Backend{b}, 64)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		ctx := NewContext(64, 64)
		t.Cleanup(ctx.Free)
		y := ctx.Scale(ctx.InputF32([]float32{1, 2, 3}, 3), 2)
		y.SetOutput()
		g := ctx.NewGraph(64)
		g.Expand(y)
		return func(c context.Context) error { return s.Compute(c, g) }
	}
	all, one := compute(int(ncpu)), compute(1)

	require.NoError(t, cpuThreads.Acquire(context.Background(), ncpu-1)) // other work holds all but one CPU
	require.NoError(t, one(context.Background()), "one thread fits beside it")
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := all(c)
	cancel()
	require.ErrorIs(t, err, ErrCanceled, "all the CPUs are not free")
	done := make(chan error)
	go func() { done <- all(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("computed while the CPUs were in use (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	cpuThreads.Release(ncpu - 1)
	require.NoError(t, <-done)
}
