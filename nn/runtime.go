package nn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

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
	// F32Accumulation asks every product with f16 or bf16 weights in the
	// graphs built here to accumulate in f32 (ggml.Context.
	// SetF32Accumulation), as diffusers does; on by default (NewRuntime).
	// Off, ggml-cuda accumulates f16 products in f16. The CPU always uses f32.
	F32Accumulation bool
	// CPUKernels lets the graphs built here take our own CPU kernels where
	// ggml's are slow (ggml.Context.SetCPUKernels); on by default on the
	// CPU (NewRuntime). Off, the CPU computes the graphs a GPU would
	// (memory plans measured on the CPU, tests of GPU paths).
	CPUKernels bool

	hostWeights      bool         // Upload keeps weights in host memory (WithHostWeights)
	shared           bool         // the backends and scheduler are another runtime's (WithHostWeights)
	contiguousIm2Col bool         // the device's im2col cannot read views
	bandsBySet       bool         // the device computes SET (ggml.Context.SetBandsBySet)
	computed         atomic.Int64 // FLOPs of the graphs computed (ComputedFLOPs)
	warnMu           sync.Mutex
	warned           map[string]bool // ops already reported as running on the CPU
	cpuPlaced        float64         // the largest share of a GPU graph's arithmetic placed on the CPU
}

// cpuSoftmaxUpTo bounds the score matrices the CPU computes at once
// (AttentionOptions.SoftmaxUpTo): SDXL's largest takes 80 MiB at 512², in
// one piece, and 1.3 GiB at 1024², in 11.
const cpuSoftmaxUpTo = 128 << 20

// NewRuntime opens a device by name ("auto", "cpu", "cuda:0", ...).
// threads sets the CPU's thread count (≤0: all cores).
func NewRuntime(device string, threads int) (*Runtime, error) {
	dev, err := ggml.FindDevice(device)
	if err != nil {
		return nil, err
	}
	return newRuntimeOn(dev, threads)
}

