package ggml

/*
#include "ggml_api.h"

static ggml_backend_buffer_type_t *pm_extra_bufts(ggml_backend_dev_t dev) {
	ggml_backend_dev_get_extra_bufts_t get = (ggml_backend_dev_get_extra_bufts_t)
		ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
	return get ? get(dev) : NULL;
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// Repacked weights. ggml's CPU backend has faster matrix products for some
// block-quantized weights (q4_0 and q4_K on AVX2 and ARM's dot-product
// extensions) when each group of 8 rows is stored interleaved: its "CPU
// repack" buffer type rearranges them as they are written. The interleaved
// bytes are only meaningful to that product, so a repacked weight must be
// the first operand of MulMat (a plain 2-D matrix, f32 activations) in
// every graph, and cannot be read back or copied to another device.
//
// ggml registers the buffer type only when compiled with
// GGML_USE_CPU_REPACK (the Makefile sets it through CGO_CPPFLAGS); a plain
// `go build` leaves it out, and weights are then stored as they are.

// cpuRepack is the CPU device and its repack buffer type (nil when this
// ggml has none).
type cpuRepack struct {
	dev  C.ggml_backend_dev_t
	buft C.ggml_backend_buffer_type_t
}

var findRepack = sync.OnceValue(func() cpuRepack {
	dev, err := FindDevice("cpu")
	if err != nil {
		return cpuRepack{}
	}
	list := C.pm_extra_bufts(dev.p)
	if list == nil {
		return cpuRepack{}
	}
	for _, buft := range unsafe.Slice(list, 16) {
		if buft == nil {
			break
		}
		if C.GoString(C.ggml_backend_buft_name(buft)) == "CPU_REPACK" {
			return cpuRepack{dev.p, buft}
		}
	}
	return cpuRepack{}
})

// repackType is the CPU's repack buffer type, or nil.
func repackType() C.ggml_backend_buffer_type_t { return findRepack().buft }

// repackProbe is an empty buffer of the repack type: a test product's
// weight points at it so that the CPU device answers whether it would
// multiply by that weight repacked (ggml leaks empty buffers' headers on
// free, so one is kept).
var repackProbe = sync.OnceValue(func() C.ggml_backend_buffer_t {
	if repackType() == nil {
		return nil
	}
	return C.ggml_backend_buft_alloc_buffer(repackType(), 0)
})

// CanRepack reports whether this ggml build repacks any CPU weights.
func CanRepack() bool { return repackType() != nil }

// Repacks reports whether b, a CPU backend, multiplies by weight w (not
// yet allocated) faster when AllocRepacked stores it: it asks ggml about a
// product w·x as the CPU would compute it, so the answer follows w's type
// and shape and this CPU's instruction sets.
func (b *Backend) Repacks(w *Tensor) bool {
	// Only the CPU device that owns the buffer type computes with it: a
	// GPU backend would read the interleaved bytes as plain ones.
	if b.Dev.p != findRepack().dev || repackProbe() == nil || w.Allocated() || w.Shape()[2] != 1 || w.Shape()[3] != 1 {
		return false
	}
	c := NewContext(4, 0)
	defer c.Free()
	probe := c.NewTensor(w.Type(), w.Ne(0), w.Ne(1))
	op := c.MulMat(probe, c.NewTensor(TypeF32, w.Ne(0), 8))
	probe.p.buffer = repackProbe()
	return b.Supports(op)
}

// AllocRepacked gives the tensors (each one Repacks accepts) memory in one
// CPU buffer of the repack type, marked as weights, after checking the
// available RAM as Alloc does. Writing a tensor (SetData, all of it at
// once) stores it interleaved.
func (b *Backend) AllocRepacked(ts ...*Tensor) (*Buffer, error) {
	var need int64
	for _, t := range ts {
		if !b.Repacks(t) {
			return nil, fmt.Errorf("ggml: %s weight %q %v cannot be repacked", t.Type(), t.Name(), t.Shape())
		}
		need += t.Bytes()
	}
	if err := checkRAM(need); err != nil {
		return nil, err
	}
	buf, err := allocTensorsIn(repackType(), ts, "host memory")
	if err != nil {
		return nil, err
	}
	C.ggml_backend_buffer_set_usage(buf.p, C.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
	return buf, nil
}

// Repacked reports whether t lives in a repacked buffer (AllocRepacked).
func (t *Tensor) Repacked() bool {
	return t.p.buffer != nil && repackType() != nil && C.ggml_backend_buffer_get_type(t.p.buffer) == repackType()
}

// mustBeReadable panics on a repacked tensor, whose bytes ggml cannot read
// back (it would crash in C).
func (t *Tensor) mustBeReadable() {
	if t.Repacked() {
		panic(fmt.Sprintf("ggml: weight %q is stored repacked for the CPU's products and cannot be read back", t.Name()))
	}
}
