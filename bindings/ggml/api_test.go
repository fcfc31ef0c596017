package ggml

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Our header re-declares struct ggml_tensor; ggml_tensor_overhead() is the
// library's sizeof(struct ggml_object) + sizeof(struct ggml_tensor), with
// the 32-byte object header.
func testHeaderLayout(t *testing.T) {
	const objectHeader = 32
	overhead, declared := headerSizes()
	require.Equal(t, overhead, objectHeader+declared,
		"struct ggml_tensor in ggml_api.h does not match the linked ggml")

	ctx := NewContext(4, 0)
	defer ctx.Free()
	x := ctx.NewTensor(TypeF16, 6, 5, 4, 3)
	x.SetName("probe")
	// Fields read through our struct agree with the library's accessors.
	require.Equal(t, [4]int64{6, 5, 4, 3}, x.Shape())
	require.Equal(t, int64(6*5*4*3), x.Elements())
	require.Equal(t, int64(2*6*5*4*3), x.Bytes())
	require.Equal(t, int64(2), x.Nb(0))
	require.Equal(t, int64(12), x.Nb(1))
	require.Equal(t, int64(12*5*4), x.Nb(3))
	require.Equal(t, "probe", x.Name())
	require.Equal(t, TypeF16, x.Type())
	require.Equal(t, "NONE", x.Op())
}

func testTypeEnum(t *testing.T) {
	want := map[Type]struct {
		name  string
		block int64
		bytes int64
	}{
		TypeF32: {"f32", 1, 4}, TypeF16: {"f16", 1, 2}, TypeBF16: {"bf16", 1, 2}, TypeI32: {"i32", 1, 4},
		TypeQ4_0: {"q4_0", 32, 18}, TypeQ4_1: {"q4_1", 32, 20}, TypeQ5_0: {"q5_0", 32, 22}, TypeQ5_1: {"q5_1", 32, 24},
		TypeQ8_0: {"q8_0", 32, 34}, TypeQ2_K: {"q2_K", 256, 84}, TypeQ3_K: {"q3_K", 256, 110},
		TypeQ4_K: {"q4_K", 256, 144}, TypeQ5_K: {"q5_K", 256, 176}, TypeQ6_K: {"q6_K", 256, 210},
	}
	require.Len(t, AllTypes, len(want))
	for typ, w := range want {
		require.Equal(t, w.name, typ.String())
		require.Equal(t, w.block, typ.BlockSize(), typ.String())
		require.Equal(t, w.bytes, typ.BlockBytes(), typ.String())
		p, err := ParseType(w.name)
		require.NoError(t, err)
		require.Equal(t, typ, p)
	}
	_, err := ParseType("q7_X")
	require.ErrorContains(t, err, "unknown tensor type")
}

func TestDeclarations(t *testing.T) {
	t.Run("header layout", testHeaderLayout)
	t.Run("type enum", testTypeEnum)
}
