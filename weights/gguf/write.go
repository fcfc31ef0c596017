package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gophotomaker/photomaker/internal/atomicfile"
)

// Writer writes a GGUF file in one pass: declare metadata and tensors, then
// stream each tensor's bytes in declaration order. Memory use does not
// depend on the tensor sizes. The file appears at its path only when Close
// succeeds.
type Writer struct {
	path      string
	tmp       *atomicfile.File
	w         *bufio.Writer
	keys      []string
	meta      map[string]any
	tensors   []TensorInfo // Offset relative to the data section
	byName    map[string]int
	alignment int64
	started   bool  // header written
	next      int   // index of the next tensor to write
	err       error // sticky
}

// Create starts a GGUF file at path, writing through a temporary file in
// the same folder.
func Create(path string) (*Writer, error) {
	tmp, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	return &Writer{path: path, tmp: tmp, w: bufio.NewWriterSize(tmp, 1<<20), meta: map[string]any{},
		byName: map[string]int{}, alignment: DefaultAlignment}, nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

// SetMetadata sets a key. value is one of uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64, or a slice
// of one of them. Setting a key again replaces its value in place. All
// metadata must be set before the first WriteTensorData.
func (w *Writer) SetMetadata(key string, value any) error {
	if w.err != nil {
		return w.err
	}
	if w.started {
		return fmt.Errorf("gguf: metadata %q set after tensor data was written", key)
	}
	if len(key) > maxString {
		return fmt.Errorf("gguf: metadata key of %d bytes is too long", len(key))
	}
	if _, _, err := valueType(value); err != nil {
		return fmt.Errorf("gguf: metadata %q: %w", key, err)
	}
	if key == AlignmentKey {
		a, ok := value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: %s must be a uint32 power of two, got %v (%T)", AlignmentKey, value, value)
		}
		if len(w.tensors) > 0 {
			return fmt.Errorf("gguf: %s must be set before tensors are added", AlignmentKey)
		}
		w.alignment = int64(a)
	}
	if _, ok := w.meta[key]; !ok {
		w.keys = append(w.keys, key)
	}
	w.meta[key] = value
	return nil
}

// valueType returns the GGUF type of a Go value, and for slices the element
// type.
func valueType(v any) (t, elem uint32, err error) {
	switch v.(type) {
	case uint8:
		return typeUint8, 0, nil
	case int8:
		return typeInt8, 0, nil
	case uint16:
		return typeUint16, 0, nil
	case int16:
		return typeInt16, 0, nil
	case uint32:
		return typeUint32, 0, nil
	case int32:
		return typeInt32, 0, nil
	case float32:
		return typeFloat32, 0, nil
	case bool:
		return typeBool, 0, nil
	case string:
		return typeString, 0, nil
	case uint64:
		return typeUint64, 0, nil
	case int64:
		return typeInt64, 0, nil
	case float64:
		return typeFloat64, 0, nil
	case []uint8:
		return typeArray, typeUint8, nil
	case []int8:
		return typeArray, typeInt8, nil
	case []uint16:
		return typeArray, typeUint16, nil
	case []int16:
		return typeArray, typeInt16, nil
	case []uint32:
		return typeArray, typeUint32, nil
	case []int32:
		return typeArray, typeInt32, nil
	case []float32:
		return typeArray, typeFloat32, nil
	case []bool:
		return typeArray, typeBool, nil
	case []string:
		return typeArray, typeString, nil
	case []uint64:
		return typeArray, typeUint64, nil
	case []int64:
		return typeArray, typeInt64, nil
	case []float64:
		return typeArray, typeFloat64, nil
	}
	return 0, 0, fmt.Errorf("unsupported value type %T", v)
}

// AddTensor declares a tensor; shape is in ggml order (ne0 first). All
// tensors must be declared before the first WriteTensorData.
func (w *Writer) AddTensor(name string, typ Type, shape []int64) error {
	if w.err != nil {
		return w.err
	}
	if w.started {
		return fmt.Errorf("gguf: tensor %q added after tensor data was written", name)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("gguf: tensor name %q is %d bytes, ggml allows %d", name, len(name), MaxNameLen)
	}
	if _, dup := w.byName[name]; dup {
		return fmt.Errorf("gguf: duplicate tensor name %q", name)
	}
	if len(shape) == 0 {
		return fmt.Errorf("gguf: tensor %q has no dimensions", name)
	}
	n, err := tensorBytes(typ, shape)
	if err != nil {
		return fmt.Errorf("gguf: tensor %q: %w", name, err)
	}
	var off int64
	if k := len(w.tensors); k > 0 {
		last := w.tensors[k-1]
		off = pad(last.Offset+last.Size, w.alignment)
	}
	w.byName[name] = len(w.tensors)
	w.tensors = append(w.tensors, TensorInfo{Name: name, Type: typ, Shape: append([]int64(nil), shape...), Offset: off, Size: n})
	return nil
}

func pad(n, a int64) int64 { return (n + a - 1) / a * a }

