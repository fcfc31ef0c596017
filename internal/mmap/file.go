package mmap

import (
	"fmt"
	"io"
	"os"
)

// File is a read-only model file, memory-mapped where the platform allows
// (else read with ReadAt). It is an io.ReaderAt over the whole file, and
// Slice hands out tensor bytes without copying when mapped.
type File struct {
	f    *os.File
	data []byte // the whole file when mapped, else nil
	size int64
}

// Open opens and maps path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is a folder, not a file", path)
	}
	return &File{f: f, data: Map(f, st.Size()), size: st.Size()}, nil
}

// Size returns the file's size in bytes.
func (m *File) Size() int64 { return m.size }

// ReadAt reads len(p) bytes at off.
func (m *File) ReadAt(p []byte, off int64) (int, error) {
	if m.data == nil {
		return m.f.ReadAt(p, off)
	}
	if off < 0 || off > m.size {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Slice returns n bytes at off: a view of the mapping (read-only, valid
// until Close) or, unmapped, a fresh copy.
func (m *File) Slice(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > m.size {
		return nil, fmt.Errorf("byte range [%d,%d) is outside the %d-byte file", off, off+n, m.size)
	}
	if m.data != nil {
		return m.data[off : off+n : off+n], nil
	}
	buf := make([]byte, n)
	if n == 0 {
		return buf, nil
	}
	if _, err := m.f.ReadAt(buf, off); err != nil {
		return nil, err
	}
	return buf, nil
}

// Close unmaps and closes the file.
func (m *File) Close() error {
	if m.data != nil {
		Unmap(m.data)
		m.data = nil
	}
	if m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}
