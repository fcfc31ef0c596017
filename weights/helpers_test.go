package weights

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// keymapEntry is one entry of testdata/tiny-sdxl.keymap.json: the original
// single-file tensor dst is built from the diffusers tensors src by op.
type keymapEntry struct {
	Dst      string   `json:"dst"`
	Src      []string `json:"src"`
	Op       string   `json:"op"`
	DstShape []int64  `json:"dst_shape"`
	SHA256   string   `json:"sha256"`
}

func loadKeymap(t testing.TB) []keymapEntry {
	t.Helper()
	b, err := os.ReadFile(golden.Path("tiny-sdxl.keymap.json"))
	require.NoError(t, err)
	var km struct {
		Entries []keymapEntry `json:"entries"`
	}
	require.NoError(t, json.Unmarshal(b, &km))
	require.NotEmpty(t, km.Entries)
	return km.Entries
}

// keymapCanonical turns a keymap source ("text_encoder/embeddings...") into
// our canonical name. The folder → prefix table and the text_model.
// normalisation are the only naming facts the test assumes.
func keymapCanonical(t testing.TB, src string) string {
	comp, name, ok := strings.Cut(src, "/")
	require.True(t, ok, src)
	switch comp {
	case "unet":
		return "unet." + name
	case "vae":
		return "vae." + name
	case "text_encoder", "text_encoder_2":
		prefix := map[string]string{"text_encoder": "te1.", "text_encoder_2": "te2."}[comp]
		if !strings.HasPrefix(name, "text_model.") && name != "text_projection.weight" {
			name = "text_model." + name
		}
		return prefix + name
	}
	t.Fatalf("unknown keymap component in %q", src)
	return ""
}

// expectedDiffusers inverts the keymap ops (independently of the package's
// code): from a single-file tensor's bytes and shape, the bytes and shape of
// each of its diffusers sources.
func expectedDiffusers(t testing.TB, e keymapEntry, raw []byte, elem int) (bytes [][]byte, shapes [][]int64) {
	t.Helper()
	s := e.DstShape
	switch e.Op {
	case "rename":
		return [][]byte{raw}, [][]int64{s}
	case "reshape":
		require.Len(t, s, 4)
		return [][]byte{raw}, [][]int64{s[:2]}
	case "transpose":
		require.Len(t, s, 2)
		r, c := int(s[0]), int(s[1])
		out := make([]byte, len(raw))
		for i := 0; i < r; i++ {
			for j := 0; j < c; j++ {
				copy(out[(j*r+i)*elem:(j*r+i+1)*elem], raw[(i*c+j)*elem:])
			}
		}
		return [][]byte{out}, [][]int64{{s[1], s[0]}}
	case "concat0":
		n := len(e.Src)
		part := len(raw) / n
		for k := 0; k < n; k++ {
			bytes = append(bytes, raw[k*part:(k+1)*part])
			sh := append([]int64{s[0] / int64(n)}, s[1:]...)
			shapes = append(shapes, sh)
		}
		return bytes, shapes
	}
	t.Fatalf("unknown op %q", e.Op)
	return nil, nil
}

// diffusersFromKeymap returns every canonical diffusers tensor of the tiny
// model (bytes and shape), built from the single file through the keymap.
type refTensor struct {
	dtype safetensors.DType
	shape []int64
	data  []byte
	src   string // keymap source, component/name
}

func diffusersFromKeymap(t testing.TB) map[string]refTensor {
	t.Helper()
	f, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	out := map[string]refTensor{}
	for _, e := range loadKeymap(t) {
		info, ok := f.Tensor(e.Dst)
		require.True(t, ok, e.Dst)
		require.Equal(t, e.DstShape, info.Shape, e.Dst)
		raw, err := f.Bytes(e.Dst)
		require.NoError(t, err)
		bs, shapes := expectedDiffusers(t, e, raw, info.DType.Size())
		for k, src := range e.Src {
			name := keymapCanonical(t, src)
			_, dup := out[name]
			require.False(t, dup, name)
			out[name] = refTensor{dtype: info.DType, shape: shapes[k], data: bs[k], src: src}
		}
	}
	return out
}
