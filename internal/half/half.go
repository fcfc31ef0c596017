// Package half converts between float32 and the 16-bit float formats used by
// checkpoints: IEEE binary16 (F16) and bfloat16 (BF16).
package half

import (
	"encoding/binary"
	"math"
	"sync"

	"github.com/gophotomaker/photomaker/internal/parallel"
)

// F16ToF32 widens one IEEE binary16 value exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		frac &= 0x3ff
		return math.Float32frombits(sign | e<<23 | frac<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// F32ToF16 rounds to nearest even, saturating to infinity as IEEE requires.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	// Fast path, where nearly every weight falls: magnitudes from the
	// smallest normal half (2⁻¹⁴) up to 2¹⁶. Rebias the exponent and round
	// the 13 dropped bits to nearest even; a carry moves into the exponent
	// (up to infinity from 65520), which is the right result.
	if x := b & 0x7fffffff; x >= 0x38800000 && x < 0x47800000 {
		r := x - 0x38000000
		r += 0xfff + (r>>13)&1
		return uint16(b>>16)&0x8000 | uint16(r>>13)
	}
	return f32ToF16Slow(b)
}

// f32ToF16Slow is F32ToF16 for zeros, subnormals, overflow, infinities and
// NaNs (and the reference the fast path is tested against).
func f32ToF16Slow(b uint32) uint16 {
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	frac := b & 0x7fffff
	if exp == 0xff {
		if frac != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := frac | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | frac>>13
	rem := frac & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is still correct
	}
	return sign | uint16(r)
}

// BF16ToF32 widens one bfloat16 value exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds to nearest even (NaN stays NaN).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// DecodeF16 widens little-endian binary16 bytes into dst (len(src)/2 values).
func DecodeF16(dst []float32, src []byte) {
	lut := f16Table()
	parallel.Ranges(len(dst), 1<<21, func(lo, hi int) { // a feed-forward weight of SDXL has 13 million values
		for i := lo; i < hi; i++ {
			dst[i] = lut[binary.LittleEndian.Uint16(src[2*i:])]
		}
	})
}

// f16Table holds F16ToF32 of every binary16 pattern (256 KiB): loading a
// checkpoint widens billions of values.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = F16ToF32(uint16(h))
	}
	return &t
})

// DecodeBF16 widens little-endian bfloat16 bytes into dst.
func DecodeBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// EncodeF16 writes src as little-endian binary16 bytes into dst (2 bytes
// each). Loading encodes through ggml's CPU conversion instead
// (ggml.EncodeFloat, tested against this), which takes the CPU's
// conversion instructions.
func EncodeF16(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
}

// EncodeBF16 writes src as little-endian bfloat16 bytes into dst.
func EncodeBF16(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}
