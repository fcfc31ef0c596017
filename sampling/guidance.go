package sampling

import (
	"fmt"
	"math"
)

// CFG is classifier-free guidance as diffusers' SDXL pipeline computes it:
// uncond + scale·(cond − uncond), in float32.
func CFG(uncond, cond []float32, scale float64) []float32 {
	if len(uncond) != len(cond) {
		panic(fmt.Sprintf("sampling: CFG: %d unconditional vs %d conditional elements", len(uncond), len(cond)))
	}
	s := float32(scale)
	out := make([]float32, len(cond))
	for i := range cond {
		out[i] = add32(uncond[i], mul32(s, sub32(cond[i], uncond[i])))
	}
	return out
}

// RescaleCFG is diffusers' rescale_noise_cfg (Lin et al. 2023, "Common
// Diffusion Noise Schedules and Sample Steps are Flawed", §3.4): the guided
// prediction is rescaled to the standard deviation of the conditional one
// and blended back by phi (guidance_rescale); batch is the number of
// samples laid out one after another in guided and cond, and the standard
// deviation (unbiased, as torch.std) runs over each sample's elements.
// phi = 0 returns guided unchanged.
func RescaleCFG(guided, cond []float32, batch int, phi float64) []float32 {
	if len(guided) != len(cond) || batch <= 0 || len(cond)%batch != 0 {
		panic(fmt.Sprintf("sampling: RescaleCFG: %d guided, %d conditional elements, batch %d", len(guided), len(cond), batch))
	}
	out := append([]float32(nil), guided...)
	if phi == 0 {
		return out
	}
	per := len(cond) / batch
	for b := 0; b < batch; b++ {
		g, c, o := guided[b*per:(b+1)*per], cond[b*per:(b+1)*per], out[b*per:(b+1)*per]
		ratio := float32(std(c) / std(g))
		p := float32(phi)
		for i := range g {
			rescaled := mul32(g[i], ratio)
			o[i] = add32(mul32(p, rescaled), mul32(1-p, g[i]))
		}
	}
	return out
}

func std(v []float32) float64 {
	if len(v) < 2 {
		return 0
	}
	var mean float64
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		d := float64(x) - mean
		ss += d * d
	}
	return math.Sqrt(ss / float64(len(v)-1))
}
