package nn

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// A device runtime warns once per op its device cannot compute. The device
// here is a second CPU backend, which has no product of f16 weights with
// q8_0 activations.
func TestWarnsAboutCPUFallbacks(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)

	cpu, err := ggml.NewCPUBackend(1)
	require.NoError(t, err)
	defer cpu.Close()
	dev, err := ggml.NewCPUBackend(1)
	require.NoError(t, err)
	defer dev.Close()
	rt := &Runtime{CPU: cpu, Device: dev}
	build := func(c *ggml.Context) []*ggml.Tensor {
		a := c.NewTensor(ggml.TypeF16, 32, 4)
		ok := c.MulMat(a, c.NewTensor(ggml.TypeF32, 32, 2))
		bad := c.MulMat(a, c.NewTensor(ggml.TypeQ8_0, 32, 2))
		return []*ggml.Tensor{c.Add(ok, bad)}
	}
	for range 2 {
		g, err := rt.Prepare(build)
		require.NoError(t, err)
		g.Close()
	}
	require.Equal(t, []string{"MUL_MAT"}, rt.CPUFallbacks())
	require.Equal(t, 1, strings.Count(logs.String(), "op=MUL_MAT"), logs.String())

	// On the CPU itself nothing is a fallback.
	cpuRT := &Runtime{CPU: cpu, Device: cpu}
	g, err := cpuRT.Prepare(build)
	require.NoError(t, err)
	g.Close()
	require.Empty(t, cpuRT.CPUFallbacks())
}

// The CPU's im2col reads views, so its graphs keep bands uncopied.
func TestIm2ColReadsViewsOnCPU(t *testing.T) {
	cpu, err := ggml.NewCPUBackend(1)
	require.NoError(t, err)
	defer cpu.Close()
	require.True(t, cpu.Im2ColReadsViews())
	rt, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer rt.Close()
	g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
		require.False(t, c.ContiguousIm2Col())
		return []*ggml.Tensor{c.InputF32([]float32{1}, 1)}
	})
	require.NoError(t, err)
	g.Close()
}

// A graph of writes keeps its outputs' types (no cast to f32 is added) and
// fills the persistent tensor it copies into; it has nothing to Run.
func TestPrepareWrites(t *testing.T) {
	rt, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer rt.Close()
	state := ggml.NewContext(1, 0)
	defer state.Free()
	dst := state.NewTensor(ggml.TypeF16, 4)
	buf, err := rt.Device.AllocState(state)
	require.NoError(t, err)
	defer buf.Free()
	g, err := rt.PrepareWrites(func(c *ggml.Context) []*ggml.Tensor {
		return []*ggml.Tensor{c.Copy(c.InputF32([]float32{1, -2, 0.5, 3}, 4), dst)}
	})
	require.NoError(t, err)
	defer g.Close()
	require.NoError(t, g.Compute(t.Context()))
	got, err := ggml.Dequantize(ggml.TypeF16, dst.Data(), 4)
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2, 0.5, 3}, got)
	_, err = g.Run(t.Context())
	require.ErrorContains(t, err, "nothing to read back")
}

// A graph larger than a graph can hold is an error from Prepare, not a
// crash inside ggml.
func TestPrepareRefusesHugeGraph(t *testing.T) {
	rt, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer rt.Close()
	_, err = rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
		x := c.InputF32([]float32{1}, 1)
		for range GraphSize {
			x = c.Add(x, x)
		}
		return []*ggml.Tensor{x}
	})
	require.ErrorContains(t, err, "building the compute graph failed: ggml: the graph needs more than")
}

// A runtime adds up the FLOPs of the graphs it computes, each run counted.
func TestComputedFLOPs(t *testing.T) {
	rt, err := NewRuntime("cpu", 1)
	require.NoError(t, err)
	defer rt.Close()
	g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
		a := c.InputF32(make([]float32, 8*3), 8, 3)
		b := c.InputF32(make([]float32, 8*5), 8, 5)
		return []*ggml.Tensor{c.MulMat(a, b)} // 3×5 outputs of 8 multiply-adds
	})
	require.NoError(t, err)
	defer g.Close()
	require.Equal(t, int64(2*8*3*5), g.FLOPs())
	require.Zero(t, rt.ComputedFLOPs(), "prepared, not computed")
	for range 2 {
		_, err := g.Run(t.Context())
		require.NoError(t, err)
	}
	require.Equal(t, int64(2*2*8*3*5), rt.ComputedFLOPs())
}

// A runtime WithHostWeights keeps the weights it uploads in host memory,
// and its graphs still compute on the device (the scheduler offloads the
// products on them), with the values the device's own weights give.
// Closing it leaves the runtime it came from working.
func TestWithHostWeights(t *testing.T) {
	f := newFixture(t)
	rt, err := newRuntimeOn(testGPU(), 2)
	require.NoError(t, err)
	defer rt.Close()
	product := func(rt *Runtime) ([]float32, *ggml.Tensor) {
		w := NewWeights(64, nil)
		t.Cleanup(w.Free)
		var m testModel
		require.NoError(t, w.Bind(f.set, "m.", &m))
		require.NoError(t, rt.Upload(t.Context(), w, nil))
		x := make([]float32, 32*64)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		out, err := rt.Run(t.Context(), func(c *ggml.Context) []*ggml.Tensor {
			return []*ggml.Tensor{m.Blocks[0].FF.Proj.Forward(c, c.InputF32(x, 32, 64))}
		})
		require.NoError(t, err)
		return out[0].Data, m.Blocks[0].FF.Proj.Weight
	}
	want, onDevice := product(rt)
	require.False(t, onDevice.InHostMemory())
	host := rt.WithHostWeights()
	require.True(t, host.WeightsInHost())
	require.False(t, rt.WeightsInHost())
	got, inHost := product(host)
	require.True(t, inHost.InHostMemory())
	require.Equal(t, want, got)
	require.Zero(t, host.CPUPlacedShare(), "the products ran on %s", rt.Device.Dev.Name)
	host.Close()
	again, _ := product(rt)
	require.Equal(t, want, again)
}