// newRuntimeOn is NewRuntime on a device already found.
func newRuntimeOn(dev ggml.Device, threads int) (*Runtime, error) {
	cpu, err := ggml.NewCPUBackend(threads)
	if err != nil {
		return nil, err
	}
	// On the CPU, attention takes our kernel (AttentionOptions.CPUKernel):
	// 1.6–2.9× as fast as the softmax path (BenchmarkAttention). Where it
	// does not apply (masks), the softmax path, in pieces of queries whose
	// scores take at most cpuSoftmaxUpTo: its products run on ggml's GEMM
	// kernels, 2.3–3× as fast as ggml's CPU flash kernel, and the pieces
	// bound its memory.
	r := &Runtime{CPU: cpu, Device: cpu, F32Accumulation: true, CPUKernels: true,
		Attn: AttentionOptions{Flash: true, KVType: ggml.TypeF32, SoftmaxUpTo: cpuSoftmaxUpTo, CPUKernel: true}}
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
	r.contiguousIm2Col = !r.Device.Im2ColReadsViews()
	r.bandsBySet = r.Device.SetsViews()
	r.Sched, err = ggml.NewScheduler(backends, GraphSize)
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// WithHostWeights is a runtime on r's backends and scheduler (it shares
// their compute buffers) whose Upload keeps weights in host memory that
// the device reads from for each graph (Weights.UploadHost; ggml's
// scheduler offloads the ops on them): for models whose few, small graphs
// do not need their weights in device memory, such as the encoders in the
// low-VRAM modes. Its Close leaves r as it is. On the CPU it is r's twin.
func (r *Runtime) WithHostWeights() *Runtime {
	return &Runtime{Device: r.Device, CPU: r.CPU, Sched: r.Sched, Attn: r.Attn, F32Accumulation: r.F32Accumulation, CPUKernels: r.CPUKernels,
		hostWeights: true, shared: true, contiguousIm2Col: r.contiguousIm2Col, bandsBySet: r.bandsBySet}
}

// WeightsInHost says whether Upload keeps weights in host memory
// (WithHostWeights).
func (r *Runtime) WeightsInHost() bool { return r.hostWeights }

// Upload allocates and fills w's weights for this runtime: in its device's
// memory, or in host memory that the device reads from (WithHostWeights).
// progress is as Weights.Upload's.
func (r *Runtime) Upload(ctx context.Context, w *Weights, progress func(done, total int)) error {
	if r.hostWeights && r.Device != r.CPU {
		return w.UploadHost(ctx, r.Device, progress)
	}
	return w.Upload(ctx, r.Device, progress)
}

// UsesCPUKernels says whether the graphs built here take our CPU kernels:
// on the CPU, with CPUKernels set. Contexts that only shape tensors like
// those graphs' (ggml.Context.SetCPUKernels) follow it too.
func (r *Runtime) UsesCPUKernels() bool { return r.Device.IsCPU() && r.CPUKernels }

// Run builds a graph with build, computes it and returns each output
// tensor's values as float32 with its ggml shape.
func (r *Runtime) Run(ctx context.Context, build func(c *ggml.Context) []*ggml.Tensor) ([]Output, error) {
	g, err := r.Prepare(build)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return g.Run(ctx)
}

// Graph is a built graph that can be computed many times with new input
// values (Context().SetInput): a sampler loop builds the UNet once and
// reuses the graph and its compute buffers for every step.
type Graph struct {
	rt   *Runtime
	ctx  *ggml.Context
	g    *ggml.Graph
	outs []*ggml.Tensor
	// readBack: the outputs are float32 for Run (Prepare), not writes kept
	// in their own types (PrepareWrites).
	readBack bool
	// Replay marks a loop body computed again and again with new values,
	// which GPU backends may capture once and replay (ggml.Scheduler
	// SetReplay). Leave it off for graphs that stream weights.
	Replay bool
	flops  int64 // FLOPs
	placed bool  // its placement was checked (checkPlacement)
}

// Prepare builds a graph with build; its outputs are read as float32.
func (r *Runtime) Prepare(build func(c *ggml.Context) []*ggml.Tensor) (*Graph, error) {
	return r.prepare(build, true)
}

// PrepareWrites builds a graph whose outputs are writes into tensors that
// stay on the device (Context.Copy into a state buffer), kept in their own
// types: Compute it, nothing is read back.
func (r *Runtime) PrepareWrites(build func(c *ggml.Context) []*ggml.Tensor) (*Graph, error) {
	return r.prepare(build, false)
}

func (r *Runtime) prepare(build func(c *ggml.Context) []*ggml.Tensor, readBack bool) (*Graph, error) {
	gctx := ggml.NewContext(GraphSize*2, GraphSize)
	gctx.SetF32Accumulation(r.F32Accumulation)
	gctx.SetContiguousIm2Col(r.contiguousIm2Col)
	gctx.SetBandsBySet(r.bandsBySet)
	gctx.SetCPUKernels(r.UsesCPUKernels())
	outs, err := safeBuild(gctx, build)
	if err != nil {
		gctx.Free()
		return nil, err
	}
	if len(outs) == 0 {
		gctx.Free()
		return nil, errors.New("building the compute graph failed: no outputs")
	}
	g := gctx.NewGraph(GraphSize)
	for i, o := range outs {
		if readBack && o.Type() != ggml.TypeF32 {
			o = gctx.Cast(o, ggml.TypeF32)
			outs[i] = o
		}
		o.SetOutput()
		g.Expand(o)
	}
	r.warnUnsupported(g)
	// Counted now, on the graph as built: a scheduler's split rewrites its
	// operands to copies that do not outlive the next split.
	return &Graph{rt: r, ctx: gctx, g: g, outs: outs, readBack: readBack, flops: g.FLOPs()}, nil
}

// warnUnsupported says, once per op, when the device cannot compute some of
// g's ops: the scheduler then runs them on the CPU, which is correct but can
// make a GPU run many times slower (a backend built without a kernel).
func (r *Runtime) warnUnsupported(g *ggml.Graph) {
	if r.Device == r.CPU {
		return
	}
	ops := r.Device.Unsupported(g)
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	for _, op := range slices.Sorted(maps.Keys(ops)) {
		if r.warned[op] {
			continue
		}
		if r.warned == nil {
			r.warned = map[string]bool{}
		}
		r.warned[op] = true
		slog.Warn("the GPU backend has no kernel for an op, so the CPU computes it (slow); a backend library built as ggml/README.md says has every op the models use",
			"device", r.Device.Dev.Name, "op", op, "nodes", ops[op])
	}
}

// CPUFallbacks lists the ops this runtime's graphs used that its GPU
// cannot compute (warned about once each); empty on the CPU.
func (r *Runtime) CPUFallbacks() []string {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	return slices.Sorted(maps.Keys(r.warned))
}

// Context is the graph's context, where its inputs were declared.
func (g *Graph) Context() *ggml.Context { return g.ctx }

// FLOPs is the arithmetic of g's products (ggml.Graph.FLOPs).
func (g *Graph) FLOPs() int64 { return g.flops }

// ComputedFLOPs is the arithmetic of every graph computed on r so far
// (Graph.FLOPs each time): over a span of work, its rate.
func (r *Runtime) ComputedFLOPs() int64 { return r.computed.Load() }

// Run computes the graph with its inputs' current values and reads its
// outputs.
func (g *Graph) Run(ctx context.Context) ([]Output, error) {
	if !g.readBack {
		return nil, errors.New("nn: a graph of writes (PrepareWrites) has nothing to read back; use Compute")
	}
	if err := g.Compute(ctx); err != nil {
		return nil, err
	}
	res := make([]Output, len(g.outs))
	for i, o := range g.outs {
		res[i] = Output{Data: o.Float32(), Shape: o.Shape()}
	}
	return res, nil
}

// Compute computes the graph with its inputs' current values and reads
// nothing back: for graphs whose outputs write into tensors that stay on the
// device (a sampler loop's latents).
func (g *Graph) Compute(ctx context.Context) error {
	g.rt.Sched.SetReplay(g.Replay)
	if err := g.rt.Sched.Compute(ctx, g.g); err != nil {
		return err
	}
	g.rt.computed.Add(g.FLOPs())
	if !g.placed {
		g.placed = true
		g.rt.checkPlacement(g)
	}
	return nil
}

// checkPlacement warns, once per runtime, when the scheduler placed more
// than 1 % of a GPU graph's arithmetic on the CPU: still right, but many
// times slower (ops on weights it did not see as weights). Products of
// fewer than 32 rows on weights in host memory (--vram stream) stay on the
// CPU by ggml's rule for offloading, as in llama.cpp; only tiny images have
// large ones (the UNet's deepest level at 128²), so they are not counted.
func (r *Runtime) checkPlacement(g *Graph) {
	if r.Device == r.CPU || g.flops == 0 {
		return
	}
	var onCPU []*ggml.Tensor
	var flops int64
	for _, t := range r.Sched.ProductsOn(g.g, r.CPU) {
		if t.Op() == "MUL_MAT" && t.Ne(1) < 32 {
			continue
		}
		onCPU = append(onCPU, t)
		flops += t.FLOPs()
	}
	share := float64(flops) / float64(g.flops)
	if share <= 0.01 {
		return
	}
	for _, t := range onCPU {
		slog.Debug("product placed on the CPU", "op", t.Op(), "name", t.Name(), "shape", t.Shape(), "operand", t.Src(0).Shape(), "flops", t.FLOPs())
	}
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	if r.cpuPlaced <= 0.01 {
		slog.Warn("the CPU computes part of a GPU graph's products (slow); please report it with the command you ran",
			"device", r.Device.Dev.Name, "share", fmt.Sprintf("%.1f%%", 100*share))
	}
	r.cpuPlaced = max(r.cpuPlaced, share)
}

// CPUPlacedShare is the largest share of one GPU graph's arithmetic that
// the scheduler placed on the CPU so far (checkPlacement); 0 on the CPU.
func (r *Runtime) CPUPlacedShare() float64 {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	return r.cpuPlaced
}

// Reserve sizes the scheduler's compute buffers for this graph without
// computing it and returns the device's compute buffer size: a request that
// does not fit fails here, before any work, with the sizes in the error.
func (g *Graph) Reserve() (int64, error) {
	if err := g.rt.Sched.Reserve(g.g); err != nil {
		return 0, err
	}
	return g.rt.Sched.BufferSize(g.rt.Device), nil
}

// Close frees the graph.
func (g *Graph) Close() {
	if g.ctx != nil {
		g.ctx.Free()
		g.ctx = nil
	}
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

// Close frees the scheduler and backends (none for WithHostWeights'
// runtimes, which share another's).
func (r *Runtime) Close() {
	if r.shared {
		return
	}
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
