package ggml

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuantizeMatchesGGML: our q4_K, q5_K and q8_0 quantizers write the
// bytes of ggml's reference quantizers, for weights of several
// distributions and for the edge cases of the fit: constant, all-zero,
// one-signed, tiny and huge sub-blocks, sub-blocks far smaller than their
// neighbours (whose 6-bit scale rounds to zero, so they keep the fit's
// levels), values halfway between two levels, and rows that end within a
// vector of sub-blocks.
//
// For q4_K and q5_K byte for byte only where this build does not fuse
// multiply-adds (as `make test` runs it once): ours never does, while
// ggml's compiled with FMA rounds its sums differently, which flips
// near-ties between candidate scales in some blocks (a third of q5_K's),
// either way. There the total error must match ggml's within 2 %.
func TestQuantizeMatchesGGML(t *testing.T) {
	exact := !fusesMultiplyAdd()
	if !exact {
		t.Log("this build fuses multiply-adds: comparing errors, not bytes (`make test` also compares bytes in a build without)")
	}
	r := rand.New(rand.NewSource(7))
	const n = 256 * 201
	cases := map[string]func(i int) float32{
		"normal":      func(int) float32 { return float32(r.NormFloat64() * 0.02) },
		"uniform":     func(int) float32 { return r.Float32()*2 - 1 },
		"positive":    func(int) float32 { return r.Float32() + 0.5 },
		"negative":    func(int) float32 { return -r.Float32() * 3 },
		"heavy tails": func(int) float32 { return float32(r.NormFloat64() * math.Exp(r.NormFloat64()*2)) },
		"tiny":        func(int) float32 { return float32(r.NormFloat64() * 1e-30) },
		"huge":        func(int) float32 { return float32(r.NormFloat64() * 1e30) },
		"few levels":  func(int) float32 { return float32(r.Intn(3)) * 0.25 },
		"zeros":       func(int) float32 { return 0 },
		"constant sub-blocks": func(i int) float32 {
			return float32(i/32%5) - 2
		},
		"sub-block scales a decade apart": func(i int) float32 {
			return float32(r.NormFloat64() * math.Pow(10, -float64(i/32%8)))
		},
		"halves": func(i int) float32 { // q8_0's unit is 1: values at .5 round away from zero
			if i%32 == 0 {
				return 127
			}
			return float32(i%255-127) + 0.5
		},
		"one outlier a block": func(i int) float32 {
			if i%256 == 17 {
				return 50
			}
			return float32(r.NormFloat64() * 0.01)
		},
	}
	// Where ggml's sums are fused, only weights like a network's are
	// compared: in the edge cases near-ties are the rule (a constant
	// sub-block's least-squares system is singular up to rounding).
	ordinary := map[string]bool{"normal": true, "uniform": true, "positive": true, "negative": true,
		"sub-block scales a decade apart": true, "one outlier a block": true}
	for name, gen := range cases {
		src := make([]float32, n)
		for i := range src {
			src[i] = gen(i)
		}
		for _, ty := range []Type{TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeQ8_0} {
			exact := exact || ty == TypeQ8_0 // no sums to round
			bb := int(ty.BlockBytes())
			for _, rowLen := range []int64{256, 768, n} { // 1, 3 and 201 super-blocks a row
				want := make([]byte, int64(len(src))/rowLen*ty.RowBytes(rowLen))
				ggmlQuantizeRows(ty, src, want, rowLen)
				got, err := QuantizeRows(ty, src, rowLen, 3)
				require.NoError(t, err)
				require.Equal(t, len(want), len(got))
				for b := 0; exact && b < len(want); b += bb {
					require.Equalf(t, want[b:b+bb], got[b:b+bb], "%s, %s, rows of %d: block %d differs from ggml's", name, ty, rowLen, b/bb)
				}
				if exact || !ordinary[name] {
					continue
				}
				ggmlErr, ourErr := squaredError(t, ty, want, src), squaredError(t, ty, got, src)
				require.InEpsilonf(t, ggmlErr, ourErr, 0.02, "%s, %s, rows of %d: squared error, ggml's against ours", name, ty, rowLen)
			}
		}
	}
}

// squaredError is the sum of the squared differences between src and the
// blocks of type ty that quantize it (at least the smallest normal float,
// so that exact quantizations compare as equal).
func squaredError(t *testing.T, ty Type, blocks []byte, src []float32) float64 {
	back, err := Dequantize(ty, blocks, int64(len(src)))
	require.NoError(t, err)
	sum := 0.0
	for i, v := range src {
		d := float64(back[i]) - float64(v)
		sum += d * d
	}
	return max(sum, math.SmallestNonzeroFloat64)
}

// BenchmarkQuantize: a 1280×1280 weight to q4_K, q5_K and q8_0 on one
// thread, by our quantizers and by ggml's.
func BenchmarkQuantize(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	const k = 1280
	src := make([]float32, k*k)
	for i := range src {
		src[i] = float32(r.NormFloat64() * 0.02)
	}
	for _, ty := range []Type{TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeQ8_0} {
		dst := make([]byte, k*ty.RowBytes(k))
		for _, q := range []struct {
			name     string
			quantize func(Type, []float32, []byte, int64)
		}{{"ours", quantizeRows}, {"ggml", ggmlQuantizeRows}} {
			b.Run(ty.String()+"/"+q.name, func(b *testing.B) {
				b.SetBytes(int64(len(src) * 4))
				for b.Loop() {
					q.quantize(ty, src, dst, k)
				}
			})
		}
	}
}

// TestQuantizeSameOnEveryMachine: our quantizers write the same bytes in
// every build (x86-64 with and without FMA, arm64, GCC or clang), which
// is what lets `convert` promise the same file everywhere. The digests
// are those of ggml's quantizers compiled without fused multiply-adds,
// which the test also checks where this build has none. The weights are
// made from integers alone, so that they too are the same everywhere
// (Go fuses float multiply-adds on arm64).
func TestQuantizeSameOnEveryMachine(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	src := make([]float32, 256*512)
	for i := range src {
		scale := float32(int32(1) << (i / 32 % 16)) // sub-blocks 2^0 … 2^15 apart
		src[i] = float32(int32(r.Uint32())) * 0x1p-40 * scale
	}
	want := map[Type]string{
		TypeQ4_K: "0814bc3da3a406ba600bf5dc3dc05e807813340b92c160d0f6a5846b2a092cf5",
		TypeQ5_K: "1d009ecbc8a40af249d268b44ef0412ed1907eb07501e616160964caec261c33",
		TypeQ6_K: "b27b401052a14e0bc662b1cf90d94baa404ef7d8e0105776209cbabd2e39b45d",
		TypeQ8_0: "3658f16ebcad1d9fbfc21fb4174308fd348405050d20653f02d04698444b0f07",
	}
	for ty, digest := range want {
		got, err := QuantizeRows(ty, src, 4096, 2)
		require.NoError(t, err)
		sum := sha256.Sum256(got)
		t.Logf("%s: %x", ty, sum)
		assert.Equalf(t, digest, hex.EncodeToString(sum[:]), "%s: our bytes", ty)
		if !fusesMultiplyAdd() || ty == TypeQ8_0 {
			ref := make([]byte, len(got))
			ggmlQuantizeRows(ty, src, ref, 4096)
			sum := sha256.Sum256(ref)
			assert.Equalf(t, digest, hex.EncodeToString(sum[:]), "%s: ggml's bytes", ty)
		}
	}
}
