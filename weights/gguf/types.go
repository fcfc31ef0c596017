package gguf

import (
	"fmt"
	"strings"
)

// Type is a ggml tensor type id (enum ggml_type in ggml.h).
type Type uint32

// ggml tensor types. Ids 4, 5, 31-33 and 36-38 belong to removed types.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
)

type traits struct {
	name      string
	blockSize int64 // elements per block
	typeSize  int64 // bytes per block
}

// typeTraits holds the block layout of every type, from ggml's type_traits
// table (block sizes are sizeof(block_*) in ggml-common.h).
var typeTraits = map[Type]traits{
	TypeF32:     {"f32", 1, 4},
	TypeF16:     {"f16", 1, 2},
	TypeQ4_0:    {"q4_0", 32, 18},
	TypeQ4_1:    {"q4_1", 32, 20},
	TypeQ5_0:    {"q5_0", 32, 22},
	TypeQ5_1:    {"q5_1", 32, 24},
	TypeQ8_0:    {"q8_0", 32, 34},
	TypeQ8_1:    {"q8_1", 32, 36},
	TypeQ2_K:    {"q2_K", 256, 84},
	TypeQ3_K:    {"q3_K", 256, 110},
	TypeQ4_K:    {"q4_K", 256, 144},
	TypeQ5_K:    {"q5_K", 256, 176},
	TypeQ6_K:    {"q6_K", 256, 210},
	TypeQ8_K:    {"q8_K", 256, 292},
	TypeIQ2_XXS: {"iq2_xxs", 256, 66},
	TypeIQ2_XS:  {"iq2_xs", 256, 74},
	TypeIQ3_XXS: {"iq3_xxs", 256, 98},
	TypeIQ1_S:   {"iq1_s", 256, 50},
	TypeIQ4_NL:  {"iq4_nl", 32, 18},
	TypeIQ3_S:   {"iq3_s", 256, 110},
	TypeIQ2_S:   {"iq2_s", 256, 82},
	TypeIQ4_XS:  {"iq4_xs", 256, 136},
	TypeI8:      {"i8", 1, 1},
	TypeI16:     {"i16", 1, 2},
	TypeI32:     {"i32", 1, 4},
	TypeI64:     {"i64", 1, 8},
	TypeF64:     {"f64", 1, 8},
	TypeIQ1_M:   {"iq1_m", 256, 56},
	TypeBF16:    {"bf16", 1, 2},
	TypeTQ1_0:   {"tq1_0", 256, 54},
	TypeTQ2_0:   {"tq2_0", 256, 66},
	TypeMXFP4:   {"mxfp4", 32, 17},
}

// Valid reports whether t is a type ggml still supports.
func (t Type) Valid() bool { _, ok := typeTraits[t]; return ok }

// Name returns ggml's name for the type ("f32", "q4_K", ...).
func (t Type) Name() string {
	if tr, ok := typeTraits[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

func (t Type) String() string { return t.Name() }

// BlockSize returns the number of elements per block (1 for plain types,
// 32 or 256 for quantized ones), or 0 for an unknown type.
func (t Type) BlockSize() int64 { return typeTraits[t].blockSize }

// TypeSize returns the number of bytes per block, or 0 for an unknown type.
func (t Type) TypeSize() int64 { return typeTraits[t].typeSize }

// RowBytes returns the bytes of a row of ne0 elements. ne0 must be a
// multiple of BlockSize; RowBytes returns -1 otherwise or for an unknown type.
func (t Type) RowBytes(ne0 int64) int64 {
	tr, ok := typeTraits[t]
	if !ok || ne0 < 0 || ne0%tr.blockSize != 0 {
		return -1
	}
	return ne0 / tr.blockSize * tr.typeSize
}

// ParseType looks a type up by its ggml name ("q4_K", "f16"; case is
// ignored).
func ParseType(name string) (Type, error) {
	for t, tr := range typeTraits {
		if strings.EqualFold(tr.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown ggml type %q", name)
}

// tensorBytes validates a ggml-order shape for type t and returns its size.
func tensorBytes(t Type, shape []int64) (int64, error) {
	tr, ok := typeTraits[t]
	if !ok {
		return 0, fmt.Errorf("unknown ggml type %d", uint32(t))
	}
	if len(shape) > MaxDims {
		return 0, fmt.Errorf("%d dimensions (ggml allows at most %d)", len(shape), MaxDims)
	}
	ne0 := int64(1)
	if len(shape) > 0 {
		ne0 = shape[0]
	}
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
	}
	if ne0%tr.blockSize != 0 {
		return 0, fmt.Errorf("row of %d elements is not a multiple of the %s block size %d", ne0, tr.name, tr.blockSize)
	}
	const limit = int64(1) << 62
	if ne0/tr.blockSize > limit/tr.typeSize {
		return 0, fmt.Errorf("shape %v is too large", shape)
	}
	n := ne0 / tr.blockSize * tr.typeSize
	for _, d := range shape[min(1, len(shape)):] {
		if d != 0 && n > limit/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	return n, nil
}
