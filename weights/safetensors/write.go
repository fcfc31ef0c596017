package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/gophotomaker/photomaker/internal/atomicfile"
)

// Entry is one tensor to write. Data is called once, in order, to produce the
// tensor's bytes, so large files can be streamed.
type Entry struct {
	Name  string
	DType DType
	Shape []int64
	Data  func() ([]byte, error)
}

// Write writes entries to path through a temporary file in the same folder,
// renamed into place only when complete.
func Write(path string, entries []Entry, metadata map[string]string) (err error) {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.Name] {
			return fmt.Errorf("safetensors: duplicate tensor name %q", e.Name)
		}
		seen[e.Name] = true
		n := int64(e.DType.Size())
		for _, d := range e.Shape {
			n *= d
		}
		header[e.Name] = map[string]any{"dtype": e.DType, "shape": nonNil(e.Shape), "data_offsets": [2]int64{off, off + n}}
		off += n
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hdr)%8 != 0 { // keep the data section 8-byte aligned
		hdr = append(hdr, ' ')
	}
	tmp, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer tmp.Abort() // no-op once committed
	w := bufio.NewWriterSize(tmp, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	w.Write(lenBuf[:])
	w.Write(hdr)
	for _, e := range entries {
		b, err := e.Data()
		if err != nil {
			return fmt.Errorf("safetensors: tensor %q: %w", e.Name, err)
		}
		n := int64(e.DType.Size())
		for _, d := range e.Shape {
			n *= d
		}
		if int64(len(b)) != n {
			return fmt.Errorf("safetensors: tensor %q: got %d bytes, shape needs %d", e.Name, len(b), n)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return tmp.Commit()
}

func nonNil(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}
