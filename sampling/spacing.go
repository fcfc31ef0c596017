package sampling

import (
	"math"
)

// npLinspace is numpy.linspace(start, stop, num) in float64.
func npLinspace(start, stop float64, num int) []float64 {
	out := make([]float64, num)
	if num == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(num-1)
	for i := range out {
		out[i] = float64(i)*step + start
	}
	out[num-1] = stop
	return out
}

// npArangeDown is numpy.arange(start, 0, -step) in float64 (start, step > 0).
func npArangeDown(start, step float64) []float64 {
	n := int(math.Ceil((0 - start) / -step))
	out := make([]float64, n)
	for i := range out {
		out[i] = start + float64(i)*-step
	}
	return out
}

// spacedTimesteps returns the descending train-timestep grid of n values
// for cfg's spacing, as the Euler/DDIM family computes it (float64 before
// the caller's cast). plusOne gives DPM-Solver's variant, which lays out
// n+1 points (rounded) and drops the last one.
func spacedTimesteps(cfg Config, n int, plusOne bool) []float64 {
	N := cfg.NumTrainTimesteps
	m := n
	if plusOne {
		m = n + 1
	}
	var ts []float64
	switch cfg.TimestepSpacing {
	case "linspace":
		lin := npLinspace(0, float64(N-1), m)
		ts = make([]float64, m)
		for i, v := range lin {
			ts[m-1-i] = v
		}
		if plusOne {
			for i := range ts {
				ts[i] = math.RoundToEven(ts[i])
			}
		}
	case "trailing":
		ar := npArangeDown(float64(N), float64(N)/float64(n))
		ts = make([]float64, len(ar))
		for i, v := range ar {
			ts[i] = math.RoundToEven(v) - 1
		}
		return ts
	default: // leading
		ratio := N / m
		ts = make([]float64, m)
		for i := 0; i < m; i++ {
			ts[m-1-i] = float64(i * ratio)
		}
		for i := range ts {
			ts[i] += float64(cfg.StepsOffset)
		}
	}
	if plusOne {
		ts = ts[:n]
	}
	return ts
}

// interpSigmas is numpy.interp(t, arange(len(sigmas)), sigmas) in float64.
func interpSigmas(t float64, sigmas []float32) float64 {
	n := len(sigmas)
	switch {
	case t <= 0:
		return float64(sigmas[0])
	case t >= float64(n-1):
		return float64(sigmas[n-1])
	}
	j := int(math.Floor(t))
	if float64(j) == t {
		return float64(sigmas[j])
	}
	slope := float64(sigmas[j+1]) - float64(sigmas[j])
	return slope*(t-float64(j)) + float64(sigmas[j])
}

// karrasSigmas is diffusers' _convert_to_karras (rho 7, float64).
func karrasSigmas(sigmaMin, sigmaMax float64, n int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, n)
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	out := make([]float64, n)
	for i, r := range ramp {
		out[i] = math.Pow(maxInv+r*(minInv-maxInv), rho)
	}
	return out
}

// sigmaToT is diffusers' _sigma_to_t: the fractional train timestep of
// sigma, by linear interpolation in log-sigma (logSigmas float32 ascending).
func sigmaToT(sigma float64, logSigmas []float32) float64 {
	logSigma := math.Log(math.Max(sigma, 1e-10))
	low := 0
	for i, ls := range logSigmas {
		if logSigma-float64(ls) >= 0 {
			low = i
		}
	}
	if low > len(logSigmas)-2 {
		low = len(logSigmas) - 2
	}
	lo, hi := float64(logSigmas[low]), float64(logSigmas[low+1])
	w := (lo - logSigma) / (lo - hi)
	w = math.Min(math.Max(w, 0), 1)
	return (1-w)*float64(low) + w*float64(low+1)
}

func logSigmas32(sigmas []float32) []float32 {
	out := make([]float32, len(sigmas))
	for i, s := range sigmas {
		out[i] = log32(s)
	}
	return out
}
