package ggml

/*
#include "ggml_api.h"

static void pm_to_float(const struct ggml_type_traits * tr, const void * x, float * y, int64_t k) {
	tr->to_float(x, y, k);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/internal/parallel"
)

// typeTraits returns ggml's traits of t, or nil for an unknown type.
func typeTraits(t Type) *C.struct_ggml_type_traits {
	if t.BlockBytes() == 0 {
		return nil
	}
	return C.ggml_get_type_traits(C.enum_ggml_type(t))
}

// traitsInfo reads ggml's traits of t through our struct declaration (for
// the declaration test).
func traitsInfo(t Type) (name string, blockSize, typeSize int64, quantized, ok bool) {
	tr := typeTraits(t)
	if tr == nil {
		return "", 0, 0, false, false
	}
	return C.GoString(tr.type_name), int64(tr.blck_size), int64(tr.type_size), bool(tr.is_quantized), true
}

// Dequantize decodes n elements of type t (whole rows of whole blocks, as
// Quantize writes them) to float32 with ggml's own reference decoder.
func Dequantize(t Type, data []byte, n int64) ([]float32, error) {
	bs := t.BlockSize()
	if n < 0 || bs <= 0 || n%bs != 0 {
		return nil, fmt.Errorf("dequantize %s: %d elements are not whole blocks of %d", t, n, bs)
	}
	if want := n / bs * t.BlockBytes(); int64(len(data)) != want {
		return nil, fmt.Errorf("dequantize %s: %d elements need %d bytes, got %d", t, n, want, len(data))
	}
	out := make([]float32, n)
	if n == 0 {
		return out, nil
	}
	if t == TypeF32 {
		copy(out, BytesF32(data))
		return out, nil
	}
	tr := typeTraits(t)
	if tr == nil || tr.to_float == nil {
		return nil, fmt.Errorf("dequantize: ggml has no decoder for %s", t)
	}
	// One call per chunk keeps k within what every decoder's int arithmetic handles.
	const chunk = 1 << 24
	for off := int64(0); off < n; off += chunk {
		k := min(chunk, n-off)
		C.pm_to_float(tr, unsafe.Pointer(&data[off/bs*t.BlockBytes()]), (*C.float)(unsafe.Pointer(&out[off])), C.int64_t(k))
	}
	return out, nil
}

// EncodeFloat stores float32 values as one of the plain float types (F32,
// F16, BF16, rounding to nearest even); ok is false for block-quantized
// types, which take Quantize with a row length.
func EncodeFloat(t Type, f []float32) (b []byte, ok bool) {
	switch t {
	case TypeF32:
		return F32Bytes(f), true
	case TypeF16:
		b = make([]byte, 2*len(f))
		encodeF16(b, f)
		return b, true
	case TypeBF16:
		b = make([]byte, 2*len(f))
		half.EncodeBF16(b, f)
		return b, true
	}
	return nil, false
}

// encodeF16 is half.EncodeF16 by ggml's CPU conversion, which takes the
// CPU's conversion instructions (x86's F16C, ARM's fcvtn) where the build
// has them: the same values (NaNs keep their payload), about ten times
// faster where loading merges LoRAs into f16 weights.
func encodeF16(dst []byte, src []float32) {
	if len(src) == 0 {
		return
	}
	parallel.Ranges(len(src), 1<<21, func(lo, hi int) {
		C.ggml_cpu_fp32_to_fp16((*C.float)(unsafe.Pointer(&src[lo])), (*C.ggml_fp16_t)(unsafe.Pointer(&dst[2*lo])), C.int64_t(hi-lo))
	})
}
