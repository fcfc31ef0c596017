package photomaker

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

func writeNPY(t *testing.T, descr string, shape string, data []byte) string {
	hdr := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape)
	for (10+len(hdr)+1)%64 != 0 {
		hdr += " "
	}
	hdr += "\n"
	b := append([]byte("\x93NUMPY\x01\x00"), byte(len(hdr)), byte(len(hdr)>>8))
	b = append(append(b, hdr...), data...)
	p := filepath.Join(t.TempDir(), "e.npy")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func TestReadIDEmbeds(t *testing.T) {
	vals := make([]float32, 2*512)
	for i := range vals {
		vals[i] = float32(i) / 7
	}
	// .npy float32 and float64
	rows, err := ReadIDEmbeds(writeNPY(t, "<f4", "2, 512", ggml.F32Bytes(vals)))
	require.NoError(t, err)
	require.Len(t, rows, 2)
	require.Equal(t, vals[512:], rows[1])
	f64 := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(f64[8*i:], math.Float64bits(float64(v)))
	}
	rows, err = ReadIDEmbeds(writeNPY(t, "<f8", "2, 512", f64))
	require.NoError(t, err)
	require.Equal(t, vals[:512], rows[0])
	// safetensors
	p := filepath.Join(t.TempDir(), "e.safetensors")
	require.NoError(t, safetensors.Write(p, []safetensors.Entry{{Name: "id_embeds", DType: safetensors.F32, Shape: []int64{2, 512},
		Data: func() ([]byte, error) { return ggml.F32Bytes(vals), nil }}}, nil))
	rows, err = ReadIDEmbeds(p)
	require.NoError(t, err)
	require.Equal(t, vals[512:], rows[1])
	// Bad files say what is wrong.
	_, err = ReadIDEmbeds(writeNPY(t, "<i8", "2, 512", make([]byte, 8*1024)))
	require.ErrorContains(t, err, "float32 or float64")
	_, err = ReadIDEmbeds(writeNPY(t, "<f4", "2, 512", make([]byte, 100)))
	require.ErrorContains(t, err, "truncated")
	// A shape whose size overflows int64 (2^60 values of 8 bytes) is
	// refused, not allocated.
	_, err = ReadIDEmbeds(writeNPY(t, "<f8", "1048576, 1048576, 1048576", make([]byte, 64)))
	require.ErrorContains(t, err, "truncated")
	q := filepath.Join(t.TempDir(), "other.safetensors")
	require.NoError(t, safetensors.Write(q, []safetensors.Entry{{Name: "x", DType: safetensors.F32, Shape: []int64{1},
		Data: func() ([]byte, error) { return make([]byte, 4), nil }}}, nil))
	_, err = ReadIDEmbeds(q)
	require.ErrorContains(t, err, `"id_embeds"`)
	ints := filepath.Join(t.TempDir(), "ints.safetensors")
	require.NoError(t, safetensors.Write(ints, []safetensors.Entry{{Name: "id_embeds", DType: safetensors.I64, Shape: []int64{1, 512},
		Data: func() ([]byte, error) { return make([]byte, 8*512), nil }}}, nil))
	_, err = ReadIDEmbeds(ints)
	require.ErrorContains(t, err, "is I64: want floating point")
}

// A .npy file from anyone gives rows or an error, never a panic or a huge
// allocation.
func FuzzNPY(f *testing.F) {
	hdr := func(descr, shape string) []byte {
		h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }\n", descr, shape)
		return append([]byte("\x93NUMPY\x01\x00"), append([]byte{byte(len(h)), byte(len(h) >> 8)}, h...)...)
	}
	f.Add(append(hdr("<f4", "2, 512"), make([]byte, 4096)...))
	f.Add(append(hdr("<f8", "1, 512"), make([]byte, 4096)...))
	f.Add(append(hdr("<f8", "1048576, 1048576, 1048576"), make([]byte, 64)...))
	f.Add(hdr("<f4", "0, 512"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := parseNPY(b)
		if err != nil {
			return
		}
		total := 0
		for _, r := range rows {
			total += len(r)
		}
		if 4*total > len(b) {
			t.Fatalf("%d values from %d bytes", total, len(b))
		}
	})
}
