// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header naming every tensor's dtype,
// shape and byte range, then the raw little-endian tensor bytes.
//
// Open memory-maps the file (where the platform allows) so a 7 GB checkpoint
// costs nothing until a tensor is read, and validates the whole header up
// front: offsets in range, sizes matching shape×dtype, no overlaps.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/gophotomaker/photomaker/internal/mmap"
)

// MaxHeaderSize bounds the JSON header we are willing to parse. Real SDXL
// checkpoints have headers of about 200 KB.
const MaxHeaderSize = 100 << 20

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("not a valid safetensors file")

// DType names a safetensors element type.
type DType string

// Element types we understand.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size returns the number of bytes per element, or 0 for an unknown type.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// Tensor describes one tensor of a file.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are byte offsets relative to the start of the data section.
	Begin, End int64
}

// Elements returns the product of the shape.
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an open safetensors file.
type File struct {
	path     string
	file     *mmap.File
	dataOff  int64
	tensors  []Tensor
	byName   map[string]int
	Metadata map[string]string
}

// Open reads and validates the header of path.
func Open(path string) (*File, error) {
	mf, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	sf, err := parse(mf, mf.Size())
	if err != nil {
		mf.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sf.path, sf.file = path, mf
	return sf, nil
}

// Parse validates a header read from r, whose total size is size. It is
// exported for fuzzing and for callers holding the bytes in memory.
func parse(r io.ReaderAt, size int64) (*File, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("%w: file is %d bytes, too short for a header", ErrFormat, size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, err
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > MaxHeaderSize || int64(hlen) > size-8 {
		return nil, fmt.Errorf("%w: header length %d does not fit the %d-byte file", ErrFormat, hlen, size)
	}
	hdr := make([]byte, hlen)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("%w: header is not JSON: %v", ErrFormat, err)
	}
	sf := &File{dataOff: 8 + int64(hlen), byName: map[string]int{}}
	dataSize := size - sf.dataOff
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.Metadata); err != nil {
				return nil, fmt.Errorf("%w: __metadata__ must map strings to strings", ErrFormat)
			}
			continue
		}
		var e struct {
			DType   DType    `json:"dtype"`
			Shape   []int64  `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, name, err)
		}
		t := Tensor{Name: name, DType: e.DType, Shape: e.Shape, Begin: e.Offsets[0], End: e.Offsets[1]}
		if t.DType.Size() == 0 {
			return nil, fmt.Errorf("%w: tensor %q has unsupported dtype %q", ErrFormat, name, e.DType)
		}
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 || (d > 0 && n > math.MaxInt64/d) {
				return nil, fmt.Errorf("%w: tensor %q has an impossible shape %v", ErrFormat, name, t.Shape)
			}
			n *= d
		}
		if t.Begin < 0 || t.End < t.Begin || t.End > dataSize {
			return nil, fmt.Errorf("%w: tensor %q byte range [%d,%d) is outside the %d-byte data section (truncated file?)", ErrFormat, name, t.Begin, t.End, dataSize)
		}
		if n > math.MaxInt64/int64(t.DType.Size()) || t.End-t.Begin != n*int64(t.DType.Size()) {
			return nil, fmt.Errorf("%w: tensor %q holds %d bytes but shape %v of %s needs %d", ErrFormat, name, t.End-t.Begin, t.Shape, t.DType, n*int64(t.DType.Size()))
		}
		sf.tensors = append(sf.tensors, t)
	}
	sort.Slice(sf.tensors, func(i, j int) bool {
		return sf.tensors[i].Begin < sf.tensors[j].Begin || (sf.tensors[i].Begin == sf.tensors[j].Begin && sf.tensors[i].Name < sf.tensors[j].Name)
	})
	for i, t := range sf.tensors {
		if i > 0 && t.Begin < sf.tensors[i-1].End && t.End > t.Begin {
			return nil, fmt.Errorf("%w: tensors %q and %q overlap", ErrFormat, sf.tensors[i-1].Name, t.Name)
		}
		sf.byName[t.Name] = i
	}
	return sf, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Tensors lists the tensors in file order.
func (f *File) Tensors() []Tensor { return f.tensors }

// Tensor returns the description of name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.tensors[i], true
}

// Bytes returns the raw little-endian bytes of a tensor. When the file is
// memory-mapped the slice aliases the mapping and must not be modified or
// used after Close.
func (f *File) Bytes(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	b, err := f.file.Slice(f.dataOff+t.Begin, t.End-t.Begin)
	if err != nil {
		return nil, fmt.Errorf("%s: read %q: %w", f.path, name, err)
	}
	return b, nil
}

// Close releases the mapping and the file.
func (f *File) Close() error {
	if f.file == nil {
		return nil
	}
	return f.file.Close()
}
