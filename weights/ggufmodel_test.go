package weights

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights/gguf"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// createAdapterGGUF starts a photomaker-v1 adapter GGUF in a temporary
// folder.
func createAdapterGGUF(t *testing.T) (string, *gguf.Writer) {
	path := filepath.Join(t.TempDir(), "pm.gguf")
	w, err := gguf.Create(path)
	require.NoError(t, err)
	require.NoError(t, w.SetMetadata(KeyArchitecture, GGUFArchitecture))
	require.NoError(t, w.SetMetadata(KeyFormatVersion, GGUFFormatVersion))
	require.NoError(t, w.SetMetadata(KeyKinds, []string{"photomaker-v1"}))
	return path, w
}

// A tensor with a zero dimension is a damaged header, not a model.
func TestOpenGGUFEmptyTensor(t *testing.T) {
	path, w := createAdapterGGUF(t)
	n := ShortName("pm.visual_projection.weight")
	require.NoError(t, w.AddTensor(n, gguf.TypeF32, []int64{0, 3}))
	require.NoError(t, w.WriteTensorData(n, nil))
	require.NoError(t, w.Close())
	_, err := Open(path)
	require.ErrorContains(t, err, "with no values")
}

// A hand-written adapter GGUF: names, PyTorch shapes, quantized DTypes with
// raw blocks and dequantizing Float32, unmerged LoRA under lora.*.
func TestOpenGGUFAdapter(t *testing.T) {
	path, w := createAdapterGGUF(t)
	require.NoError(t, w.SetMetadata(KeyConfigPrefix+"vae", `{"scaling_factor":0.13025}`))
	vals := make([]float32, 64*3)
	for i := range vals {
		vals[i] = float32(i%17) / 7
	}
	q8, err := ggml.Quantize(ggml.TypeQ8_0, vals, 64)
	require.NoError(t, err)
	f16 := make([]byte, 2*len(vals))
	half.EncodeF16(f16, vals)
	data := map[string][]byte{}
	add := func(canonical string, typ gguf.Type, b []byte, shape ...int64) {
		n := ShortName(canonical)
		require.NoError(t, w.AddTensor(n, typ, shape))
		data[n] = b
	}
	add("pm.vision_model.embeddings.patch_embedding.weight", gguf.TypeF16, f16, 64, 3)
	add("pm.visual_projection.weight", gguf.TypeQ8_0, q8, 64, 3)
	add("pm.visual_projection_2.weight", gguf.TypeF16, f16, 64, 3)
	add("pm.fuse_module.mlp1.fc1.weight", gguf.TypeF16, f16, 64, 3)
	add("lora.unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", gguf.TypeF16, f16, 64, 3)
	for _, ti := range []string{"pm.V.EM.PE.W", "pm.VP.W", "pm.VP2.W", "pm.F.mlp1.fc1.W", "lora.unet.M.A.0.T.0.A1.PR.QL.down.W"} {
		require.NoError(t, w.WriteTensorData(ti, data[ti]))
	}
	require.NoError(t, w.Close())

	m, err := Open(path)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, PhotoMakerV1, m.Kind)
	require.Nil(t, m.Adapter)
	require.Equal(t, 4, m.Tensors.Len())
	require.Equal(t, []string{"unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"}, m.LoRA.Names())
	var cfg struct {
		ScalingFactor float32 `json:"scaling_factor"`
	}
	require.NoError(t, m.Config("vae", &cfg))
	require.Equal(t, float32(0.13025), cfg.ScalingFactor)

	q, ok := m.Tensors.Get("pm.visual_projection.weight")
	require.True(t, ok)
	require.Equal(t, safetensors.DType("Q8_0"), q.DType)
	require.Equal(t, []int64{3, 64}, q.Shape)
	require.True(t, q.Quantized())
	require.Equal(t, int64(len(q8)), q.NBytes())
	b, err := q.Bytes()
	require.NoError(t, err)
	require.Equal(t, q8, b)
	got, err := q.Float32()
	require.NoError(t, err)
	want, err := ggml.Dequantize(ggml.TypeQ8_0, q8, int64(len(vals)))
	require.NoError(t, err)
	require.Equal(t, want, got)

	h, _ := m.Tensors.Get("pm.fuse_module.mlp1.fc1.weight")
	require.False(t, h.Quantized())
	require.Equal(t, int64(len(f16)), h.NBytes())
	hv, err := h.Float32()
	require.NoError(t, err)
	wantF16 := make([]float32, len(vals))
	half.DecodeF16(wantF16, f16)
	require.Equal(t, wantF16, hv)
}
