// Package torch reads PyTorch checkpoints written by torch.save (.bin, .pt,
// .ckpt): a zip archive holding <root>/data.pkl, a pickle that describes the
// tensors, and <root>/data/<key>, the raw bytes of each storage.
//
// The pickle is run by a small machine of our own that knows only the
// opcodes torch.save emits and an allow-list of globals (OrderedDict, the
// tensor rebuild functions and the typed storage classes). Anything else,
// such as os.system or builtins.eval, is refused with ErrUnsafe before any
// of it could take effect: nothing in a file ever runs. Open validates the
// whole file up front (every storage present and large enough for its
// tensors); tensor bytes are read lazily.
package torch

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/gophotomaker/photomaker/internal/mmap"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

var (
	// ErrFormat is wrapped by every error about a malformed checkpoint.
	ErrFormat = errors.New("not a valid PyTorch checkpoint")
	// ErrUnsafe is wrapped by errors about pickles that reference globals
	// or opcodes beyond plain tensor data.
	ErrUnsafe = errors.New("unsafe pickle")
)

// maxDeflateRatio bounds how much a deflated zip entry may claim to expand
// (deflate cannot exceed about 1032:1), so a zip bomb is refused up front.
const maxDeflateRatio = 1032

// maxExpandedBytes bounds tensors that are larger than their storage (views
// with zero strides, as torch.expand makes).
const maxExpandedBytes = 64 << 20

// Tensor describes one tensor of a checkpoint.
type Tensor struct {
	Name  string
	DType safetensors.DType
	Shape []int64
}

// Elements returns the product of the shape.
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// entry is a zip member holding storage bytes.
type entry struct {
	zf      *zip.File
	dataOff int64 // offset of the raw bytes in the archive, when stored
	stored  bool
	// checked runs the entry's CRC-32 check once, at its first read:
	// a damaged file would otherwise make a silently wrong image.
	checked sync.Once
	damaged error
}

type view struct {
	st         *storageRef
	ent        *entry
	offset     int64 // in elements
	stride     []int64
	contiguous bool
}

// File is an open PyTorch checkpoint.
type File struct {
	path    string
	file    *mmap.File // nil when parsed from memory (fuzzing)
	r       io.ReaderAt
	tensors []Tensor
	views   []view
	byName  map[string]int
}

// Open reads and validates the checkpoint at path.
func Open(path string) (*File, error) {
	mf, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	tf, err := parse(mf, mf.Size())
	if err != nil {
		mf.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tf.path, tf.file = path, mf
	return tf, nil
}

// parse reads the archive from r, whose size is size.
func parse(r io.ReaderAt, size int64) (*File, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("%w: not a zip archive (truncated file, or a legacy non-zip torch.save?): %v", ErrFormat, err)
	}
	byName := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	for _, zf := range zr.File {
		if _, dup := byName[zf.Name]; dup {
			return nil, fmt.Errorf("%w: zip entry %q appears twice", ErrFormat, printable(zf.Name))
		}
		byName[zf.Name] = zf
		if zf.Name == "data.pkl" || strings.HasSuffix(zf.Name, "/data.pkl") && strings.Count(zf.Name, "/") == 1 {
			if pkl != nil {
				return nil, fmt.Errorf("%w: two pickles, %q and %q", ErrFormat, printable(pkl.Name), printable(zf.Name))
			}
			pkl = zf
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("%w: no <root>/data.pkl in the zip archive", ErrFormat)
	}
	root := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := byName[root+"byteorder"]; ok {
		b, err := readEntry(r, size, bo, 16)
		if err != nil {
			return nil, err
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return nil, fmt.Errorf("%w: byte order %q is not supported (only little-endian)", ErrFormat, printable(s))
		}
	}
	data, err := readEntry(r, size, pkl, MaxPickleSize)
	if err != nil {
		return nil, err
	}
	obj, stores, err := runPickle(data)
	if err != nil {
		return nil, err
	}

	tf := &File{r: r, byName: map[string]int{}}
	entries := map[string]*entry{}
	for key, st := range stores {
		zf := byName[root+"data/"+key]
		if zf == nil {
			return nil, fmt.Errorf("%w: storage %q is missing: no zip entry %sdata/%s", ErrFormat, printable(key), printable(root), printable(key))
		}
		need := st.numel * int64(st.dtype.Size())
		if zf.UncompressedSize64 < uint64(need) {
			return nil, fmt.Errorf("%w: storage %q holds %d bytes but %d %s elements need %d", ErrFormat, printable(key), zf.UncompressedSize64, st.numel, st.dtype, need)
		}
		e, err := checkEntry(r, size, zf)
		if err != nil {
			return nil, err
		}
		entries[key] = e
	}

	type named struct {
		name string
		t    *tensorRef
	}
	var found []named
	// Dicts may be shared or even contain themselves through the memo, so
	// the walk refuses cycles and bounds the number of entries it visits.
	onPath := map[*pdict]bool{}
	visits := 0
	var walk func(prefix string, d *pdict, depth int) error
	walk = func(prefix string, d *pdict, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("%w: dicts nested deeper than %d", ErrFormat, maxDepth)
		}
		if onPath[d] {
			return fmt.Errorf("%w: dict %q contains itself", ErrFormat, printable(strings.TrimSuffix(prefix, ".")))
		}
		onPath[d] = true
		defer delete(onPath, d)
		visits += len(d.keys)
		if visits > maxEntries {
			return fmt.Errorf("%w: more than %d dict entries", ErrFormat, maxEntries)
		}
		for i, k := range d.keys {
			var ks string
			switch k := k.(type) {
			case string:
				ks = k
			case int64:
				ks = strconv.FormatInt(k, 10)
			default:
				continue // not a name a tensor can have
			}
			name := prefix + ks
			switch v := d.vals[i].(type) {
			case *tensorRef:
				found = append(found, named{name, v})
			case *pdict:
				if err := walk(name+".", v, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	root0, ok := obj.(*pdict)
	if !ok {
		return nil, fmt.Errorf("%w: data.pkl holds a %s, not a dict of tensors", ErrFormat, typeName(obj))
	}
	if err := walk("", root0, 0); err != nil {
		return nil, err
	}
	sort.Slice(found, func(i, j int) bool { return found[i].name < found[j].name })
	for i, n := range found {
		if i > 0 && found[i-1].name == n.name {
			return nil, fmt.Errorf("%w: two tensors are named %q", ErrFormat, printable(n.name))
		}
		v, err := checkView(n.name, n.t)
		if err != nil {
			return nil, err
		}
		v.ent = entries[n.t.st.key]
		tf.byName[n.name] = len(tf.tensors)
		tf.tensors = append(tf.tensors, Tensor{Name: n.name, DType: n.t.st.dtype, Shape: n.t.size})
		tf.views = append(tf.views, v)
	}
	return tf, nil
}

// checkEntry validates a storage entry's placement without reading it.
func checkEntry(r io.ReaderAt, size int64, zf *zip.File) (*entry, error) {
	switch zf.Method {
	case zip.Store:
		off, err := zf.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, printable(zf.Name), err)
		}
		if zf.CompressedSize64 != zf.UncompressedSize64 || off < 0 || zf.CompressedSize64 > uint64(size) || off > size-int64(zf.CompressedSize64) {
			return nil, fmt.Errorf("%w: zip entry %q: %d bytes at offset %d do not fit the %d-byte file (truncated?)", ErrFormat, printable(zf.Name), zf.CompressedSize64, off, size)
		}
		return &entry{zf: zf, dataOff: off, stored: true}, nil
	case zip.Deflate:
		if zf.CompressedSize64 > uint64(size) || zf.UncompressedSize64/maxDeflateRatio > zf.CompressedSize64 {
			return nil, fmt.Errorf("%w: zip entry %q claims %d bytes from %d compressed bytes (zip bomb?)", ErrFormat, printable(zf.Name), zf.UncompressedSize64, zf.CompressedSize64)
		}
		return &entry{zf: zf}, nil
	}
	return nil, fmt.Errorf("%w: zip entry %q uses compression method %d", ErrFormat, printable(zf.Name), zf.Method)
}

// readEntry reads a whole (small) entry, refusing more than limit bytes.
func readEntry(r io.ReaderAt, size int64, zf *zip.File, limit int64) ([]byte, error) {
	if _, err := checkEntry(r, size, zf); err != nil {
		return nil, err
	}
	if zf.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%w: zip entry %q is %d bytes, more than the %d-byte limit", ErrFormat, printable(zf.Name), zf.UncompressedSize64, limit)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, printable(zf.Name), err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(rc, int64(zf.UncompressedSize64)+1))
	if errors.Is(err, zip.ErrFormat) || uint64(n) > zf.UncompressedSize64 {
		// archive/zip fails a read beyond the declared size with ErrFormat.
		return nil, fmt.Errorf("%w: zip entry %q does not hold the %d bytes its header says (zip bomb?)", ErrFormat, printable(zf.Name), zf.UncompressedSize64)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, printable(zf.Name), err)
	}
	if uint64(n) != zf.UncompressedSize64 {
		return nil, fmt.Errorf("%w: zip entry %q holds %d bytes, its header says %d", ErrFormat, printable(zf.Name), n, zf.UncompressedSize64)
	}
	return buf.Bytes(), nil
}

// checkView validates a tensor's view against its storage.
func checkView(name string, t *tensorRef) (view, error) {
	bad := func(why string) (view, error) {
		return view{}, fmt.Errorf("%w: tensor %q (offset %d, size %v, stride %v): %s", ErrFormat, printable(name), t.offset, t.size, t.stride, why)
	}
	esize := int64(t.st.dtype.Size())
	elems := int64(1)
	for _, d := range t.size {
		if d != 0 && elems > math.MaxInt64/esize/d {
			return bad("too many elements")
		}
		elems *= d
	}
	v := view{st: t.st, offset: t.offset, stride: t.stride, contiguous: true}
	if elems == 0 {
		if t.offset > t.st.numel {
			return bad(fmt.Sprintf("offset beyond the %d-element storage", t.st.numel))
		}
		return v, nil
	}
	last := t.offset
	for i, d := range t.size {
		s := t.stride[i]
		if s != 0 && d-1 > (math.MaxInt64-last)/s {
			return bad("extent overflows")
		}
		last += (d - 1) * s
	}
	if last >= t.st.numel {
		return bad(fmt.Sprintf("reaches element %d of a %d-element storage", last, t.st.numel))
	}
	if elems > t.st.numel && elems*esize > maxExpandedBytes {
		return bad("expands its storage beyond the size limit")
	}
	want := int64(1)
	for i := len(t.size) - 1; i >= 0; i-- {
		if t.size[i] != 1 && t.stride[i] != want {
			v.contiguous = false
		}
		want *= t.size[i]
	}
	return v, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Tensors lists the tensors sorted by name.
func (f *File) Tensors() []Tensor { return f.tensors }

// Tensor returns the description of name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.tensors[i], true
}

// checkCRC compares e's bytes with the CRC-32 its zip header records
// (once per entry; 0 is taken as not recorded).
func (f *File) checkCRC(e *entry) error {
	e.checked.Do(func() {
		if e.zf.CRC32 == 0 {
			return
		}
		var err error
		if e.stored {
			var b []byte
			if f.file != nil {
				b, err = f.file.Slice(e.dataOff, int64(e.zf.UncompressedSize64))
			} else {
				b = make([]byte, e.zf.UncompressedSize64)
				_, err = f.r.ReadAt(b, e.dataOff)
			}
			if err == nil && crc32.ChecksumIEEE(b) != e.zf.CRC32 {
				err = zip.ErrChecksum
			}
		} else {
			var rc io.ReadCloser
			if rc, err = e.zf.Open(); err == nil { // archive/zip checks the CRC at the end
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
		if err != nil {
			e.damaged = fmt.Errorf("%w: zip entry %q: %v: the file is damaged; download it again", ErrFormat, printable(e.zf.Name), err)
		}
	})
	return e.damaged
}

// storageBytes returns bytes [lo, hi) of a storage.
func (f *File) storageBytes(e *entry, lo, hi int64) ([]byte, error) {
	if hi == lo {
		return []byte{}, nil
	}
	if err := f.checkCRC(e); err != nil {
		return nil, err
	}
	if e.stored {
		if f.file != nil {
			b, err := f.file.Slice(e.dataOff+lo, hi-lo)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", e.zf.Name, err)
			}
			return b, nil
		}
		buf := make([]byte, hi-lo)
		if _, err := f.r.ReadAt(buf, e.dataOff+lo); err != nil {
			return nil, fmt.Errorf("read %s: %w", e.zf.Name, err)
		}
		return buf, nil
	}
	rc, err := e.zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, e.zf.Name, err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, lo); err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, e.zf.Name, err)
	}
	buf := make([]byte, hi-lo)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("%w: zip entry %q: %v", ErrFormat, e.zf.Name, err)
	}
	return buf, nil
}

