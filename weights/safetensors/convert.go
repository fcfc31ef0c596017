package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/gophotomaker/photomaker/internal/half"
)

// Float32 returns a tensor widened (or narrowed, for F64) to float32.
// Integer and bool tensors are converted by value.
func (f *File) Float32(name string) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	raw, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	return DecodeFloat32(t.DType, raw)
}

// Int64 returns an integer tensor (I64, I32, I16, I8, U8, BOOL) as int64.
func (f *File) Int64(name string) ([]int64, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	raw, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	n := len(raw) / t.DType.Size()
	out := make([]int64, n)
	for i := range out {
		switch t.DType {
		case I64:
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		case I32:
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		case I16:
			out[i] = int64(int16(binary.LittleEndian.Uint16(raw[2*i:])))
		case I8:
			out[i] = int64(int8(raw[i]))
		case U8, Bool:
			out[i] = int64(raw[i])
		default:
			return nil, fmt.Errorf("%s: tensor %q is %s, not an integer type", f.path, name, t.DType)
		}
	}
	return out, nil
}

// DecodeFloat32 converts little-endian raw bytes of dtype d to float32.
func DecodeFloat32(d DType, raw []byte) ([]float32, error) {
	sz := d.Size()
	if sz == 0 || len(raw)%sz != 0 {
		return nil, fmt.Errorf("cannot decode %d bytes of %q", len(raw), d)
	}
	out := make([]float32, len(raw)/sz)
	switch d {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case F16:
		half.DecodeF16(out, raw)
	case BF16:
		half.DecodeBF16(out, raw)
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	case I64:
		for i := range out {
			out[i] = float32(int64(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	case I32:
		for i := range out {
			out[i] = float32(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	case I16:
		for i := range out {
			out[i] = float32(int16(binary.LittleEndian.Uint16(raw[2*i:])))
		}
	case I8:
		for i := range out {
			out[i] = float32(int8(raw[i]))
		}
	case U8, Bool:
		for i := range out {
			out[i] = float32(raw[i])
		}
	}
	return out, nil
}
