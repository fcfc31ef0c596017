package ggml

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
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
