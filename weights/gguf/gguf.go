// Package gguf reads and writes GGUF files, ggml's container: a header of
// typed key-value metadata and tensor descriptions (name, ggml type, shape
// with ne0 first, offset), then the aligned tensor data.
//
// Open memory-maps the file (where the platform allows) and validates the
// whole header up front: every count, string and array length is checked
// against the bytes the file actually has before anything is allocated for
// it, and every tensor must lie aligned inside the data section without
// overlapping another. Create writes a file in one streaming pass.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"

	"github.com/gophotomaker/photomaker/internal/mmap"
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("not a valid GGUF file")

const (
	// Magic starts every GGUF file.
	Magic = "GGUF"
	// Version is the version Create writes; Open reads versions 2 and 3.
	Version = 3
	// DefaultAlignment applies when general.alignment is absent.
	DefaultAlignment = 32
	// AlignmentKey is the metadata key that overrides the alignment.
	AlignmentKey = "general.alignment"
	// MaxNameLen is the longest tensor name ggml accepts (GGML_MAX_NAME
	// is 64 including the terminating NUL).
	MaxNameLen = 63
	// MaxDims is GGML_MAX_DIMS.
	MaxDims = 4

	maxString   = 64 << 20 // longest metadata string or key
	maxArrayLen = 1 << 28  // longest metadata array
)

// GGUF metadata value types (enum gguf_type).
const (
	typeUint8   uint32 = 0
	typeInt8    uint32 = 1
	typeUint16  uint32 = 2
	typeInt16   uint32 = 3
	typeUint32  uint32 = 4
	typeInt32   uint32 = 5
	typeFloat32 uint32 = 6
	typeBool    uint32 = 7
	typeString  uint32 = 8
	typeArray   uint32 = 9
	typeUint64  uint32 = 10
	typeInt64   uint32 = 11
	typeFloat64 uint32 = 12
)

// valueSize is the encoded size of a fixed-size value type, 0 otherwise.
func valueSize(t uint32) int64 {
	switch t {
	case typeUint8, typeInt8, typeBool:
		return 1
	case typeUint16, typeInt16:
		return 2
	case typeUint32, typeInt32, typeFloat32:
		return 4
	case typeUint64, typeInt64, typeFloat64:
		return 8
	}
	return 0
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	Name  string
	Type  Type
	Shape []int64 // ggml order: ne0 (the contiguous dimension) first
	// Offset is the absolute file offset of the tensor's first byte (the
	// data section start plus the offset the header records).
	Offset int64
	// Size is the tensor's size in bytes.
	Size int64
}

// Elements returns the product of the shape.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an open GGUF file.
type File struct {
	path      string
	file      *mmap.File // nil when parsed from memory (fuzzing)
	r         io.ReaderAt
	version   uint32
	alignment int64
	dataOff   int64
	keys      []string
	meta      map[string]any
	tensors   []TensorInfo
	byName    map[string]int
}

