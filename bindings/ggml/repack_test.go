package ggml

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// repackedWeight returns a weight of type typ [k, m] holding wb, stored by
// AllocRepacked; free it with the returned function.
func repackedWeight(tb testing.TB, cpu *Backend, typ Type, wb []byte, k, m int64) (*Tensor, func()) {
	wctx := NewContext(1, 0)
	w := wctx.NewTensor(typ, k, m).SetName("w")
	require.True(tb, cpu.Repacks(w), "%s %dx%d", typ, k, m)
	buf, err := cpu.AllocRepacked(w)
	require.NoError(tb, err)
	require.NoError(tb, w.SetData(wb))
	return w, func() { buf.Free(); wctx.Free() }
}

func TestRepack(t *testing.T) {
	if !CanRepack() {
		t.Skip("ggml was built without GGML_USE_CPU_REPACK (make test sets it)")
	}
	if !RepackKernelsBuilt() {
		t.Skip("ggml's repacked products need AVX2 (arm64: dotprod or i8mm) compiled in (make test sets it)")
	}
	cpu := cpuBackend(t)
	c := NewContext(16, 0)
	defer c.Free()
	for _, tc := range []struct {
		typ  Type
		ne   []int64
		want bool
	}{
		{TypeQ4_K, []int64{512, 24}, true},
		{TypeQ4_0, []int64{64, 16}, true},
		{TypeQ4_K, []int64{512, 12}, false}, // rows come in groups of 8
		{TypeQ4_K, []int64{256, 8, 2}, false},
		{TypeQ8_0, []int64{64, 16}, false},
		{TypeF16, []int64{64, 16}, false},
	} {
		require.Equal(t, tc.want, cpu.Repacks(c.NewTensor(tc.typ, tc.ne...)), "%s %v", tc.typ, tc.ne)
	}
	_, err := cpu.AllocRepacked(c.NewTensor(TypeF16, 64, 16))
	require.ErrorContains(t, err, "cannot be repacked")
	// As Alloc, it checks the available RAM first.
	old := hostMemory
	hostMemory = func() (uint64, bool) { return 1 << 10, true }
	_, err = cpu.AllocRepacked(c.NewTensor(TypeQ4_K, 512, 64)) // 18 KiB
	hostMemory = old
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.ErrorContains(t, err, "the weights need 18.0 KiB of RAM but only 1.0 KiB is available")

	// A repacked product equals the plain one: activations of 3 images of
	// 5 tokens (not a multiple of the 4 rows the kernels take at once).
	r := rand.New(rand.NewPCG(3, 3))
	const K, M, N, B = 512, 24, 5, 3
	x := randn(r, K*N*B)
	for _, typ := range []Type{TypeQ4_K, TypeQ4_0} {
		wb, err := Quantize(typ, randn(r, K*M), K)
		require.NoError(t, err)
		plain, _ := computeOn(t, cpu, func(c *Context) *Tensor {
			return c.MulMat(c.Input(typ, wb, K, M), c.InputF32(x, K, N, B))
		})
		w, free := repackedWeight(t, cpu, typ, wb, K, M)
		repacked, _ := computeOn(t, cpu, func(c *Context) *Tensor { return c.MulMat(w, c.InputF32(x, K, N, B)) })
		// Its bytes are not wb's any more, and ggml cannot read them.
		require.True(t, w.Repacked())
		require.PanicsWithValue(t, `ggml: weight "w" is stored repacked for the CPU's products and cannot be read back`, func() { w.Data() })
		other := c.NewTensor(typ, K, M)
		buf, err := cpu.AllocTensors(other)
		require.NoError(t, err)
		require.ErrorContains(t, other.CopyFrom(w), "repacked")
		require.False(t, other.Repacked())
		buf.Free()
		free()
		require.Len(t, repacked, M*N*B)
		want := make([]float64, len(plain))
		for i, v := range plain {
			want[i] = float64(v)
		}
		checkRel(t, typ.String()+" repacked", repacked, want, 1e-6)
	}
}

// The q4_K product of BenchmarkMulMat with the weight repacked.
func BenchmarkMulMatRepacked(b *testing.B) {
	if !CanRepack() {
		b.Skip("ggml was built without GGML_USE_CPU_REPACK (make bench sets it)")
	}
	const K, M, N = 1280, 1280, 1024
	r := rand.New(rand.NewPCG(1, 1))
	w, x := randn(r, K*M), randn(r, K*N)
	for _, typ := range []Type{TypeQ4_K, TypeQ4_0} {
		wb, err := Quantize(typ, w, K)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%s_%dx%dx%d", typ, K, M, N), func(b *testing.B) {
			wt, free := repackedWeight(b, cpuBackend(b), typ, wb, K, M)
			defer free()
			benchGraph(b, 2*K*M*N, func(c *Context) *Tensor { return c.MulMat(wt, c.InputF32(x, K, N)) })
		})
	}
}
