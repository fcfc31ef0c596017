package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Computed returns a float32 tensor whose values compute makes on demand
// from the tensors in from (a transform of weights at load time, such as a
// merged LoRA). It keeps the dtype the first of them was stored in
// (StoredAs), the natural type to keep it in on a device, and lists the
// files they read (AlsoReads), so that a loader can release their pages.
func Computed(name string, shape []int64, from []*Tensor, compute func() ([]float32, error)) *Tensor {
	base := from[0]
	return &Tensor{
		Name: name, DType: safetensors.F32, Shape: shape, File: base.File, Source: base.Source, StoredAs: storedAs(base),
		AlsoReads: alsoReads(base, from[1:]...),
		loadF32:   compute,
		load: func() ([]byte, error) {
			v, err := compute()
			if err != nil {
				return nil, err
			}
			b := make([]byte, 4*len(v))
			for i, x := range v {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
			}
			return b, nil
		},
	}
}

// ConcatRows stacks 2-D tensors with rows of one length ([out_i, in] in
// PyTorch order) into one [Σ out_i, in] tensor named name. Parts of one
// dtype are joined byte for byte, quantized blocks included (rows are
// stored whole); mixed dtypes are joined as float32, to be stored as their
// common original dtype, or f16 when they differ (a quantized part is not
// quantized again in another type).
func ConcatRows(name string, parts ...*Tensor) (*Tensor, error) {
	in, rows := parts[0].Shape[len(parts[0].Shape)-1], int64(0)
	same, sameStored := true, true
	for _, p := range parts {
		if len(p.Shape) != 2 || p.Shape[1] != in {
			return nil, fmt.Errorf("joining %s: %s is shaped %v, want [rows, %d]", name, p.Name, p.Shape, in)
		}
		rows += p.Shape[0]
		same = same && p.DType == parts[0].DType && p.StoredAs == parts[0].StoredAs
		sameStored = sameStored && storedAs(p) == storedAs(parts[0])
	}
	shape := []int64{rows, in}
	if !same {
		t := Computed(name, shape, parts, func() ([]float32, error) { return joined(parts, (*Tensor).Float32) })
		if !sameStored {
			t.StoredAs = safetensors.F16
		}
		return t, nil
	}
	base := parts[0]
	return &Tensor{
		Name: name, DType: base.DType, Shape: shape, File: base.File, Source: base.Source, StoredAs: base.StoredAs,
		AlsoReads: alsoReads(base, parts[1:]...),
		load:      func() ([]byte, error) { return joined(parts, (*Tensor).Bytes) },
	}, nil
}

// joined is what read gives for each part, one after the other.
func joined[T any](parts []*Tensor, read func(*Tensor) ([]T, error)) ([]T, error) {
	var out []T
	for _, p := range parts {
		v, err := read(p)
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
	}
	return out, nil
}

// alsoReads lists the files a computed tensor reads besides base's own.
func alsoReads(base *Tensor, others ...*Tensor) []string {
	out := slices.Clone(base.AlsoReads)
	for _, t := range others {
		for _, f := range append([]string{t.File}, t.AlsoReads...) {
			if f != "" && f != base.File && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// storedAs is the dtype a tensor computed from base should be stored in:
// base's (or that of base's own original).
func storedAs(base *Tensor) safetensors.DType {
	if base.StoredAs != "" {
		return base.StoredAs
	}
	return base.DType
}
