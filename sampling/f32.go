package sampling

import "math"

// fma32 returns a·b+c rounded once to float32.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact for float32 operands
	sum := p + float64(c)
	bv := sum - p
	err := (p - (sum - bv)) + (float64(c) - bv) // sum + err == p + c exactly
	r := float32(sum)
	if err != 0 && float64(r) != sum {
		// Only a float64 sum lying exactly halfway between two float32s can
		// round the wrong way; break the tie with the sign of err.
		lo := float64(math.Nextafter32(r, float32(math.Inf(-1))))
		hi := float64(math.Nextafter32(r, float32(math.Inf(1))))
		if float64(r) > sum {
			hi = float64(r)
		} else {
			lo = float64(r)
		}
		if sum == lo+(hi-lo)/2 {
			if err > 0 {
				r = float32(hi)
			} else {
				r = float32(lo)
			}
		}
	}
	return r
}

// mul32, add32, sub32, div32 are single float32 operations; the explicit
// conversions stop the compiler from fusing them with neighbours, so each
// rounds exactly as one torch float32 op does.
func mul32(a, b float32) float32 { return float32(a * b) }
func add32(a, b float32) float32 { return float32(a + b) }
func sub32(a, b float32) float32 { return float32(a - b) }
func div32(a, b float32) float32 { return float32(a / b) }

func log32(x float32) float32 { return float32(math.Log(float64(x))) }
func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }
