package photomaker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// ReadIDEmbeds reads v2 face embeddings, one raw 512-d ArcFace embedding per
// ID photo, from a .safetensors file (tensor "id_embeds" [N,512]) or a NumPy
// .npy file holding an [N,512] (or [512]) float32/float64 array.
func ReadIDEmbeds(path string) ([][]float32, error) {
	var (
		rows [][]float32
		err  error
	)
	if strings.HasSuffix(strings.ToLower(path), ".npy") {
		rows, err = readNPY(path)
	} else {
		rows, err = readSafetensorsEmbeds(path)
	}
	if err != nil {
		return nil, fmt.Errorf("face embeddings %s: %w", path, err)
	}
	return rows, nil
}

func readSafetensorsEmbeds(path string) ([][]float32, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, ok := f.Tensor("id_embeds")
	if !ok {
		return nil, fmt.Errorf(`no tensor "id_embeds" (want [N,512], one raw ArcFace embedding per ID photo)`)
	}
	switch info.DType {
	case safetensors.F32, safetensors.F64, safetensors.F16, safetensors.BF16:
	default: // integers would pass as numbers but are no embeddings
		return nil, fmt.Errorf(`tensor "id_embeds" is %s: want floating point (F32, F16, BF16 or F64)`, info.DType)
	}
	v, err := f.Float32("id_embeds")
	if err != nil {
		return nil, err
	}
	return splitRows(v, info.Shape)
}

func splitRows(v []float32, shape []int64) ([][]float32, error) {
	switch {
	case len(shape) == 1 && shape[0] > 0:
		return [][]float32{v}, nil
	case len(shape) == 2 && shape[0] > 0 && shape[1] > 0:
		n, w := int(shape[0]), int(shape[1])
		out := make([][]float32, n)
		for i := range out {
			out[i] = v[i*w : (i+1)*w]
		}
		return out, nil
	}
	return nil, fmt.Errorf("shape %v: want [N,512]", shape)
}

var npyShape = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
var npyDescr = regexp.MustCompile(`'descr':\s*'([^']*)'`)

// readNPY reads a little-endian float32/float64 C-order .npy array.
func readNPY(path string) ([][]float32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseNPY(b)
}

// parseNPY is readNPY of the file's bytes.
func parseNPY(b []byte) ([][]float32, error) {
	if len(b) < 10 || !bytes.HasPrefix(b, []byte("\x93NUMPY")) {
		return nil, fmt.Errorf("not a .npy file")
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, io.ErrUnexpectedEOF
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	default:
		return nil, fmt.Errorf(".npy version %d is not supported", b[6])
	}
	if hlen < 0 || off+hlen > len(b) {
		return nil, fmt.Errorf("truncated .npy header")
	}
	hdr := string(b[off : off+hlen])
	data := b[off+hlen:]
	if strings.Contains(hdr, "'fortran_order': True") {
		return nil, fmt.Errorf("arrays in Fortran order are not supported; save with np.save(path, np.ascontiguousarray(x))")
	}
	d := npyDescr.FindStringSubmatch(hdr)
	m := npyShape.FindStringSubmatch(hdr)
	if d == nil || m == nil {
		return nil, fmt.Errorf("cannot read the .npy header %q", hdr)
	}
	var shape []int64
	n := int64(1)
	for _, s := range strings.Split(m[1], ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		k, err := strconv.ParseInt(s, 10, 64)
		if err != nil || k <= 0 || k > 1<<20 {
			return nil, fmt.Errorf("bad .npy shape %q", m[1])
		}
		shape = append(shape, k)
		if n > int64(len(b))/k { // more values than the file could hold (and n·k could overflow)
			return nil, fmt.Errorf("truncated .npy data: %d bytes for shape %v…", len(data), shape)
		}
		n *= k
	}
	var size int64
	switch d[1] {
	case "<f4":
		size = 4
	case "<f8":
		size = 8
	default:
		return nil, fmt.Errorf(".npy dtype %s: want float32 or float64 (little-endian)", d[1])
	}
	if n*size > int64(len(data)) {
		return nil, fmt.Errorf("truncated .npy data: %d bytes for shape %v", len(data), shape)
	}
	v := make([]float32, n)
	for i := range v {
		if size == 4 {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		} else {
			v[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		}
	}
	return splitRows(v, shape)
}
