package ggml

import (
	"math"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/cpu"
)

// Our header re-declares struct ggml_tensor; ggml_tensor_overhead() is the
// library's sizeof(struct ggml_object) + sizeof(struct ggml_tensor), with
// the 32-byte object header.
func testHeaderLayout(t *testing.T) {
	const objectHeader = 32
	overhead, declared := headerSizes()
	require.Equal(t, overhead, objectHeader+declared,
		"struct ggml_tensor in ggml_api.h does not match the linked ggml")

	ctx := NewContext(8, 0)
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
	// op_params and src, written by the library.
	m := ctx.NewTensor(TypeF32, 6, 2)
	y := ctx.MulMatF32(ctx.NewTensor(TypeF16, 6, 3), m)
	require.True(t, y.PreciseF32())
	require.False(t, ctx.MulMat(m, m).PreciseF32())
	require.Equal(t, m.p, y.Src(1).p)
	require.Nil(t, y.Src(2))
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
	t.Run("type traits", testTypeTraits)
}

// struct ggml_type_traits in ggml_api.h: its fields agree with the library's
// accessors, and to_float decodes what ggml_quantize_chunk encodes.
func testTypeTraits(t *testing.T) {
	for _, typ := range AllTypes {
		name, block, size, quantized, ok := traitsInfo(typ)
		require.True(t, ok, typ.String())
		require.Equal(t, typ.String(), name)
		require.Equal(t, typ.BlockSize(), block, typ.String())
		require.Equal(t, typ.BlockBytes(), size, typ.String())
		require.Equal(t, typ.Quantized(), quantized, typ.String())
	}
	rng := rand.New(rand.NewSource(1))
	const rows, n = 3, 512
	src := make([]float32, rows*n)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	// Worst relative RMS error per type (ggml's own quantizers on Gaussian data).
	for typ, tol := range map[Type]float64{TypeF16: 1e-3, TypeBF16: 5e-3, TypeQ8_0: 0.01, TypeQ6_K: 0.02, TypeQ5_0: 0.05,
		TypeQ5_1: 0.05, TypeQ5_K: 0.05, TypeQ4_0: 0.1, TypeQ4_1: 0.1, TypeQ4_K: 0.1, TypeQ3_K: 0.2, TypeQ2_K: 0.4} {
		q, err := Quantize(typ, src, n)
		require.NoError(t, err, typ.String())
		got, err := Dequantize(typ, q, int64(len(src)))
		require.NoError(t, err, typ.String())
		var se, ss float64
		for i := range src {
			d := float64(got[i] - src[i])
			se += d * d
			ss += float64(src[i]) * float64(src[i])
		}
		require.Less(t, math.Sqrt(se/ss), tol, typ.String())
	}
	_, err := Dequantize(TypeQ4_K, make([]byte, 10), 256)
	require.Error(t, err)
	_, err = Dequantize(TypeQ4_K, nil, 100)
	require.Error(t, err)
	f32, err := Dequantize(TypeF32, F32Bytes(src), int64(len(src)))
	require.NoError(t, err)
	require.Equal(t, src, f32)
}

func TestFitRow(t *testing.T) {
	require.Equal(t, TypeQ4_K, TypeQ4_K.FitRow(1280))
	require.Equal(t, TypeQ8_0, TypeQ4_K.FitRow(2880)) // 3×3 conv of 320 channels
	require.Equal(t, TypeQ4_0, TypeQ3_K.FitRow(640))
	require.Equal(t, TypeQ8_0, TypeQ5_K.FitRow(640))
	require.Equal(t, TypeQ8_0, TypeQ6_K.FitRow(320))
	require.Equal(t, TypeQ8_0, TypeQ8_0.FitRow(320))
	require.Equal(t, TypeF16, TypeQ8_0.FitRow(36)) // conv_in: 4 channels × 3×3
	require.Equal(t, TypeF16, TypeQ4_K.FitRow(36))
	require.Equal(t, TypeF32, TypeF32.FitRow(7))
}

// TestMissingSIMD: the test binary's ggml is built with this process's
// CGO_CFLAGS; with -march=native nothing may be missing, and what is
// reported must be a feature the CPU has.
func TestMissingSIMD(t *testing.T) {
	m := MissingSIMD()
	require.Contains(t, []string{"", "AVX2", "FMA", "F16C", "dotprod", "i8mm"}, m)
	switch flags := os.Getenv("CGO_CFLAGS"); {
	case strings.Contains(flags, "-march=native"):
		require.Empty(t, m)
	case !strings.Contains(flags, "-m") && runtime.GOARCH == "amd64" && hasX86_64V3(): // no target flags: SSE2
		// Our kernels run as compiled for x86-64-v3 or v4 (cpu_targets.h).
		require.Empty(t, m)
		require.True(t, CPUKernelsOutpaceGGML())
	case !strings.Contains(flags, "-m") && runtime.GOARCH == "amd64" && cpu.X86.HasAVX2:
		require.Equal(t, "AVX2", m)
	case flags == "" && runtime.GOARCH == "arm64" && cpu.ARM64.HasASIMDDP: // ARMv8.0
		require.Equal(t, "dotprod", m)
	}
	require.Equal(t, "CPU work runs many times slower", MissingSIMDEffect("AVX2"))
	require.Equal(t, "quantized weights' products run slower", MissingSIMDEffect("dotprod"))
	// Nothing missing on a CPU with the repacked products' SIMD: they are
	// built (unless only our kernels have it).
	if m == "" && !CPUKernelsOutpaceGGML() && (runtime.GOARCH == "amd64" && cpu.X86.HasAVX2 || runtime.GOARCH == "arm64" && cpu.ARM64.HasASIMDDP) {
		require.True(t, RepackKernelsBuilt())
	}
}
