package sampling

import (
	"fmt"
	"math"
)

// ddim is DDIMScheduler (clip_sample and set_alpha_to_one from the config,
// eta = cfg.Eta, thresholding off).
type ddim struct {
	cfg       Config
	acp       []float32
	final     float32
	timesteps []int64
	ratio     int64
	noise     NoiseSource
}

func newDDIM(cfg Config, steps int, noise NoiseSource) (Sampler, error) {
	if cfg.Eta > 0 && noise == nil {
		return nil, fmt.Errorf("sampling: ddim with eta %g needs a noise source", cfg.Eta)
	}
	sched, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	d := &ddim{cfg: cfg, acp: sched.AlphasCumprod, noise: noise}
	d.final = sched.AlphasCumprod[0]
	if cfg.SetAlphaToOne {
		d.final = 1
	}
	d.ratio = int64(cfg.NumTrainTimesteps / steps)
	for _, t := range spacedTimesteps(cfg, steps, false) {
		d.timesteps = append(d.timesteps, int64(math.RoundToEven(t)))
	}
	return d, nil
}

func (d *ddim) Name() string { return "ddim" }
func (d *ddim) Steps() int   { return len(d.timesteps) }
func (d *ddim) Timesteps() []float64 {
	out := make([]float64, len(d.timesteps))
	for i, t := range d.timesteps {
		out[i] = float64(t)
	}
	return out
}
func (d *ddim) Sigmas() []float64                            { return nil }
func (d *ddim) InitNoiseSigma() float64                      { return 1 }
func (d *ddim) ScaleModelInput(x []float32, i int) []float32 { return x }

// ddimCoefs are step i's scalars: √ᾱ_t, √(1−ᾱ_t), √ᾱ_prev, the noise
// scale σ (eta) and the direction coefficient √(1−ᾱ_prev−σ²).
type ddimCoefs struct{ sqA, sqB, sqPrev, std, dir float32 }

func (d *ddim) coefs(i int) ddimCoefs {
	t := d.timesteps[i]
	prevT := t - d.ratio
	at := d.acp[t]
	aPrev := d.final
	if prevT >= 0 {
		aPrev = d.acp[prevT]
	}
	beta := sub32(1, at)
	variance := mul32(div32(sub32(1, aPrev), beta), sub32(1, div32(at, aPrev)))
	std := mul32(float32(d.cfg.Eta), sqrt32(variance))
	return ddimCoefs{sqA: sqrt32(at), sqB: sqrt32(beta), sqPrev: sqrt32(aPrev), std: std,
		dir: sqrt32(sub32(sub32(1, aPrev), mul32(std, std)))}
}

func (d *ddim) Step(i int, m, x []float32) []float32 {
	checkLens("ddim", i, len(d.timesteps), m, x)
	c := d.coefs(i)
	x0 := make([]float32, len(x))
	eps := m
	if d.cfg.PredictionType == "v_prediction" {
		eps = make([]float32, len(x))
		for k := range x {
			x0[k] = sub32(mul32(c.sqA, x[k]), mul32(c.sqB, m[k]))
			eps[k] = add32(mul32(c.sqA, m[k]), mul32(c.sqB, x[k]))
		}
	} else {
		for k := range x {
			x0[k] = div32(sub32(x[k], mul32(c.sqB, m[k])), c.sqA)
		}
	}
	if d.cfg.ClipSample {
		r := float32(d.cfg.ClipSampleRange)
		for k, v := range x0 {
			x0[k] = min(max(v, -r), r)
		}
	}
	out := make([]float32, len(x))
	for k := range x {
		out[k] = add32(mul32(c.sqPrev, x0[k]), mul32(c.dir, eps[k]))
	}
	if d.cfg.Eta > 0 {
		noise := d.noise.Normal(len(x))
		for k := range out {
			out[k] = add32(out[k], mul32(c.std, noise[k]))
		}
	}
	return out
}
