package safetensors

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteOpenRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	a := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40} // 1.0, 2.0 as F32
	b := []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00}
	require.NoError(t, Write(p, []Entry{
		{Name: "a", DType: F32, Shape: []int64{2}, Data: func() ([]byte, error) { return a, nil }},
		{Name: "b", DType: F16, Shape: []int64{1, 3}, Data: func() ([]byte, error) { return b, nil }},
	}, map[string]string{"k": "v"}))
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, "v", f.Metadata["k"])
	va, err := f.Float32("a")
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2}, va)
	vb, err := f.Float32("b")
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2, 0}, vb)
	info, _ := f.Tensor("b")
	require.Equal(t, []int64{1, 3}, info.Shape)
}

func rawFile(t *testing.T, header string, data []byte) string {
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(header)))
	buf.WriteString(header)
	buf.Write(data)
	p := filepath.Join(t.TempDir(), "bad.safetensors")
	require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

func TestBadFiles(t *testing.T) {
	cases := map[string]struct {
		header string
		data   []byte
		want   string
	}{
		"out of range":  {`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 8), "outside"},
		"size mismatch": {`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8), "needs 12"},
		"overlap":       {`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12), "overlap"},
		"dtype":         {`{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8), "unsupported dtype"},
		"not json":      {`{"a":`, nil, "not JSON"},
		"negative dim":  {`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,0]}}`, nil, "impossible shape"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Open(rawFile(t, c.header, c.data))
			require.ErrorIs(t, err, ErrFormat)
			require.ErrorContains(t, err, c.want)
		})
	}
	// A header length larger than the file.
	p := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(p, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'}, 0o644))
	_, err := Open(p)
	require.ErrorIs(t, err, ErrFormat)
}

func FuzzHeader(f *testing.F) {
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`), 8)
	f.Add([]byte(`{"__metadata__":{"x":"y"}}`), 0)
	f.Fuzz(func(t *testing.T, header []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		var buf bytes.Buffer
		binary.Write(&buf, binary.LittleEndian, uint64(len(header)))
		buf.Write(header)
		buf.Write(make([]byte, n))
		sf, err := parse(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			return
		}
		for _, tt := range sf.Tensors() {
			if tt.End > int64(n) || tt.Begin < 0 {
				t.Fatalf("accepted out-of-range tensor %+v", tt)
			}
		}
	})
}
