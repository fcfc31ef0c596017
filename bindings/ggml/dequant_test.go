package ggml

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/half"
)

// TestEncodeF16MatchesHalf: EncodeFloat's f16 (ggml's CPU conversion)
// rounds every float as internal/half does (to nearest even, overflow to
// infinity, subnormals exactly): every exponent and sign, with the
// dropped bits at, just below and just above a tie; NaNs stay NaNs.
func TestEncodeF16MatchesHalf(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var src []float32
	for exp := range uint32(256) {
		for _, sign := range []uint32{0, 1 << 31} {
			for range 64 {
				top := r.Uint32N(1<<10) << 13
				for _, low := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, r.Uint32N(1 << 13)} {
					b := sign | exp<<23 | top | low
					if exp == 0xff && top|low != 0 {
						continue // NaNs: below
					}
					src = append(src, math.Float32frombits(b))
				}
			}
		}
	}
	for len(src) < 5<<20 { // more than one piece of the conversion's split
		if v := math.Float32frombits(r.Uint32()); v == v {
			src = append(src, v)
		}
	}
	src = append(src, float32(math.NaN()), -float32(math.NaN()))
	got, ok := EncodeFloat(TypeF16, src)
	require.True(t, ok)
	want := make([]byte, 2*len(src))
	half.EncodeF16(want, src)
	for i, v := range src {
		g, w := binary.LittleEndian.Uint16(got[2*i:]), binary.LittleEndian.Uint16(want[2*i:])
		if v != v {
			if g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
				t.Fatalf("NaN %08x became %04x", math.Float32bits(v), g)
			}
		} else if g != w {
			t.Fatalf("%08x (%g) became %04x, want %04x", math.Float32bits(v), v, g, w)
		}
	}
}

// BenchmarkEncodeF16: a feed-forward weight of SDXL (13 million values)
// to f16, by ggml's conversion and by internal/half's.
func BenchmarkEncodeF16(b *testing.B) {
	src := make([]float32, 1280*10240)
	for i := range src {
		src[i] = float32(i%1000) * 1e-3
	}
	dst := make([]byte, 2*len(src))
	b.Run("ggml", func(b *testing.B) {
		b.SetBytes(int64(4 * len(src)))
		for b.Loop() {
			encodeF16(dst, src)
		}
	})
	b.Run("half", func(b *testing.B) {
		b.SetBytes(int64(4 * len(src)))
		for b.Loop() {
			half.EncodeF16(dst, src)
		}
	})
}

// widenedTypes are the quantized types our CPU kernels widen to f32 in
// their products (x86 with AVX2), through their own decoders where they
// have them. (The others have integer products.)
var widenedTypes = []Type{TypeQ2_K}

// TestDecodeRow: our kernels' decoders (cpu_decode.c, every x86 build
// whose kernels run with AVX2, FMA and F16C) give ggml's values bit for
// bit, on random bytes (every bit of the blocks' quants, scales and f16
// factors, infinities and NaNs included) and on quantized weights; they
// decline other types and partial blocks.
func TestDecodeRow(t *testing.T) {
	_, ok := decodeRowOurs(TypeQ2_K, make([]byte, TypeQ2_K.BlockBytes()), 256)
	want := runtime.GOARCH == "amd64" && (kernels != ownTarget || ownTargetIsX86_64V3())
	require.Equal(t, want, ok, "our decoders are built where our kernels run with AVX2, FMA and F16C")
	if !ok {
		t.Skip("no decoders of our own in this build")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range widenedTypes {
		t.Run(typ.String(), func(t *testing.T) {
			const blocks = 4096
			n := blocks * typ.BlockSize()
			raw := make([]byte, blocks*typ.BlockBytes())
			for i := range raw {
				raw[i] = byte(r.Uint32())
			}
			quantized, err := Quantize(typ, randn(r, int(n)), 1024)
			require.NoError(t, err)
			for name, data := range map[string][]byte{"random bytes": raw, "quantized": quantized[:len(raw)]} {
				want, err := Dequantize(typ, data, n)
				require.NoError(t, err)
				got, ok := decodeRowOurs(typ, data, n)
				require.True(t, ok)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
						t.Fatalf("%s: value %d (block %d) is %g (%08x), ggml's %g (%08x)", name, i, i/int(typ.BlockSize()),
							got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
				}
			}
			_, ok := decodeRowOurs(typ, raw[:typ.BlockBytes()], typ.BlockSize()-1)
			require.False(t, ok, "a partial block")
		})
	}
	for _, typ := range []Type{TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ3_K, TypeQ8_0, TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeF16} {
		_, ok := decodeRowOurs(typ, make([]byte, typ.BlockBytes()), typ.BlockSize())
		require.False(t, ok, "%s: not one of ours", typ)
	}
}
