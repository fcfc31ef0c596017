package nn

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// testGPU is the first GPU, or without one (CI) the virtual GPU, which
// takes a GPU's code paths and computes on the CPU.
func testGPU() ggml.Device {
	if dev, err := ggml.FindDevice("auto"); err == nil && dev.Type != ggml.DeviceCPU {
		return dev
	}
	return ggml.RegisterVirtualGPU(1 << 30)
}

// runWarmUpGraph computes the warm-up graph on rt and returns its outputs;
// on a GPU it checks that every op and product ran there, or the warm-up
// would warm nothing.
func runWarmUpGraph(t *testing.T, rt *Runtime) []Output {
	t.Helper()
	w := newWarmUpWeights()
	defer w.ctx.Free()
	buf, err := rt.Device.Alloc(w.ctx)
	require.NoError(t, err)
	defer buf.Free()
	require.NoError(t, w.fill())
	g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor { return w.graph(c, rt.Attn) })
	require.NoError(t, err)
	defer g.Close()
	if rt.Device != rt.CPU {
		require.Empty(t, rt.Device.Unsupported(g.g), "ops %s cannot run", rt.Device.Dev.Name)
	}
	out, err := g.Run(context.Background())
	require.NoError(t, err)
	if rt.Device != rt.CPU {
		var products int
		for i := range g.g.Nodes() {
			if g.g.Node(i).FLOPs() > 0 {
				products++
			}
		}
		require.Greater(t, products, 5)
		require.Len(t, rt.Sched.ProductsOn(g.g, rt.Device), products, "products on %s", rt.Device.Dev.Name)
	}
	return out
}

// The warm-up graph computes on the GPU what the CPU (with our kernels,
// which other tests check against float64) computes: f16 weights and, on
// CUDA, TF32 products keep about 3 decimal digits; f16 keys and values
// and ggml's tabled GELU about as many (2.5e-3 of the largest value on
// the virtual GPU).
func TestWarmUpGraph(t *testing.T) {
	cpu, err := NewRuntime("cpu", 0)
	require.NoError(t, err)
	defer cpu.Close()
	gpu, err := newRuntimeOn(testGPU(), 0)
	require.NoError(t, err)
	defer gpu.Close()
	want, got := runWarmUpGraph(t, cpu), runWarmUpGraph(t, gpu)
	require.Len(t, got, len(want))
	require.Len(t, want, 8)
	for i := range want {
		require.Equal(t, want[i].Shape, got[i].Shape, "output %d", i)
		var scale, diff float64
		for j, v := range want[i].Data {
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "output %d", i)
			scale = max(scale, math.Abs(float64(v)))
			diff = max(diff, math.Abs(float64(got[i].Data[j]-v)))
		}
		require.Greater(t, scale, 0.0, "output %d is all zeros", i)
		require.LessOrEqual(t, diff, 1e-2*scale, "output %d (shape %v) on %s", i, want[i].Shape, gpu.Device.Dev.Name)
	}
}

// WarmUp runs alongside work on the runtime it warms (the loader's, in
// photomaker.Load) and reports no error; NoWarmUpEnv and the CPU skip it.
func TestWarmUp(t *testing.T) {
	rt, err := newRuntimeOn(testGPU(), 0)
	require.NoError(t, err)
	defer rt.Close()
	wait := rt.WarmUp()
	runWarmUpGraph(t, rt)
	require.NoError(t, wait())
	require.NoError(t, wait(), "waiting twice")

	t.Setenv(NoWarmUpEnv, "1")
	require.NoError(t, rt.WarmUp()())
	cpu, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer cpu.Close()
	require.NoError(t, cpu.WarmUp()())
}
