package ggml

/*
#include <stdlib.h>
#include "ggml_api.h"
#include "cpu_kernels.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// Context owns tensor headers (never tensor data: every context is
// no_alloc, data lives in backend buffers). Inputs created with Input are
// uploaded by Scheduler.Compute once the graph has memory.
type Context struct {
	p      *C.struct_ggml_context
	inputs []pendingInput
	// f32Accum makes MulMat ask for f32 accumulation wherever its first
	// operand is f16 or bf16 (SetF32Accumulation).
	f32Accum bool
	// contiguousIm2Col says the graph's backend needs im2col inputs
	// contiguous (SetContiguousIm2Col).
	contiguousIm2Col bool
	// cpuKernels lets ops take our own CPU kernels (SetCPUKernels).
	cpuKernels bool
	// bandsBySet says the backend has SET (SetBandsBySet).
	bandsBySet bool
	// capacity is how many tensors the context can make: its headers, and
	// with a graph the graph's nodes; room is what is left (see wrap).
	capacity, room int
	ones           map[[4]int64]*Tensor // Ones' tensors, one per shape
}

// SetContiguousIm2Col tells graph builders on c that im2col must get
// contiguous inputs (Backend.Im2ColReadsViews false): they copy views first.
func (c *Context) SetContiguousIm2Col(on bool) { c.contiguousIm2Col = on }

// ContiguousIm2Col is what SetContiguousIm2Col set.
func (c *Context) ContiguousIm2Col() bool { return c.contiguousIm2Col }

// SetBandsBySet tells graph builders on c that the backend computes SET
// (Backend.SetsViews): a result made in bands is then assembled by writing
// each band (SetInplace) rather than adding it into zeros (AccInplace),
// which ggml-cuda does by rewriting the whole result for every band.
func (c *Context) SetBandsBySet(on bool) { c.bandsBySet = on }

// BandsBySet is what SetBandsBySet set.
func (c *Context) BandsBySet() bool { return c.bandsBySet }

// SetCPUKernels tells graph builders on c that the graph runs on the CPU
// backend, so ops may take our own CPU kernels (cpu_*.c), which are
// ggml custom ops that only the CPU runs. On another backend the scheduler
// would move them to the CPU.
func (c *Context) SetCPUKernels(on bool) { c.cpuKernels = on }

// SetF32Accumulation makes every later MulMat on c whose first operand is
// f16 or bf16 accumulate in f32 on backends that would otherwise accumulate
// in f16 (ggml-cuda's cuBLAS path). On the CPU our kernels (SetCPUKernels)
// sum such products in f32 anyway; ggml's own sum them in f16 on ARM cores
// with fp16 arithmetic, whatever this asks.
func (c *Context) SetF32Accumulation(on bool) { c.f32Accum = on }

type pendingInput struct {
	t    *Tensor
	data []byte
}

// NewContext makes a context with room for maxTensors tensor headers and a
// graph of up to graphSize nodes (0 for none).
func NewContext(maxTensors, graphSize int) *Context {
	size := C.size_t(maxTensors)*C.ggml_tensor_overhead() + 1024
	if graphSize > 0 {
		size += C.ggml_graph_overhead_custom(C.size_t(graphSize), false)
	}
	p := C.ggml_init(C.struct_ggml_init_params{mem_size: size, mem_buffer: nil, no_alloc: true})
	if p == nil {
		panic("ggml_init failed: out of host memory")
	}
	capacity := maxTensors
	if graphSize > 0 {
		// Every op is a node of the graph, which also lists the leaves
		// of other contexts (weights): keep room for those.
		capacity = min(maxTensors, graphSize-graphSize/8)
	}
	return &Context{p: p, capacity: capacity, room: capacity}
}

// Free releases the context's headers. Tensors of the context must not be
// used afterwards.
func (c *Context) Free() {
	if c.p != nil {
		C.ggml_free(c.p)
		c.p = nil
	}
	c.inputs = nil
}

// Tensor is a ggml tensor header.
type Tensor struct {
	p *C.struct_ggml_tensor
}

// wrap takes a tensor the context just made. ggml aborts the process when
// a context runs out of room (or a graph out of nodes), so the context
// counts what it made and panics first, in Go, where graph builders turn a
// panic into an error: a huge image fails with a message, not a crash.
func (c *Context) wrap(p *C.struct_ggml_tensor) *Tensor {
	if p == nil {
		panic("ggml returned a nil tensor")
	}
	if c.room--; c.room < 0 {
		panic(fmt.Sprintf("ggml: the graph needs more than %d tensors; a smaller image or batch needs fewer", c.capacity))
	}
	placeWeightView(p)
	return &Tensor{p: p}
}

// placeWeightView gives a view of weights (a kernel row, a reshaped 1×1
// kernel) its memory at once, as the graph allocator would only later: a
// scheduler runs an op next to its weights, or offloads it to the GPU when
// they stream from host memory, only if it sees their buffer, and a view
// has none until allocated. Without it the 3×3 convolutions' products on
// kernel rows ran on the CPU in --vram stream (2.3 s per 1024² step on an
// H200 instead of about 0.4 s).
func placeWeightView(p *C.struct_ggml_tensor) {
	v := p.view_src
	if v == nil || p.buffer != nil || v.buffer == nil || v.data == nil ||
		C.ggml_backend_buffer_get_usage(v.buffer) != C.GGML_BACKEND_BUFFER_USAGE_WEIGHTS {
		return
	}
	if C.ggml_backend_view_init(p) != C.GGML_STATUS_SUCCESS {
		panic("ggml: could not place a view of weights")
	}
}

// NewTensor declares a tensor; ne is in ggml order (fastest first).
func (c *Context) NewTensor(t Type, ne ...int64) *Tensor {
	if len(ne) == 0 || len(ne) > 4 {
		panic(fmt.Sprintf("ggml: tensors have 1 to 4 dimensions, got %d", len(ne)))
	}
	var cne [4]C.int64_t
	for i, v := range ne {
		cne[i] = C.int64_t(v)
	}
	return c.wrap(C.ggml_new_tensor(c.p, C.enum_ggml_type(t), C.int(len(ne)), &cne[0]))
}

// Input declares a graph input holding data (raw bytes in type t, ggml
// order). The bytes are uploaded when the graph is computed.
func (c *Context) Input(t Type, data []byte, ne ...int64) *Tensor {
	x := c.NewTensor(t, ne...)
	if int64(len(data)) != x.Bytes() {
		panic(fmt.Sprintf("ggml: input of shape %v %s needs %d bytes, got %d", ne, t, x.Bytes(), len(data)))
	}
	C.ggml_set_input(x.p)
	c.inputs = append(c.inputs, pendingInput{x, data})
	return x
}

// SetInput replaces the data of input x (declared on c with Input) for the
// next computation of a graph that is reused: only values change, never
// shapes, so the graph and its buffers stay as they are.
func (c *Context) SetInput(x *Tensor, data []byte) error {
	for i := range c.inputs {
		if c.inputs[i].t.p == x.p {
			if int64(len(data)) != x.Bytes() {
				return fmt.Errorf("ggml: input %v needs %d bytes, got %d", x.Shape(), x.Bytes(), len(data))
			}
			c.inputs[i].data = data
			return nil
		}
	}
	return fmt.Errorf("ggml: tensor %v is not an input of this context", x.Shape())
}

// SetInputF32 is SetInput for float32 values.
func (c *Context) SetInputF32(x *Tensor, data []float32) error {
	return c.SetInput(x, F32Bytes(data))
}

// InputF32 declares a float32 graph input.
func (c *Context) InputF32(data []float32, ne ...int64) *Tensor {
	return c.Input(TypeF32, F32Bytes(data), ne...)
}

// InputI32 declares an int32 graph input (row indices, positions).
func (c *Context) InputI32(data []int32, ne ...int64) *Tensor {
	return c.Input(TypeI32, I32Bytes(data), ne...)
}

// Tensors lists every tensor of the context in creation order.
func (c *Context) Tensors() []*Tensor {
	var out []*Tensor
	for p := C.ggml_get_first_tensor(c.p); p != nil; p = C.ggml_get_next_tensor(c.p, p) {
		out = append(out, &Tensor{p: p})
	}
	return out
}

// Type returns the element type.
func (t *Tensor) Type() Type { return Type(t.p._type) }

// Ne returns the size of dimension i (ggml order).
func (t *Tensor) Ne(i int) int64 { return int64(t.p.ne[i]) }

// Nb returns the byte stride of dimension i.
func (t *Tensor) Nb(i int) int64 { return int64(t.p.nb[i]) }

// Shape returns the four ggml dimensions.
func (t *Tensor) Shape() [4]int64 {
	return [4]int64{int64(t.p.ne[0]), int64(t.p.ne[1]), int64(t.p.ne[2]), int64(t.p.ne[3])}
}

// Elements returns the number of elements.
func (t *Tensor) Elements() int64 { return int64(C.ggml_nelements(t.p)) }

// Bytes returns the tensor's data size in bytes.
func (t *Tensor) Bytes() int64 { return int64(C.ggml_nbytes(t.p)) }

// Contiguous reports whether the tensor's elements are densely packed.
func (t *Tensor) Contiguous() bool { return bool(C.ggml_is_contiguous(t.p)) }

// Op returns ggml's name of the operation that produces the tensor ("NONE" for leaves).
func (t *Tensor) Op() string { return C.GoString(C.ggml_op_desc(t.p)) }

// Src returns the node's i-th operand, or nil.
func (t *Tensor) Src(i int) *Tensor {
	if i < 0 || i >= len(t.p.src) || t.p.src[i] == nil {
		return nil
	}
	return &Tensor{p: t.p.src[i]}
}

// PreciseF32 reports whether a MUL_MAT node asks for f32 accumulation.
func (t *Tensor) PreciseF32() bool {
	return t.Op() == "MUL_MAT" && t.p.op_params[0] == C.GGML_PREC_F32
}

// Name returns the tensor's name.
func (t *Tensor) Name() string { return C.GoString(&t.p.name[0]) }

// SetName names the tensor; names must be shorter than MaxName bytes.
func (t *Tensor) SetName(name string) *Tensor {
	if len(name) >= MaxName {
		panic(fmt.Sprintf("ggml: tensor name %q is %d bytes; ggml allows %d", name, len(name), MaxName-1))
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	C.ggml_set_name(t.p, cs)
	return t
}

// SetOutput marks the tensor as a graph output so its memory is kept.
func (t *Tensor) SetOutput() *Tensor { C.ggml_set_output(t.p); return t }

// Allocated reports whether the tensor has backend memory.
func (t *Tensor) Allocated() bool { return t.p.data != nil || t.p.buffer != nil }

// SetData copies raw bytes into the tensor's backend memory.
func (t *Tensor) SetData(data []byte) error {
	if !t.Allocated() {
		return fmt.Errorf("ggml: tensor %q has no memory yet", t.Name())
	}
	if int64(len(data)) != t.Bytes() {
		return fmt.Errorf("ggml: tensor %q holds %d bytes, got %d", t.Name(), t.Bytes(), len(data))
	}
	if len(data) > 0 {
		C.ggml_backend_tensor_set(t.p, unsafe.Pointer(&data[0]), 0, C.size_t(len(data)))
	}
	return nil
}

// InHostMemory reports whether t's memory is host memory (CPU buffers, and
// host buffers that a GPU reads), which SetData fills with a plain copy:
// such writes to different tensors may run at once.
func (t *Tensor) InHostMemory() bool {
	return t.p.buffer != nil && bool(C.ggml_backend_buffer_is_host(t.p.buffer))
}

// CopyFrom copies src's bytes into t, both allocated and of one type and
// shape, within a device when both live on it (no trip through the host).
func (t *Tensor) CopyFrom(src *Tensor) error {
	switch {
	case !t.Allocated() || !src.Allocated():
		return fmt.Errorf("ggml: copying %q into %q: both need memory", src.Name(), t.Name())
	case t.Repacked() || src.Repacked():
		return fmt.Errorf("ggml: copying %q into %q: repacked weights are only for the CPU's products", src.Name(), t.Name())
	case t.Type() != src.Type() || t.Shape() != src.Shape() || !t.Contiguous() || !src.Contiguous():
		return fmt.Errorf("ggml: copying %q (%s %v) into %q (%s %v): want one contiguous type and shape",
			src.Name(), src.Type(), src.Shape(), t.Name(), t.Type(), t.Shape())
	}
	C.ggml_backend_tensor_copy(src.p, t.p)
	return nil
}

// Data copies the tensor's bytes out of backend memory. A repacked weight
// (Backend.AllocRepacked) cannot be read: Data panics.
func (t *Tensor) Data() []byte {
	t.mustBeReadable()
	b := make([]byte, t.Bytes())
	if len(b) > 0 {
		C.ggml_backend_tensor_get(t.p, unsafe.Pointer(&b[0]), 0, C.size_t(len(b)))
	}
	return b
}

// Float32 reads an F32 tensor.
func (t *Tensor) Float32() []float32 {
	if t.Type() != TypeF32 {
		panic(fmt.Sprintf("ggml: Float32 on a %s tensor", t.Type()))
	}
	t.mustBeReadable()
	// Straight into the float32 slice: outputs can be large, and a byte
	// copy in between would double them (ggml's hosts are little-endian).
	v := make([]float32, t.Bytes()/4)
	if len(v) > 0 {
		C.ggml_backend_tensor_get(t.p, unsafe.Pointer(&v[0]), 0, C.size_t(4*len(v)))
	}
	return v
}

// F32Bytes encodes float32 values little-endian.
func F32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// I32Bytes encodes int32 values little-endian.
func I32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

// BytesF32 decodes little-endian float32 values.
func BytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// Graph is a computation graph.
type Graph struct {
	p   *C.struct_ggml_cgraph
	ctx *Context
	// srcs are the operands of each node as built. A scheduler splitting
	// the graph across backends rewrites them to its copies of the inputs,
	// which live only until its next split (and a backend may reorder the
	// nodes): a graph split again (sized, then allocated, or computed again
	// after another graph) must get its own operands back first, or it
	// reads freed tensors.
	srcs map[*C.struct_ggml_tensor][len(C.struct_ggml_tensor{}.src)]*C.struct_ggml_tensor
}

// restoreSources undoes a scheduler's rewriting of the nodes' operands
// (see Graph.srcs); the first call records them.
func (g *Graph) restoreSources() {
	n := int(C.ggml_graph_n_nodes(g.p))
	record := g.srcs == nil
	if record {
		g.srcs = make(map[*C.struct_ggml_tensor][len(C.struct_ggml_tensor{}.src)]*C.struct_ggml_tensor, n)
	}
	for i := range n {
		node := C.ggml_graph_node(g.p, C.int(i))
		if record {
			g.srcs[node] = node.src
		} else if src, ok := g.srcs[node]; ok {
			node.src = src
		}
	}
}

// NewGraph makes a graph of up to size nodes in the context.
func (c *Context) NewGraph(size int) *Graph {
	return &Graph{p: C.ggml_new_graph_custom(c.p, C.size_t(size), false), ctx: c}
}

// Expand adds t and everything it depends on.
func (g *Graph) Expand(ts ...*Tensor) {
	for _, t := range ts {
		C.ggml_build_forward_expand(g.p, t.p)
	}
}

// Nodes returns the number of nodes.
func (g *Graph) Nodes() int { return int(C.ggml_graph_n_nodes(g.p)) }

// Node returns node i (negative counts from the end).
func (g *Graph) Node(i int) *Tensor { return &Tensor{p: C.ggml_graph_node(g.p, C.int(i))} }

// FLOPs counts the floating-point operations of g's products, two per
// multiply-add: matrix products (MUL_MAT), fused attention (FLASH_ATTN_EXT
// and our CPU kernel: queries·keys and weights·values) and direct
// convolutions (CONV_2D). They
// are nearly all of a diffusion model's arithmetic; elementwise ops,
// norms and softmax are left out. Divided by a run's time it is the
// achieved rate that papers and GPU specifications quote. Count a graph
// before a scheduler splits it: the split points operands at copies that
// die with the next split.
func (g *Graph) FLOPs() int64 {
	var n int64
	for i := range g.Nodes() {
		n += g.Node(i).FLOPs()
	}
	return n
}

// FLOPs is the arithmetic of node t if it is a product, a convolution or
// an attention (see Graph.FLOPs), else 0.
func (t *Tensor) FLOPs() int64 {
	a, b := t.Src(0), t.Src(1)
	switch t.Op() {
	case "MUL_MAT": // a [K, M, …] · b [K, N, B2, B3] → [M, N, B2, B3]
		return 2 * a.Ne(0) * t.Elements()
	case "FLASH_ATTN_EXT": // q [D, Nq, H, B], k [D, Nk, H, B] (fewer heads broadcast), v [Dv, Nk, …]
		q, v := a, t.Src(2)
		return 2*q.Elements()*b.Ne(1) + // q·kᵀ
			2*v.Ne(0)*q.Ne(1)*q.Ne(2)*q.Ne(3)*b.Ne(1) // softmax·v
	case "CONV_2D": // kernel [KW, KH, Cin, Cout] over the output [OW, OH, Cout, N]
		return 2 * a.Ne(0) * a.Ne(1) * a.Ne(2) * t.Elements()
	case "CUSTOM": // our CPU kernels (products, convolutions, attention)
		return int64(C.pm_kernel_flops(t.p))
	}
	return 0
}

// headerSizes returns ggml_tensor_overhead() as the library computes it and
// sizeof(struct ggml_tensor) as our header declares it (checked in tests).
func headerSizes() (libraryOverhead, declaredTensor int) {
	return int(C.ggml_tensor_overhead()), int(unsafe.Sizeof(C.struct_ggml_tensor{}))
}
