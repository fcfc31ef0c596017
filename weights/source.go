package weights

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// rawTensor describes a tensor as its file names it.
type rawTensor struct {
	Name  string
	DType safetensors.DType
	Shape []int64
}

// tensorFile is an open container of named tensors: safetensors or a
// PyTorch zip checkpoint.
type tensorFile interface {
	Path() string
	list() []rawTensor
	bytes(name string) ([]byte, error)
	Close() error
}

type stFile struct{ f *safetensors.File }

func (s stFile) Path() string { return s.f.Path() }
func (s stFile) Close() error { return s.f.Close() }
func (s stFile) bytes(name string) ([]byte, error) {
	return s.f.Bytes(name)
}
func (s stFile) list() []rawTensor {
	ts := s.f.Tensors()
	out := make([]rawTensor, len(ts))
	for i, t := range ts {
		out[i] = rawTensor{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	return out
}

// fileFormat is what a file's first bytes say it is.
type fileFormat int

const (
	fmtUnknown fileFormat = iota
	fmtSafetensors
	fmtTorchZip
	fmtPickle // legacy (pre-1.6) torch.save, or a bare pickle
	fmtGGUF
)

// sniff classifies a file by its magic bytes.
func sniff(path string) (fileFormat, error) {
	f, err := os.Open(path)
	if err != nil {
		return fmtUnknown, err
	}
	defer f.Close()
	var b [9]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmtUnknown, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case n == 0:
		return fmtUnknown, fmt.Errorf("%s: file is empty", path)
	case n >= 4 && bytes.Equal(b[:4], []byte("PK\x03\x04")):
		return fmtTorchZip, nil
	case n >= 4 && bytes.Equal(b[:4], []byte("GGUF")):
		return fmtGGUF, nil
	case b[0] == 0x80 && n >= 2 && b[1] >= 2 && b[1] <= 5:
		return fmtPickle, nil
	case n == 9 && b[8] == '{':
		return fmtSafetensors, nil
	}
	return fmtUnknown, fmt.Errorf("%s: unrecognised file format (not safetensors, a PyTorch checkpoint or GGUF; %d-byte file starts with % x)", path, fileSize(path), b[:n])
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return st.Size()
}

// openTensorFile opens a safetensors file or a PyTorch checkpoint.
func openTensorFile(path string) (tensorFile, error) {
	format, err := sniff(path)
	if err != nil {
		return nil, err
	}
	switch format {
	case fmtSafetensors:
		f, err := safetensors.Open(path)
		if err != nil {
			return nil, err
		}
		return stFile{f}, nil
	case fmtTorchZip:
		return openTorch(path)
	case fmtPickle:
		return nil, fmt.Errorf("%s: legacy (non-zip) PyTorch pickle checkpoints are not supported; re-save it with a current torch.save or convert it to safetensors", path)
	case fmtGGUF:
		return nil, fmt.Errorf("%s: is a GGUF file; open it with Open, not as a tensor container", path)
	}
	return nil, fmt.Errorf("%s: unrecognised file format", path)
}

// addFileTensor adds the canonical tensors produced from one raw tensor.
func addMapped(set *Set, f tensorFile, rt rawTensor, ts []target) error {
	src := rt.Name
	base := func() ([]byte, error) { return f.bytes(src) }
	for _, tg := range ts {
		t := &Tensor{Name: tg.name, DType: rt.DType, Shape: append([]int64(nil), rt.Shape...), File: f.Path(), Source: src, load: base}
		switch tg.op {
		case opSqueeze:
			t.Shape = t.Shape[:2]
		case opTranspose:
			if len(rt.Shape) != 2 {
				return fmt.Errorf("%s: tensor %q: expected a matrix to transpose, shape %v", f.Path(), src, rt.Shape)
			}
			t.Shape = []int64{rt.Shape[1], rt.Shape[0]}
			t.load = transposed2D(base, rt.Shape[0], rt.Shape[1], rt.DType.Size())
		}
		if tg.part >= 0 {
			if len(t.Shape) == 0 || t.Shape[0]%3 != 0 {
				return fmt.Errorf("%s: tensor %q: cannot split shape %v into q, k, v", f.Path(), src, rt.Shape)
			}
			t.Shape[0] /= 3
			t.load = chunk0(t.load, tg.part, 3)
		}
		if err := set.Add(t); err != nil {
			return err
		}
	}
	return nil
}
