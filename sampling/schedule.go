package sampling

import "math"

// Schedule is the training noise schedule in the dtypes diffusers keeps it
// in: float32 betas, alphas and alphas_cumprod (torch tensors), plus the
// float32 Karras sigmas sqrt((1-ᾱ)/ᾱ) indexed by train timestep.
type Schedule struct {
	Betas         []float32
	Alphas        []float32
	AlphasCumprod []float32
	Sigmas        []float32 // Sigmas[t] = sqrt((1-ᾱ_t)/ᾱ_t), ascending in t
}

// NewSchedule computes the schedule of cfg.
func NewSchedule(cfg Config) (*Schedule, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := cfg.NumTrainTimesteps
	s := &Schedule{}
	switch {
	case cfg.TrainedBetas != nil:
		s.Betas = make([]float32, n)
		for i, b := range cfg.TrainedBetas {
			s.Betas[i] = float32(b)
		}
	case cfg.BetaSchedule == "linear":
		s.Betas = torchLinspace32(float32(cfg.BetaStart), float32(cfg.BetaEnd), n)
	default: // scaled_linear: linspace(sqrt(start), sqrt(end))**2 in float32
		s.Betas = torchLinspace32(float32(math.Sqrt(cfg.BetaStart)), float32(math.Sqrt(cfg.BetaEnd)), n)
		for i, b := range s.Betas {
			s.Betas[i] = float32(b * b)
		}
	}
	s.Alphas = make([]float32, n)
	s.AlphasCumprod = make([]float32, n)
	s.Sigmas = make([]float32, n)
	acc := 1.0 // torch's CPU cumprod accumulates float32 in double
	for i, b := range s.Betas {
		s.Alphas[i] = 1 - b
		acc *= float64(s.Alphas[i])
		s.AlphasCumprod[i] = float32(acc)
	}
	for i, a := range s.AlphasCumprod {
		s.Sigmas[i] = sqrt32(float32(float32(1-a) / a))
	}
	return s, nil
}

// torchLinspace32 is torch.linspace(start, end, steps, dtype=float32) on
// the CPU: step = (end-start)/(steps-1) in float32, the first half counted
// up from start, the second half down from end, each value one fused
// multiply-add (PyTorch's kernel is compiled with FMA contraction; with
// separate roundings 121 of SDXL's 1000 alphas_cumprod were 1 ulp off).
func torchLinspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	step := float32((end - start) / float32(steps-1))
	half := steps / 2
	for i := range out {
		if i < half {
			out[i] = fma32(step, float32(i), start)
		} else {
			out[i] = fma32(-step, float32(steps-i-1), end)
		}
	}
	return out
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
