package sampling

import "math"

// dpmpp2m is DPMSolverMultistepScheduler with algorithm_type dpmsolver++,
// solver_order 2, solver_type midpoint, lower_order_final true,
// euler_at_final false, thresholding off.
type dpmpp2m struct {
	name      string
	cfg       Config
	timesteps []int64
	sigmas    []float32 // steps+1
	alphaT    []float32 // per sigma: 1/sqrt(σ²+1)
	sigmaT    []float32 // σ·alphaT
	lambda    []float32 // log(alphaT) - log(sigmaT)

	prev      []float32 // previous converted model output (x0 prediction)
	lowerNums int
	nextStep  int
}

func newDPMPP2M(cfg Config, steps int) (*dpmpp2m, error) {
	sched, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	d := &dpmpp2m{name: "dpmpp_2m", cfg: cfg}
	if cfg.UseKarrasSigmas {
		d.name = "dpmpp_2m_karras"
	}
	ts := spacedTimesteps(cfg, steps, true)
	var sig []float64
	if cfg.UseKarrasSigmas {
		N := len(sched.Sigmas)
		sig = karrasSigmas(float64(sched.Sigmas[0]), float64(sched.Sigmas[N-1]), steps)
		logS := logSigmas32(sched.Sigmas)
		ts = make([]float64, len(sig))
		for i, s := range sig {
			ts[i] = math.RoundToEven(sigmaToT(s, logS))
		}
	} else {
		sig = make([]float64, len(ts))
		for i, t := range ts {
			sig[i] = interpSigmas(t, sched.Sigmas)
		}
	}
	last := 0.0
	if cfg.FinalSigmasType == "sigma_min" {
		last = float64(sched.Sigmas[0])
	}
	for _, s := range sig {
		d.sigmas = append(d.sigmas, float32(s))
	}
	d.sigmas = append(d.sigmas, float32(last))
	for _, t := range ts {
		d.timesteps = append(d.timesteps, int64(t))
	}
	for _, s := range d.sigmas {
		a := div32(1, sqrt32(add32(mul32(s, s), 1)))
		st := mul32(s, a)
		d.alphaT = append(d.alphaT, a)
		d.sigmaT = append(d.sigmaT, st)
		d.lambda = append(d.lambda, sub32(log32(a), log32(st)))
	}
	return d, nil
}

func (d *dpmpp2m) Name() string { return d.name }
func (d *dpmpp2m) Steps() int   { return len(d.timesteps) }
func (d *dpmpp2m) Timesteps() []float64 {
	out := make([]float64, len(d.timesteps))
	for i, t := range d.timesteps {
		out[i] = float64(t)
	}
	return out
}
func (d *dpmpp2m) Sigmas() []float64                            { return f64s(d.sigmas) }
func (d *dpmpp2m) InitNoiseSigma() float64                      { return 1 }
func (d *dpmpp2m) ScaleModelInput(x []float32, i int) []float32 { return x }

func (d *dpmpp2m) Step(i int, m, x []float32) []float32 {
	checkLens(d.name, i, len(d.timesteps), m, x)
	if i == 0 || i != d.nextStep {
		// A new run (or a jump): drop the multistep history.
		d.prev, d.lowerNums = nil, 0
	}
	d.nextStep = i + 1
	n := len(d.timesteps)
	lowerOrderFinal := i == n-1 && (n < 15 || d.cfg.FinalSigmasType == "zero")

	// convert_model_output: the x0 prediction.
	a, s := d.alphaT[i], d.sigmaT[i]
	m0 := make([]float32, len(x))
	if d.cfg.PredictionType == "v_prediction" {
		for k := range x {
			m0[k] = sub32(mul32(a, x[k]), mul32(s, m[k]))
		}
	} else {
		for k := range x {
			m0[k] = div32(sub32(x[k], mul32(s, m[k])), a)
		}
	}

	alphaT := d.alphaT[i+1]
	ratio := div32(d.sigmaT[i+1], d.sigmaT[i])
	h := sub32(d.lambda[i+1], d.lambda[i])
	c := mul32(alphaT, sub32(exp32(-h), 1))
	out := make([]float32, len(x))
	if d.prev == nil || d.lowerNums < 1 || lowerOrderFinal {
		for k := range x {
			out[k] = sub32(mul32(ratio, x[k]), mul32(c, m0[k]))
		}
	} else {
		h0 := sub32(d.lambda[i], d.lambda[i-1])
		r0 := div32(h0, h)
		inv := div32(1, r0)
		half := mul32(0.5, c)
		m1 := d.prev
		for k := range x {
			d1 := mul32(inv, sub32(m0[k], m1[k]))
			out[k] = sub32(sub32(mul32(ratio, x[k]), mul32(c, m0[k])), mul32(half, d1))
		}
	}
	d.prev = m0
	if d.lowerNums < 2 {
		d.lowerNums++
	}
	return out
}