func (w *Writer) u32(v uint32) { binary.Write(w.w, binary.LittleEndian, v) }
func (w *Writer) u64(v uint64) { binary.Write(w.w, binary.LittleEndian, v) }
func (w *Writer) str(s string) { w.u64(uint64(len(s))); w.w.WriteString(s) }

func (w *Writer) scalar(v any) {
	switch v := v.(type) {
	case uint8:
		w.w.WriteByte(v)
	case int8:
		w.w.WriteByte(byte(v))
	case bool:
		if v {
			w.w.WriteByte(1)
		} else {
			w.w.WriteByte(0)
		}
	case uint16:
		binary.Write(w.w, binary.LittleEndian, v)
	case int16:
		binary.Write(w.w, binary.LittleEndian, v)
	case uint32:
		w.u32(v)
	case int32:
		w.u32(uint32(v))
	case float32:
		w.u32(math.Float32bits(v))
	case uint64:
		w.u64(v)
	case int64:
		w.u64(uint64(v))
	case float64:
		w.u64(math.Float64bits(v))
	case string:
		w.str(v)
	}
}

func writeArray[T any](w *Writer, elem uint32, vals []T) {
	w.u32(elem)
	w.u64(uint64(len(vals)))
	for _, v := range vals {
		w.scalar(v)
	}
}

func (w *Writer) value(v any) {
	t, elem, _ := valueType(v)
	w.u32(t)
	switch v := v.(type) {
	case []uint8:
		writeArray(w, elem, v)
	case []int8:
		writeArray(w, elem, v)
	case []uint16:
		writeArray(w, elem, v)
	case []int16:
		writeArray(w, elem, v)
	case []uint32:
		writeArray(w, elem, v)
	case []int32:
		writeArray(w, elem, v)
	case []float32:
		writeArray(w, elem, v)
	case []bool:
		writeArray(w, elem, v)
	case []string:
		writeArray(w, elem, v)
	case []uint64:
		writeArray(w, elem, v)
	case []int64:
		writeArray(w, elem, v)
	case []float64:
		writeArray(w, elem, v)
	default:
		w.scalar(v)
	}
}

func (w *Writer) zeros(n int64) {
	for ; n > 0; n-- {
		w.w.WriteByte(0)
	}
}

func (w *Writer) header() error {
	w.started = true
	w.w.WriteString(Magic)
	w.u32(Version)
	w.u64(uint64(len(w.tensors)))
	w.u64(uint64(len(w.keys)))
	for _, k := range w.keys {
		w.str(k)
		w.value(w.meta[k])
	}
	for _, t := range w.tensors {
		w.str(t.Name)
		w.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			w.u64(uint64(d))
		}
		w.u32(uint32(t.Type))
		w.u64(uint64(t.Offset))
	}
	if err := w.w.Flush(); err != nil {
		return w.fail(err)
	}
	n, err := w.tmp.Seek(0, 1)
	if err != nil {
		return w.fail(err)
	}
	w.zeros(pad(n, w.alignment) - n)
	return nil
}

// WriteTensorData writes the bytes of the next declared tensor, which must
// be name, followed by the padding the alignment needs.
func (w *Writer) WriteTensorData(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if !w.started {
		if err := w.header(); err != nil {
			return err
		}
	}
	if w.next >= len(w.tensors) {
		return fmt.Errorf("gguf: tensor %q: all %d declared tensors are already written", name, len(w.tensors))
	}
	t := w.tensors[w.next]
	if t.Name != name {
		return fmt.Errorf("gguf: tensor %q written out of order: %q comes next", name, t.Name)
	}
	if int64(len(data)) != t.Size {
		return fmt.Errorf("gguf: tensor %q: got %d bytes, its %s shape %v needs %d", name, len(data), t.Type, t.Shape, t.Size)
	}
	if _, err := w.w.Write(data); err != nil {
		return w.fail(err)
	}
	w.zeros(pad(t.Size, w.alignment) - t.Size)
	w.next++
	return nil
}

// Close writes what remains, then renames the temporary file into place.
// It fails, leaving nothing behind, if a declared tensor was not written.
func (w *Writer) Close() error {
	if w.tmp == nil {
		return errors.New("gguf: writer already closed")
	}
	if w.err == nil && !w.started {
		w.header()
	}
	if w.err == nil && w.next < len(w.tensors) {
		w.fail(fmt.Errorf("gguf: tensor %q was declared but never written", w.tensors[w.next].Name))
	}
	if w.err == nil {
		if err := w.w.Flush(); err != nil {
			w.fail(err)
		}
	}
	if w.err == nil {
		if err := w.tmp.Sync(); err != nil {
			w.fail(err)
		}
	}
	tmp := w.tmp
	w.tmp = nil
	if w.err != nil {
		tmp.Abort()
		return w.err
	}
	return w.fail(tmp.Commit())
}

// Abort discards the file.
func (w *Writer) Abort() error {
	if w.tmp == nil {
		return nil
	}
	w.tmp.Abort()
	w.tmp = nil
	w.fail(errors.New("gguf: writer aborted"))
	return nil
}
