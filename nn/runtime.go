package nn

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// GraphSize is the node capacity of the graphs we build; the full SDXL UNet
// with CFG batching stays well under it.
const GraphSize = 32768

// Runtime is a device (plus the CPU as fallback) and a scheduler whose
// compute buffers are reused from one graph to the next.
type Runtime struct {
	Device *ggml.Backend // where weights and compute live
	CPU    *ggml.Backend // fallback for ops the device lacks (== Device on CPU)
	Sched  *ggml.Scheduler
	Attn   AttentionOptions
}

// NewRuntime opens a device by name ("auto", "cpu", "cuda:0", ...).
// threads sets the CPU's thread count (≤0: all cores).
func NewRuntime(device string, threads int) (*Runtime, error) {
	dev, err := ggml.FindDevice(device)
	if err != nil {
		return nil, err
	}
	cpu, err := ggml.NewCPUBackend(threads)
	if err != nil {
		return nil, err
	}
	r := &Runtime{CPU: cpu, Device: cpu}
	backends := []*ggml.Backend{cpu}
	if dev.Type != ggml.DeviceCPU {
		b, err := ggml.NewBackend(dev, threads)
		if err != nil {
			cpu.Close()
			return nil, err
		}
		r.Device = b
		backends = []*ggml.Backend{b, cpu}
		r.Attn = AttentionOptions{Flash: true, KVType: ggml.TypeF16}
	}
	r.Sched, err = ggml.NewScheduler(backends, GraphSize)
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Run builds a graph with build, computes it and returns each output
// tensor's values as float32 with its ggml shape.
func (r *Runtime) Run(ctx context.Context, build func(c *ggml.Context) []*ggml.Tensor) ([]Output, error) {
	gctx := ggml.NewContext(GraphSize*2, GraphSize)
	defer gctx.Free()
	outs, err := safeBuild(gctx, build)
	if err != nil {
		return nil, err
	}
	g := gctx.NewGraph(GraphSize)
	for i, o := range outs {
		if o.Type() != ggml.TypeF32 {
			o = gctx.Cast(o, ggml.TypeF32)
			outs[i] = o
		}
		o.SetOutput()
		g.Expand(o)
	}
	if err := r.Sched.Compute(ctx, g); err != nil {
		return nil, err
	}
	res := make([]Output, len(outs))
	for i, o := range outs {
		res[i] = Output{Data: o.Float32(), Shape: o.Shape()}
	}
	return res, nil
}

// safeBuild turns a shape panic while building a graph (a bug, or weights
// that do not fit the architecture) into an error.
func safeBuild(c *ggml.Context, build func(c *ggml.Context) []*ggml.Tensor) (outs []*ggml.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("building the compute graph failed: %v", r)
		}
	}()
	return build(c), nil
}

// Output is one computed tensor.
type Output struct {
	Data  []float32
	Shape [4]int64 // ggml order
}

// Close frees the scheduler and backends.
func (r *Runtime) Close() {
	if r.Sched != nil {
		r.Sched.Close()
	}
	if r.Device != nil && r.Device != r.CPU {
		r.Device.Close()
	}
	if r.CPU != nil {
		r.CPU.Close()
	}
}
