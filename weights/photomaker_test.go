package weights

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

func TestPhotoMakerSafetensors(t *testing.T) {
	tests := []struct {
		file     string
		kind     Kind
		mustHave []string
		mustLack []string
	}{
		{"photomaker/photomaker-v1-tiny.safetensors", PhotoMakerV1,
			[]string{"pm.vision_model.embeddings.class_embedding", "pm.vision_model.pre_layrnorm.weight", "pm.visual_projection_2.weight", "pm.fuse_module.mlp2.layernorm.bias"},
			[]string{"pm.qformer_perceiver.token_norm.weight"}},
		{"photomaker/photomaker-v2-tiny.safetensors", PhotoMakerV2,
			[]string{"pm.qformer_perceiver.token_proj.0.weight", "pm.qformer_perceiver.perceiver_resampler.layers.3.0.to_kv.weight", "pm.visual_projection.weight"},
			nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := golden.Path(tc.file)
			m, err := Open(path)
			require.NoError(t, err)
			defer m.Close()
			assert.Equal(t, tc.kind, m.Kind)
			assert.True(t, m.Kind.IsPhotoMaker())
			assert.Empty(t, m.Warnings)

			raw, err := safetensors.Open(path)
			require.NoError(t, err)
			defer raw.Close()
			var wantPM, wantLoRA []string
			for _, rt := range raw.Tensors() {
				if n, ok := strings.CutPrefix(rt.Name, "id_encoder."); ok {
					wantPM = append(wantPM, "pm."+n)
				} else if n, ok := strings.CutPrefix(rt.Name, "lora_weights."); ok {
					wantLoRA = append(wantLoRA, n)
				} else {
					t.Fatalf("unexpected tensor %s", rt.Name)
				}
			}
			assert.ElementsMatch(t, wantPM, m.Tensors.Names())
			assert.ElementsMatch(t, wantLoRA, m.LoRA.Names())
			for _, n := range tc.mustHave {
				_, ok := m.Tensors.Get(n)
				assert.True(t, ok, n)
			}
			for _, n := range tc.mustLack {
				_, ok := m.Tensors.Get(n)
				assert.False(t, ok, n)
			}
			for _, n := range m.LoRA.Names() {
				assert.True(t, strings.HasPrefix(n, "unet.") && strings.Contains(n, ".processor.to_"), n)
			}
			// Same bytes as the file.
			tt, _ := m.Tensors.Get("pm.visual_projection.weight")
			got, err := tt.Bytes()
			require.NoError(t, err)
			want, err := raw.Bytes("id_encoder.visual_projection.weight")
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

// castF16 returns the fp16 value of f16 (2 bytes) cast to dtype, little-endian.
func castF16(t *testing.T, dtype safetensors.DType, f16 []byte) []byte {
	vals, err := safetensors.DecodeFloat32(safetensors.F16, f16)
	require.NoError(t, err)
	var out []byte
	for _, v := range vals {
		switch dtype {
		case safetensors.F32:
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		case safetensors.BF16:
			out = binary.LittleEndian.AppendUint16(out, half.F32ToBF16(v))
		case safetensors.F16:
			out = append(out, f16...)
			return out
		default:
			t.Fatalf("unexpected dtype %s", dtype)
		}
	}
	return out
}

// assertAdapterEqual checks that a .bin adapter holds the .safetensors
// adapter's tensors: same names and shapes, values equal to the fp16 values
// cast to the .bin's dtype (bf16 rounds to nearest even, fp32 is exact).
func assertAdapterEqual(t *testing.T, binPath, stPath string, kind Kind, wantDTypes map[safetensors.DType]bool) {
	bin, err := Open(binPath)
	require.NoError(t, err)
	defer bin.Close()
	st, err := Open(stPath)
	require.NoError(t, err)
	defer st.Close()
	assert.Equal(t, kind, bin.Kind)
	seen := map[safetensors.DType]bool{}
	for _, pair := range [][2]*Set{{st.Tensors, bin.Tensors}, {st.LoRA, bin.LoRA}} {
		want, got := pair[0], pair[1]
		require.Equal(t, want.Names(), got.Names())
		for _, n := range want.Names() {
			a, _ := want.Get(n)
			b, _ := got.Get(n)
			require.Equal(t, a.Shape, b.Shape, n)
			require.Equal(t, safetensors.F16, a.DType, n)
			seen[b.DType] = true
			ab, err := a.Bytes()
			require.NoError(t, err)
			bb, err := b.Bytes()
			require.NoError(t, err, n)
			require.True(t, bytes.Equal(castF16(t, b.DType, ab), bb), "%s (%s) differs", n, b.DType)
		}
	}
	assert.Equal(t, wantDTypes, seen)
}

func TestPhotoMakerBinMatchesSafetensors(t *testing.T) {
	mixed := map[safetensors.DType]bool{safetensors.BF16: true, safetensors.F32: true}
	t.Run("v1-real-vendored", func(t *testing.T) {
		assertAdapterEqual(t, golden.Path("photomaker/photomaker-v1-real.bin"), golden.Path("photomaker/photomaker-v1-tiny.safetensors"), PhotoMakerV1, mixed)
	})
	t.Run("v2-real-shared", func(t *testing.T) {
		assertAdapterEqual(t, golden.SharedPath(t, "realformats/photomaker-v2.bin"), golden.Path("photomaker/photomaker-v2-tiny.safetensors"), PhotoMakerV2, mixed)
	})
	fp16 := map[safetensors.DType]bool{safetensors.F16: true}
	t.Run("v1-fp16-shared", func(t *testing.T) {
		assertAdapterEqual(t, golden.SharedPath(t, "photomaker/photomaker-v1-tiny.bin"), golden.Path("photomaker/photomaker-v1-tiny.safetensors"), PhotoMakerV1, fp16)
	})
	t.Run("v2-fp16-shared", func(t *testing.T) {
		assertAdapterEqual(t, golden.SharedPath(t, "photomaker/photomaker-v2-tiny.bin"), golden.Path("photomaker/photomaker-v2-tiny.safetensors"), PhotoMakerV2, fp16)
	})
}