// Bytes returns a tensor's elements as contiguous little-endian bytes in
// row-major order, gathering non-contiguous views. When the file is
// memory-mapped and the tensor is stored contiguously the slice aliases the
// mapping and must not be modified or used after Close.
func (f *File) Bytes(name string) ([]byte, error) {
	i, ok := f.byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	t, v := f.tensors[i], f.views[i]
	esize := int64(t.DType.Size())
	elems := t.Elements()
	if elems == 0 {
		return []byte{}, nil
	}
	last := v.offset
	for j, d := range t.Shape {
		last += (d - 1) * v.stride[j]
	}
	src, err := f.storageBytes(v.ent, v.offset*esize, (last+1)*esize)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.path, name, err)
	}
	if v.contiguous {
		return src, nil
	}
	dst := make([]byte, elems*esize)
	gather(dst, src, esize, t.Shape, v.stride)
	return dst, nil
}

// gather copies a strided view starting at src[0] into dst in row-major order.
func gather(dst, src []byte, esize int64, size, stride []int64) {
	n := len(size)
	if n == 0 {
		copy(dst, src[:esize])
		return
	}
	idx := make([]int64, n-1)
	inner, is := size[n-1], stride[n-1]
	rowBytes := inner * esize
	var out int64
	for {
		var base int64
		for j, x := range idx {
			base += x * stride[j]
		}
		if is == 1 {
			copy(dst[out:out+rowBytes], src[base*esize:])
		} else {
			for k := int64(0); k < inner; k++ {
				p := (base + k*is) * esize
				copy(dst[out+k*esize:out+(k+1)*esize], src[p:p+esize])
			}
		}
		out += rowBytes
		j := n - 2
		for ; j >= 0; j-- {
			idx[j]++
			if idx[j] < size[j] {
				break
			}
			idx[j] = 0
		}
		if j < 0 {
			return
		}
	}
}

// Float32 returns a tensor converted to float32.
func (f *File) Float32(name string) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.path, name)
	}
	raw, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	return safetensors.DecodeFloat32(t.DType, raw)
}

// Close releases the mapping and the file.
func (f *File) Close() error {
	if f.file == nil {
		return nil
	}
	err := f.file.Close()
	f.file = nil
	return err
}
