package ggml

/*
#include <stdlib.h>
#include "ggml_api.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"unsafe"

	"golang.org/x/sync/semaphore"
)

// cpuThreads hands the logical CPUs out to the graphs computed on the CPU
// at one time (several pipelines in one process): ggml's threads wait for
// each other by spinning, so graphs whose threads together outnumber the
// CPUs run slower side by side than one after the other (two tiny-model
// pipelines of 2 threads on 2 cores: 5.7 s together, 3.7 s in turn).
var cpuThreads = semaphore.NewWeighted(int64(runtime.NumCPU()))

// ErrCanceled is returned when a computation stopped because its context
// was canceled.
var ErrCanceled = errors.New("computation canceled")

// Scheduler runs graphs over a set of backends: the preferred device first
// and the CPU last, which takes any op the device cannot run. Buffers are
// reserved for the largest graph once (Reserve) and reused by later graphs.
type Scheduler struct {
	p C.ggml_backend_sched_t
	// sizer is a second scheduler over the same backends that only sizes
	// graphs (checkMemory). Sizing on p itself would free p's buffers that
	// must grow, and ollama's reserve leaves the graph allocated.
	sizer    C.ggml_backend_sched_t
	backends []*Backend
	// profile is the handle of the OpProfile being filled (Profile), 0
	// when off.
	profile cgo.Handle
	size    int
	// allocated is the graph whose tensors hold the compute buffers now;
	// computing it again skips splitting and allocation (which also keeps
	// the CUDA backend's captured graph valid from one step to the next).
	allocated *Graph
}

// NewScheduler makes a scheduler for graphs of up to graphSize nodes. The
// last backend must be the CPU. With a device in front of the CPU, an op
// whose weight lies in host memory (AllocHost) runs on the device when the
// device asks for it (large batches): the weight is copied over for each
// graph, which is how weights stream.
func NewScheduler(backends []*Backend, graphSize int) (*Scheduler, error) {
	if len(backends) == 0 || !backends[len(backends)-1].IsCPU() {
		return nil, errors.New("ggml: the scheduler's last backend must be the CPU")
	}
	ps := C.malloc(C.size_t(len(backends)) * C.size_t(unsafe.Sizeof(C.ggml_backend_t(nil))))
	defer C.free(ps)
	arr := unsafe.Slice((*C.ggml_backend_t)(ps), len(backends))
	for i, b := range backends {
		arr[i] = b.p
	}
	p := C.ggml_backend_sched_new((*C.ggml_backend_t)(ps), nil, C.int(len(backends)), C.size_t(graphSize), false, C.bool(len(backends) > 1))
	sizer := C.ggml_backend_sched_new((*C.ggml_backend_t)(ps), nil, C.int(len(backends)), C.size_t(graphSize), false, C.bool(len(backends) > 1))
	if p == nil || sizer == nil {
		for _, q := range []C.ggml_backend_sched_t{p, sizer} {
			if q != nil {
				C.ggml_backend_sched_free(q)
			}
		}
		return nil, errors.New("ggml: could not create a scheduler")
	}
	return &Scheduler{p: p, sizer: sizer, backends: backends, size: graphSize}, nil
}

// GraphSize is the node capacity graphs for this scheduler should have.
func (s *Scheduler) GraphSize() int { return s.size }

// Backends returns the scheduler's backends, preferred first.
func (s *Scheduler) Backends() []*Backend { return s.backends }

// Reserve allocates g's compute buffers (checked against the free memory
// first) without computing it; computing g next reuses the allocation.
func (s *Scheduler) Reserve(g *Graph) error {
	s.allocated = nil
	g.forgetStale()
	if err := s.checkMemory(g); err != nil {
		return err
	}
	return s.allocate(g)
}

// allocate gives g's tensors compute memory (after forgetStale). Sizing
// (checkMemory) left g's operands pointing at the sizer's copies of split
// inputs, which this scheduler never fills: they are restored first, or
// every input a GPU reads from the CPU would be read as garbage.
func (s *Scheduler) allocate(g *Graph) error {
	g.restoreSources()
	C.ggml_backend_sched_reset(s.p)
	if !C.ggml_backend_sched_alloc_graph(s.p, g.p) {
		return s.oomError("allocate")
	}
	s.allocated = g
	return nil
}

// forgetStale clears the addresses g's tensors kept from an earlier
// allocation, before another graph ran, so that sizing and allocating g
// start afresh: ggml would skip such tensors as already placed and lay the
// scheduler's new tensors, such as the device copies of CPU inputs, over
// them (on a GPU, seen with Vulkan, the inputs read garbage), or, when the
// other graph grew the compute buffers, read and write the freed old ones
// (heap corruption on the CPU). Ownership decides, not the tensors'
// buffers, which may be freed: every tensor of g's context, and every view
// of one, has compute memory, except those a caller placed
// (Backend.AllocTensors); views of weights and other persistent tensors,
// which live in other contexts, keep theirs.
func (g *Graph) forgetStale() {
	g.restoreSources()
	tensors := g.ctx.Tensors()
	own := make(map[*C.struct_ggml_tensor]bool, len(tensors))
	for _, t := range tensors {
		own[t.p] = true
	}
	for _, t := range tensors {
		root := t.p
		for root.view_src != nil {
			root = root.view_src
		}
		if own[root] && !isPinned(root) {
			t.p.data, t.p.buffer = nil, nil
		}
	}
}

// BufferSize returns the compute buffer size held for backend b.
func (s *Scheduler) BufferSize(b *Backend) int64 {
	return int64(C.ggml_backend_sched_get_buffer_size(s.p, b.p))
}

// SetReplay says whether the next graphs are a loop body that repeats with
// new input values (a sampler step). The CUDA backend then captures the
// graph once and replays it; without the hint it guesses from tensor shapes
// and sees SDXL's image-sized additions as a batch, which disables capture.
// The hint also turns off offloading ops on host weights to the device, so
// graphs that stream weights must not set it.
func (s *Scheduler) SetReplay(on bool) {
	n := -1 // no hint: the backends decide (and host weights may be offloaded)
	if on {
		n = 1
	}
	C.ggml_backend_sched_set_batch_size(s.p, C.int(n))
	C.ggml_backend_sched_set_batch_size(s.sizer, C.int(n)) // the same splits
}

// ProductsOn lists g's products, convolutions and attentions (the nodes
// Graph.FLOPs counts) that the scheduler placed on backend b when it last
// allocated g; none if another graph was allocated since. A GPU graph whose
// products land on the CPU (ops on weights the scheduler did not see, a
// kernel the GPU lacks) still computes right but many times slower, so
// runtimes check it.
func (s *Scheduler) ProductsOn(g *Graph, b *Backend) []*Tensor {
	return s.nodesOn(g, b, func(t *Tensor) bool { return t.FLOPs() > 0 })
}

// NodesOn lists g's nodes that the scheduler placed on backend b when it
// last allocated g (none if another graph was allocated since): tests that
// compare a GPU with the CPU check that the GPU computed every op.
func (s *Scheduler) NodesOn(g *Graph, b *Backend) []*Tensor {
	return s.nodesOn(g, b, func(*Tensor) bool { return true })
}

func (s *Scheduler) nodesOn(g *Graph, b *Backend, keep func(*Tensor) bool) []*Tensor {
	if s.allocated != g {
		return nil
	}
	var out []*Tensor
	for i := range g.Nodes() {
		if t := g.Node(i); keep(t) && C.ggml_backend_sched_get_tensor_backend(s.p, t.p) == b.p {
			out = append(out, t)
		}
	}
	return out
}

// Splits returns how many backend splits the last graph needed (1 = all on
// one device).
func (s *Scheduler) Splits() int { return int(C.ggml_backend_sched_get_n_splits(s.p)) }

// Compute allocates g, uploads the inputs declared on its context, runs it
// and leaves outputs readable until the next Compute. Computing the same
// graph again (new input values set with Context.SetInput) reuses its
// allocation as long as no other graph ran in between. Cancelling ctx stops
// a CPU computation between nodes and returns ErrCanceled. A graph on the
// CPU first waits until its threads have logical CPUs to themselves
// (cpuThreads).
func (s *Scheduler) Compute(ctx context.Context, g *Graph) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrCanceled, err)
	}
	if main := s.backends[0]; main.IsCPU() {
		n := int64(min(max(main.threads, 1), runtime.NumCPU()))
		if err := cpuThreads.Acquire(ctx, n); err != nil {
			return fmt.Errorf("%w: %w", ErrCanceled, err)
		}
		defer cpuThreads.Release(n)
	}
	if g.ctx.p == nil {
		return errors.New("ggml: computing a graph whose context was freed")
	}
	if s.allocated != g {
		s.allocated = nil
		g.forgetStale()
		if err := s.checkMemory(g); err != nil {
			return err
		}
		if err := s.allocate(g); err != nil {
			return err
		}
	}
	for _, in := range g.ctx.inputs {
		if !in.t.Allocated() {
			continue // declared but not used by this graph
		}
		if err := in.t.SetData(in.data); err != nil {
			return err
		}
	}
	// The watcher raises the backends' abort flags when ctx ends. It has
	// finished before the flags are lowered again, so that a late raise
	// cannot outlive this computation and stop the next one.
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			s.setAbort(1)
		case <-stop:
		}
	}()
	if s.profile != 0 {
		s.profile.Value().(*OpProfile).start()
	}
	status := C.ggml_backend_sched_graph_compute(s.p, g.p)
	close(stop)
	<-watched
	s.setAbort(0)
	switch status {
	case C.GGML_STATUS_SUCCESS:
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
		}
		return nil
	case C.GGML_STATUS_ABORTED:
		return fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
	case C.GGML_STATUS_ALLOC_FAILED:
		s.allocated = nil
		return s.oomError("compute")
	}
	return fmt.Errorf("ggml: graph computation failed (status %d)", int(status))
}

// checkMemory sizes g's compute buffers without allocating them and refuses
// growth beyond the free memory of a device or the available RAM: an error
// with the sizes, instead of an abort inside ggml or the kernel's OOM killer
// (host allocations overcommit and fail only when touched). The sizing runs
// on the sizer, which allocates nothing.
func (s *Scheduler) checkMemory(g *Graph) error {
	sizes := make([]C.size_t, len(s.backends))
	g.restoreSources()
	C.ggml_backend_sched_reserve_size(s.sizer, g.p, &sizes[0])
	for i, b := range s.backends {
		need := int64(sizes[i])
		grow := need - s.BufferSize(b) // a larger buffer replaces the old one
		if grow <= 0 {
			continue
		}
		var avail uint64
		var known bool
		if b.IsCPU() {
			avail, known = hostMemory()
		} else if free, total := b.Dev.Memory(); total > 0 {
			avail, known = free, true
		}
		if known && uint64(grow) > avail {
			return &ComputeMemoryError{Device: b.Dev.Name, CPU: b.IsCPU(), Need: need, Free: int64(avail)}
		}
	}
	return nil
}

// ComputeMemoryError is a graph whose compute buffers do not fit: refused
// before allocation (Free known) or failed in the allocator (Free < 0). It
// says what was needed where; the caller, which knows the stage and the
// settings, says what to change (it wraps ErrOutOfMemory).
type ComputeMemoryError struct {
	Device string // the device short of memory (the neediest one when an allocation failed)
	CPU    bool   // the device is the CPU: its memory is RAM
	Need   int64  // bytes of compute buffers the graph needs on Device
	Free   int64  // bytes free on Device when checked; < 0 when unknown
	Op     string // "allocate" or "compute" for a failed allocation
}

func (e *ComputeMemoryError) Error() string {
	if e.Free < 0 {
		return fmt.Sprintf("%v: could not %s %s of compute buffers on %s", ErrOutOfMemory, e.Op, HumanBytes(e.Need), e.Device)
	}
	return fmt.Sprintf("%v: this computation needs %s of working memory on %s but only %s is free",
		ErrOutOfMemory, HumanBytes(e.Need), e.Device, HumanBytes(e.Free))
}

func (e *ComputeMemoryError) Unwrap() error { return ErrOutOfMemory }

func (s *Scheduler) setAbort(v int) {
	for _, b := range s.backends {
		if b.abort != nil {
			*(*C.int)(unsafe.Pointer(b.abort)) = C.int(v)
		}
	}
}

func (s *Scheduler) oomError(what string) error {
	e := &ComputeMemoryError{Free: -1, Op: what}
	for _, b := range s.backends {
		if n := int64(C.ggml_backend_sched_get_attempted_buffer_size(s.p, b.p)); n > e.Need {
			e.Device, e.CPU, e.Need = b.Dev.Name, b.IsCPU(), n
		}
	}
	if e.Device == "" { // nothing recorded: the scheduler's first (main) device
		e.Device, e.CPU = s.backends[0].Dev.Name, s.backends[0].IsCPU()
	}
	return e
}

// Close frees the scheduler (not its backends).
func (s *Scheduler) Close() {
	s.allocated = nil
	if s.p != nil {
		s.Profile(nil)
		C.ggml_backend_sched_free(s.p)
		s.p = nil
	}
	if s.sizer != nil {
		C.ggml_backend_sched_free(s.sizer)
		s.sizer = nil
	}
}
