package half

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// Exhaustive: every binary16 pattern widens and narrows back to itself, and
// the widened values match the format's definition (sign, 5-bit exponent,
// 10-bit fraction).
func TestF16RoundTripAll(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		exp, frac := (h>>10)&0x1f, h&0x3ff
		var want float64
		switch {
		case exp == 0:
			want = math.Ldexp(float64(frac), -24)
		case exp == 0x1f && frac == 0:
			want = math.Inf(1)
		case exp == 0x1f:
			require.True(t, math.IsNaN(float64(f)))
			continue
		default:
			want = math.Ldexp(float64(frac|0x400), exp-25)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		require.Equal(t, want, float64(f), "pattern %#04x", h)
		require.Equal(t, uint16(h), F32ToF16(f), "pattern %#04x", h)
	}
}

func TestF32ToF16Rounding(t *testing.T) {
	// 1 + 2^-11 is exactly halfway between 1 and the next half: ties to even (1).
	require.Equal(t, uint16(0x3c00), F32ToF16(1+float32(math.Ldexp(1, -11))))
	// Just above halfway rounds up.
	require.Equal(t, uint16(0x3c01), F32ToF16(1+float32(math.Ldexp(1, -11))+float32(math.Ldexp(1, -20))))
	require.Equal(t, uint16(0x7c00), F32ToF16(70000))
	require.Equal(t, uint16(0x0001), F32ToF16(float32(math.Ldexp(1, -24))))
	require.Equal(t, uint16(0x0000), F32ToF16(float32(math.Ldexp(1, -26))))
}

func TestBF16(t *testing.T) {
	require.Equal(t, float32(1), BF16ToF32(0x3f80))
	require.Equal(t, uint16(0x3f80), F32ToBF16(1.00390625)) // tie → even
	require.Equal(t, uint16(0x3f81), F32ToBF16(1.005))
	require.True(t, math.IsNaN(float64(BF16ToF32(F32ToBF16(float32(math.NaN()))))))
}

// The fast path of F32ToF16 agrees with the general conversion on a sweep
// of float32 bit patterns (every 31st, both signs) and around each edge of
// its range.
func TestF32ToF16FastPath(t *testing.T) {
	check := func(b uint32) {
		if got, want := F32ToF16(math.Float32frombits(b)), f32ToF16Slow(b); got != want {
			t.Fatalf("%#08x (%g): %#04x, want %#04x", b, math.Float32frombits(b), got, want)
		}
	}
	for b := uint64(0); b < 1<<32; b += 31 {
		check(uint32(b))
	}
	for _, edge := range []uint32{0x38800000, 0x47800000, 0x477fe000, 0x477ff000, 0x387fc000} {
		for d := uint32(0); d < 1<<14; d++ {
			check(edge + d)
			check(edge - d)
			check(edge + d | 0x80000000)
		}
	}
}

func TestDecodeF16Table(t *testing.T) {
	src := make([]byte, 2<<16)
	for h := range 1 << 16 {
		src[2*h], src[2*h+1] = byte(h), byte(h>>8)
	}
	dst := make([]float32, 1<<16)
	DecodeF16(dst, src)
	for h, v := range dst {
		want := F16ToF32(uint16(h))
		if math.Float32bits(v) != math.Float32bits(want) {
			t.Fatalf("%#04x: %g, want %g", h, v, want)
		}
	}
}

// Large slices are decoded in parts on several cores: every value lands
// where a serial pass puts it, across the parts' edges too.
func TestLargeSlicesInParts(t *testing.T) {
	n := 5<<21 + 3 // five parts and a remainder, where there are cores enough
	src := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(i*2654435761>>7))
	}
	dst := make([]float32, n)
	DecodeF16(dst, src)
	for i := range n {
		h := binary.LittleEndian.Uint16(src[2*i:])
		if want := F16ToF32(h); math.Float32bits(dst[i]) != math.Float32bits(want) {
			t.Fatalf("value %d: %g, want %g", i, dst[i], want)
		}
	}
}