// Open reads and validates the header of path.
func Open(path string) (*File, error) {
	mf, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	gf, err := parse(mf, mf.Size())
	if err != nil {
		mf.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gf.path, gf.file = path, mf
	return gf, nil
}

// reader reads the header sequentially, knowing how many bytes remain.
type reader struct {
	br   *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
}

func (r *reader) left() int64 { return r.size - r.pos }

func (r *reader) fill(n int, what string) ([]byte, error) {
	if int64(n) > r.left() {
		return nil, fmt.Errorf("%w: file ends at byte %d inside %s", ErrFormat, r.size, what)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, fmt.Errorf("%w: reading %s at byte %d: %v", ErrFormat, what, r.pos, err)
	}
	r.pos += int64(n)
	return b, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.fill(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.fill(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(r.left()) || n > maxString {
		return "", fmt.Errorf("%w: %s claims %d bytes but %d remain (limit %d)", ErrFormat, what, n, r.left(), maxString)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return "", fmt.Errorf("%w: reading %s: %v", ErrFormat, what, err)
	}
	r.pos += int64(n)
	return string(b), nil
}

// scalar reads one value of a non-array type.
func (r *reader) scalar(t uint32, what string) (any, error) {
	if t == typeString {
		return r.str(what)
	}
	sz := valueSize(t)
	if sz == 0 {
		return nil, fmt.Errorf("%w: %s has unknown value type %d", ErrFormat, what, t)
	}
	b, err := r.fill(int(sz), what)
	if err != nil {
		return nil, err
	}
	switch t {
	case typeUint8:
		return b[0], nil
	case typeInt8:
		return int8(b[0]), nil
	case typeBool:
		return b[0] != 0, nil
	case typeUint16:
		return binary.LittleEndian.Uint16(b), nil
	case typeInt16:
		return int16(binary.LittleEndian.Uint16(b)), nil
	case typeUint32:
		return binary.LittleEndian.Uint32(b), nil
	case typeInt32:
		return int32(binary.LittleEndian.Uint32(b)), nil
	case typeFloat32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
	case typeUint64:
		return binary.LittleEndian.Uint64(b), nil
	case typeInt64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // typeFloat64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

// array reads n values of type t into a typed slice. Slices grow as values
// are read, so a lying count costs no more than the bytes really present.
func readArray[T any](r *reader, t uint32, n uint64, what string) ([]T, error) {
	out := make([]T, 0, min(n, 1<<12))
	for i := uint64(0); i < n; i++ {
		v, err := r.scalar(t, what)
		if err != nil {
			return nil, err
		}
		out = append(out, v.(T))
	}
	return out, nil
}

func (r *reader) array(what string) (any, error) {
	t, err := r.u32(what + " element type")
	if err != nil {
		return nil, err
	}
	n, err := r.u64(what + " length")
	if err != nil {
		return nil, err
	}
	minSize := valueSize(t)
	if t == typeString {
		minSize = 8
	}
	if minSize == 0 {
		return nil, fmt.Errorf("%w: %s is an array of unsupported value type %d", ErrFormat, what, t)
	}
	if n > maxArrayLen || n > uint64(r.left()/minSize) {
		return nil, fmt.Errorf("%w: %s claims %d elements but only %d bytes remain (limit %d elements)", ErrFormat, what, n, r.left(), maxArrayLen)
	}
	switch t {
	case typeUint8:
		return readArray[uint8](r, t, n, what)
	case typeInt8:
		return readArray[int8](r, t, n, what)
	case typeUint16:
		return readArray[uint16](r, t, n, what)
	case typeInt16:
		return readArray[int16](r, t, n, what)
	case typeUint32:
		return readArray[uint32](r, t, n, what)
	case typeInt32:
		return readArray[int32](r, t, n, what)
	case typeFloat32:
		return readArray[float32](r, t, n, what)
	case typeBool:
		return readArray[bool](r, t, n, what)
	case typeString:
		return readArray[string](r, t, n, what)
	case typeUint64:
		return readArray[uint64](r, t, n, what)
	case typeInt64:
		return readArray[int64](r, t, n, what)
	default:
		return readArray[float64](r, t, n, what)
	}
}

// parse validates a GGUF header read from r, whose size is size.
func parse(ra io.ReaderAt, size int64) (*File, error) {
	r := &reader{br: bufio.NewReaderSize(io.NewSectionReader(ra, 0, size), 1<<16), size: size}
	if size < 24 {
		return nil, fmt.Errorf("%w: file is %d bytes, too short for a GGUF header", ErrFormat, size)
	}
	magic, _ := r.fill(4, "magic")
	if string(magic) != Magic {
		return nil, fmt.Errorf("%w: magic is %q, want %q", ErrFormat, magic, Magic)
	}
	gf := &File{r: ra, meta: map[string]any{}, byName: map[string]int{}, alignment: DefaultAlignment}
	var err error
	if gf.version, err = r.u32("version"); err != nil {
		return nil, err
	}
	if gf.version != 2 && gf.version != 3 {
		hint := ""
		if gf.version&0xffff == 0 {
			hint = " (a big-endian file?)"
		}
		return nil, fmt.Errorf("%w: version %d is not supported (want 2 or 3)%s", ErrFormat, gf.version, hint)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// A key-value pair takes at least 13 bytes (key length, type, a byte
	// of value), a tensor description at least 24.
	if nKV > uint64(r.left()/13) {
		return nil, fmt.Errorf("%w: metadata count %d cannot fit the %d-byte file", ErrFormat, nKV, size)
	}
	if nTensors > uint64(r.left()/24) {
		return nil, fmt.Errorf("%w: tensor count %d cannot fit the %d-byte file", ErrFormat, nTensors, size)
	}
	for i := uint64(0); i < nKV; i++ {
		key, err := r.str("metadata key " + strconv.FormatUint(i, 10))
		if err != nil {
			return nil, err
		}
		what := fmt.Sprintf("metadata %q", key)
		if _, dup := gf.meta[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrFormat, key)
		}
		t, err := r.u32(what + " type")
		if err != nil {
			return nil, err
		}
		var v any
		if t == typeArray {
			v, err = r.array(what)
		} else {
			v, err = r.scalar(t, what)
		}
		if err != nil {
			return nil, err
		}
		gf.meta[key] = v
		gf.keys = append(gf.keys, key)
	}
	if v, ok := gf.meta[AlignmentKey]; ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%w: %s must be a uint32 power of two, got %v (%T)", ErrFormat, AlignmentKey, v, v)
		}
		gf.alignment = int64(a)
	}
	for i := uint64(0); i < nTensors; i++ {
		name, err := r.str("tensor name " + strconv.FormatUint(i, 10))
		if err != nil {
			return nil, err
		}
		if len(name) > MaxNameLen {
			return nil, fmt.Errorf("%w: tensor name %q is %d bytes, ggml allows %d", ErrFormat, name, len(name), MaxNameLen)
		}
		if _, dup := gf.byName[name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor name %q", ErrFormat, name)
		}
		what := fmt.Sprintf("tensor %q", name)
		nd, err := r.u32(what + " dimension count")
		if err != nil {
			return nil, err
		}
		if nd > MaxDims {
			return nil, fmt.Errorf("%w: %s has %d dimensions, ggml allows %d", ErrFormat, what, nd, MaxDims)
		}
		shape := make([]int64, nd)
		for j := range shape {
			d, err := r.u64(what + " shape")
			if err != nil {
				return nil, err
			}
			shape[j] = int64(d)
		}
		typ, err := r.u32(what + " type")
		if err != nil {
			return nil, err
		}
		off, err := r.u64(what + " offset")
		if err != nil {
			return nil, err
		}
		n, err := tensorBytes(Type(typ), shape)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrFormat, what, err)
		}
		if off%uint64(gf.alignment) != 0 {
			return nil, fmt.Errorf("%w: %s offset %d is not a multiple of the alignment %d", ErrFormat, what, off, gf.alignment)
		}
		if off > uint64(size) {
			return nil, fmt.Errorf("%w: %s offset %d is beyond the %d-byte file", ErrFormat, what, off, size)
		}
		gf.byName[name] = len(gf.tensors)
		gf.tensors = append(gf.tensors, TensorInfo{Name: name, Type: Type(typ), Shape: shape, Offset: int64(off), Size: n})
	}
	gf.dataOff = (r.pos + gf.alignment - 1) / gf.alignment * gf.alignment
	if gf.dataOff > size && len(gf.tensors) > 0 {
		return nil, fmt.Errorf("%w: data section at byte %d is beyond the %d-byte file (truncated?)", ErrFormat, gf.dataOff, size)
	}
	dataSize := size - gf.dataOff
	order := make([]int, len(gf.tensors))
	for i := range gf.tensors {
		t := &gf.tensors[i]
		if t.Offset > dataSize || t.Size > dataSize-t.Offset {
			return nil, fmt.Errorf("%w: tensor %q bytes [%d,%d) of the data section lie beyond its %d bytes (truncated file?)", ErrFormat, t.Name, t.Offset, t.Offset+t.Size, dataSize)
		}
		t.Offset += gf.dataOff
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return gf.tensors[order[a]].Offset < gf.tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		p, q := gf.tensors[order[k-1]], gf.tensors[order[k]]
		if q.Offset < p.Offset+p.Size && q.Size > 0 {
			return nil, fmt.Errorf("%w: tensors %q and %q overlap", ErrFormat, p.Name, q.Name)
		}
	}
	return gf, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Version returns the file's GGUF version.
func (f *File) Version() uint32 { return f.version }

// Alignment returns the data alignment in bytes.
func (f *File) Alignment() int64 { return f.alignment }

// DataOffset returns the file offset of the data section.
func (f *File) DataOffset() int64 { return f.dataOff }

// Tensors lists the tensors in header order.
func (f *File) Tensors() []TensorInfo { return f.tensors }

// Tensor returns the description of name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// Bytes returns a tensor's raw bytes. When the file is memory-mapped the
// slice aliases the mapping and must not be modified or used after Close.
func (f *File) Bytes(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	if t.Size == 0 {
		return []byte{}, nil
	}
	if f.file != nil {
		b, err := f.file.Slice(t.Offset, t.Size)
		if err != nil {
			return nil, fmt.Errorf("%s: read %q: %w", f.path, name, err)
		}
		return b, nil
	}
	buf := make([]byte, t.Size)
	if _, err := f.r.ReadAt(buf, t.Offset); err != nil {
		return nil, fmt.Errorf("%s: read %q: %w", f.path, name, err)
	}
	return buf, nil
}

// Keys lists the metadata keys in file order.
func (f *File) Keys() []string { return f.keys }

// Metadata returns all metadata. Values are uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64 or a slice
// of one of them. The map must not be modified.
func (f *File) Metadata() map[string]any { return f.meta }

func get[T any](f *File, key string) (T, bool) {
	v, ok := f.meta[key].(T)
	return v, ok
}

// String returns a string value; ok is false when key is absent or holds
// another type. The other getters work the same way.
func (f *File) String(key string) (string, bool) { return get[string](f, key) }

// Uint8 returns a uint8 value.
func (f *File) Uint8(key string) (uint8, bool) { return get[uint8](f, key) }

// Int8 returns an int8 value.
func (f *File) Int8(key string) (int8, bool) { return get[int8](f, key) }

// Uint16 returns a uint16 value.
func (f *File) Uint16(key string) (uint16, bool) { return get[uint16](f, key) }

// Int16 returns an int16 value.
func (f *File) Int16(key string) (int16, bool) { return get[int16](f, key) }

// Uint32 returns a uint32 value.
func (f *File) Uint32(key string) (uint32, bool) { return get[uint32](f, key) }

// Int32 returns an int32 value.
func (f *File) Int32(key string) (int32, bool) { return get[int32](f, key) }

// Uint64 returns a uint64 value.
func (f *File) Uint64(key string) (uint64, bool) { return get[uint64](f, key) }

// Int64 returns an int64 value.
func (f *File) Int64(key string) (int64, bool) { return get[int64](f, key) }

// Float32 returns a float32 value.
func (f *File) Float32(key string) (float32, bool) { return get[float32](f, key) }

// Float64 returns a float64 value.
func (f *File) Float64(key string) (float64, bool) { return get[float64](f, key) }

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool) { return get[bool](f, key) }

// Strings returns a string array.
func (f *File) Strings(key string) ([]string, bool) { return get[[]string](f, key) }

// Close releases the mapping and the file.
func (f *File) Close() error {
	if f.file == nil {
		return nil
	}
	err := f.file.Close()
	f.file = nil
	return err
}
