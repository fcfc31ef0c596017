package sampling

import (
	"fmt"
)

// euler is EulerDiscreteScheduler (s_churn 0) and, with ancestral set,
// EulerAncestralDiscreteScheduler.
type euler struct {
	name      string
	cfg       Config
	timesteps []float32
	sigmas    []float32 // steps+1
	initSigma float32
	ancestral bool
	noise     NoiseSource
}

func newEuler(cfg Config, steps int) (*euler, error) {
	sched, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	e := &euler{name: "euler", cfg: cfg}
	if cfg.UseKarrasSigmas {
		e.name = "euler_karras"
	}
	ts := spacedTimesteps(cfg, steps, false)
	sig := make([]float64, len(ts))
	for i, t := range ts {
		// Timesteps are float32 in diffusers before the interpolation.
		ts[i] = float64(float32(t))
		sig[i] = interpSigmas(ts[i], sched.Sigmas)
	}
	if cfg.UseKarrasSigmas {
		sig = karrasSigmas(sig[len(sig)-1], sig[0], steps)
		logS := logSigmas32(sched.Sigmas)
		for i, s := range sig {
			ts[i] = sigmaToT(s, logS)
		}
	}
	last := 0.0
	if cfg.FinalSigmasType == "sigma_min" {
		last = float64(sched.Sigmas[0])
	}
	e.sigmas = make([]float32, 0, len(sig)+1)
	for _, s := range sig {
		e.sigmas = append(e.sigmas, float32(s))
	}
	e.sigmas = append(e.sigmas, float32(last))
	e.timesteps = make([]float32, len(ts))
	for i, t := range ts {
		e.timesteps[i] = float32(t)
	}
	maxSigma := e.sigmas[0]
	for _, s := range e.sigmas {
		if s > maxSigma {
			maxSigma = s
		}
	}
	if cfg.TimestepSpacing == "leading" {
		e.initSigma = sqrt32(add32(mul32(maxSigma, maxSigma), 1))
	} else {
		e.initSigma = maxSigma
	}
	return e, nil
}

func newEulerAncestral(cfg Config, steps int, noise NoiseSource) (Sampler, error) {
	if noise == nil {
		return nil, fmt.Errorf("sampling: euler_a needs a noise source")
	}
	if cfg.UseKarrasSigmas {
		return nil, fmt.Errorf("sampling: euler_a does not support Karras sigmas")
	}
	e, err := newEuler(cfg, steps)
	if err != nil {
		return nil, err
	}
	e.name, e.ancestral, e.noise = "euler_a", true, noise
	return e, nil
}

func (e *euler) Name() string            { return e.name }
func (e *euler) Steps() int              { return len(e.timesteps) }
func (e *euler) Timesteps() []float64    { return f64s(e.timesteps) }
func (e *euler) Sigmas() []float64       { return f64s(e.sigmas) }
func (e *euler) InitNoiseSigma() float64 { return float64(e.initSigma) }

// ScaleModelInput is x / sqrt(σ²+1).
func (e *euler) ScaleModelInput(x []float32, i int) []float32 {
	s := e.sigmas[i]
	d := sqrt32(add32(mul32(s, s), 1))
	out := make([]float32, len(x))
	for k, v := range x {
		out[k] = div32(v, d)
	}
	return out
}

// predX0 is the denoised estimate for sigma.
func (e *euler) predX0(sigma float32, m, x []float32) []float32 {
	out := make([]float32, len(x))
	if e.cfg.PredictionType == "v_prediction" {
		s2 := add32(mul32(sigma, sigma), 1)
		c := div32(-sigma, sqrt32(s2))
		for k := range x {
			out[k] = add32(mul32(m[k], c), div32(x[k], s2))
		}
		return out
	}
	for k := range x {
		out[k] = sub32(x[k], mul32(sigma, m[k]))
	}
	return out
}

func (e *euler) Step(i int, m, x []float32) []float32 {
	checkLens(e.name, i, len(e.timesteps), m, x)
	sigma, next := e.sigmas[i], e.sigmas[i+1]
	pred := e.predX0(sigma, m, x)
	out := make([]float32, len(x))
	if !e.ancestral {
		dt := sub32(next, sigma)
		for k := range x {
			d := div32(sub32(x[k], pred[k]), sigma)
			out[k] = add32(x[k], mul32(d, dt))
		}
		return out
	}
	up, down := ancestralSigmas(sigma, next)
	dt := sub32(down, sigma)
	for k := range x {
		d := div32(sub32(x[k], pred[k]), sigma)
		out[k] = add32(x[k], mul32(d, dt))
	}
	noise := e.noise.Normal(len(x))
	for k := range out {
		out[k] = add32(out[k], mul32(noise[k], up))
	}
	return out
}

// ancestralSigmas splits the step from σ_from to σ_to into noise added back
// and the deterministic part: σ_up = √(σ_to²(σ_from²−σ_to²)/σ_from²),
// σ_down = √(σ_to²−σ_up²).
func ancestralSigmas(from, to float32) (up, down float32) {
	from2, to2 := mul32(from, from), mul32(to, to)
	up = sqrt32(div32(mul32(to2, sub32(from2, to2)), from2))
	return up, sqrt32(sub32(to2, mul32(up, up)))
}
