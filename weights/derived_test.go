package weights

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// ConcatRows keeps a shared dtype byte for byte (quantized blocks too) and
// joins mixed dtypes as float32.
func TestConcatRows(t *testing.T) {
	f16 := func(name string, rows int64, vals ...float32) *Tensor {
		b := make([]byte, 2*len(vals))
		half.EncodeF16(b, vals)
		return NewTensor(name, safetensors.F16, []int64{rows, int64(len(vals)) / rows}, "a.safetensors", func() ([]byte, error) { return b, nil })
	}
	a, b := f16("a", 1, 1, 2), f16("b", 2, 3, 4, 5, 6)
	ab, err := ConcatRows("ab", a, b)
	require.NoError(t, err)
	require.Equal(t, safetensors.F16, ab.DType)
	require.Equal(t, []int64{3, 2}, ab.Shape)
	v, err := ab.Float32()
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2, 3, 4, 5, 6}, v)

	// Two q8_0 rows of 32: a block (f16 scale, 32 int8) each.
	q8 := func(name string, scale float32, q int8) *Tensor {
		b := make([]byte, 34)
		half.EncodeF16(b[:2], []float32{scale})
		for i := 2; i < 34; i++ {
			b[i] = byte(q)
		}
		return NewTensor(name, "Q8_0", []int64{1, 32}, "m.gguf", func() ([]byte, error) { return b, nil })
	}
	qq, err := ConcatRows("qq", q8("x", 0.5, 2), q8("y", 2, -3))
	require.NoError(t, err)
	require.True(t, qq.Quantized())
	v, err = qq.Float32()
	require.NoError(t, err)
	require.Equal(t, float32(1), v[0])
	require.Equal(t, float32(-6), v[63])

	mixed, err := ConcatRows("m", q8("x", 0.5, 2), f16("c", 1, make([]float32, 32)...))
	require.NoError(t, err)
	require.Equal(t, safetensors.F32, mixed.DType)
	require.Equal(t, safetensors.F16, mixed.StoredAs, "not quantized again")
	v, err = mixed.Float32()
	require.NoError(t, err)
	require.Len(t, v, 64)
	require.Equal(t, float32(1), v[31])
	require.Zero(t, v[32])

	merged := Computed("lora", []int64{1, 2}, []*Tensor{a}, func() ([]float32, error) { return []float32{7, 8}, nil })
	m2, err := ConcatRows("m2", merged, a) // a LoRA merge's result next to its original's dtype
	require.NoError(t, err)
	require.Equal(t, safetensors.F16, m2.StoredAs)
	v, err = m2.Float32()
	require.NoError(t, err)
	require.Equal(t, []float32{7, 8, 1, 2}, v)

	_, err = ConcatRows("bad", a, f16("wide", 1, 1, 2, 3))
	require.ErrorContains(t, err, "want [rows, 2]")
}
