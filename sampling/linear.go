package sampling

// Linear is one sampler step written as a few scaled sums of whole tensors,
// so that a device can run the step next to the model without the host:
//
//	model input = x / S
//	x0          = (P·x + Q·m) / R      (clamped to ±Clip when Clip > 0)
//	next        = A·x + B·x0 + C·(x0 − prev) + D·m + N·noise
//
// where x is the sample, m the model output, prev the x0 of the step before
// (DPM++ 2M's history) and noise a fresh N(0,1) draw of x's size. Every
// sampler here is linear in these tensors. The coefficients follow
// diffusers' order of operations where it matters (the divisions), so the
// trajectories stay within float32 rounding of Step's, which the tests
// check against diffusers' own.
type Linear struct {
	S          float32
	P, Q, R    float32
	Clip       float32
	A, B, C, D float32
	N          float32
	// Noise says the step draws noise from the sampler's source, as Step
	// does, even where N is 0 (Euler a's last step): skipping the draw
	// would shift the noise of every later draw from the same source.
	Noise bool
}

// Terms says which optional parts of the update any step of a loop needs,
// so a graph built once for the loop can leave the others out.
type Terms struct {
	X0, Div, Prev, Model, Noise bool
	Clip                        float32 // the clamp of x0 (0: none)
}

// TermsOf returns the terms steps use.
func TermsOf(steps []Linear) Terms {
	var t Terms
	for _, l := range steps {
		t.Div = t.Div || l.R != 1
		t.Clip = max(t.Clip, l.Clip)
		t.Prev = t.Prev || l.C != 0
		t.Model = t.Model || l.D != 0
		t.Noise = t.Noise || l.Noise
		t.X0 = t.X0 || l.B != 0 || l.C != 0 || l.Clip > 0
	}
	return t
}

// LinearSteps returns s.Linear(i) for every step.
func LinearSteps(s Sampler) []Linear {
	out := make([]Linear, s.Steps())
	for i := range out {
		out[i] = s.Linear(i)
	}
	return out
}

// Apply is the step on the host, in the order a device graph computes it:
// it returns next and x0 (the next step's prev). prev and noise may be nil
// where their coefficients are 0; a term whose coefficient is 0 is left
// out, which changes nothing for finite values.
func (l Linear) Apply(x, m, prev, noise []float32) (next, x0 []float32) {
	x0 = make([]float32, len(x))
	next = make([]float32, len(x))
	for k := range x {
		v := div32(add32(mul32(x[k], l.P), mul32(m[k], l.Q)), l.R)
		if l.Clip > 0 {
			v = min(max(v, -l.Clip), l.Clip)
		}
		x0[k] = v
		n := mul32(x[k], l.A)
		if l.B != 0 {
			n = add32(n, mul32(v, l.B))
		}
		if l.C != 0 {
			n = add32(n, mul32(sub32(v, prev[k]), l.C))
		}
		if l.D != 0 {
			n = add32(n, mul32(m[k], l.D))
		}
		if l.N != 0 {
			n = add32(n, mul32(noise[k], l.N))
		}
		next[k] = n
	}
	return next, x0
}

// Linear for the Euler family: x + dt·(x − x0)/σ, which is x + dt·m for
// epsilon prediction.
func (e *euler) Linear(i int) Linear {
	sigma, next := e.sigmas[i], e.sigmas[i+1]
	s2 := add32(mul32(sigma, sigma), 1)
	dt := sub32(next, sigma)
	l := Linear{S: sqrt32(s2), P: 1, Q: -sigma, R: 1}
	if e.ancestral {
		up, down := ancestralSigmas(sigma, next)
		dt = sub32(down, sigma)
		l.N, l.Noise = up, true
	}
	l.A, l.D = 1, dt
	if e.cfg.PredictionType == "v_prediction" {
		// x0 = x/(σ²+1) − σ/√(σ²+1)·m, so (x − x0)/σ = σx/(σ²+1) + m/√(σ²+1).
		rs := sqrt32(s2)
		l.P, l.Q = div32(1, s2), div32(-sigma, rs)
		l.A, l.D = add32(1, mul32(dt, div32(sigma, s2))), div32(dt, rs)
	}
	return l
}

// Linear for DPM++ 2M: first order on the first and (lower_order_final)
// last steps, second order in between, as Step run in order does.
func (d *dpmpp2m) Linear(i int) Linear {
	a, s := d.alphaT[i], d.sigmaT[i]
	l := Linear{S: 1, P: 1, Q: -s, R: a}
	if d.cfg.PredictionType == "v_prediction" {
		l.P, l.Q, l.R = a, -s, 1
	}
	n := len(d.timesteps)
	lowerOrderFinal := i == n-1 && (n < 15 || d.cfg.FinalSigmasType == "zero")
	h := sub32(d.lambda[i+1], d.lambda[i])
	c := mul32(d.alphaT[i+1], sub32(exp32(-h), 1))
	l.A, l.B = div32(d.sigmaT[i+1], d.sigmaT[i]), -c
	if i > 0 && !lowerOrderFinal {
		// − ½c·(m0 − m1)/r0
		r0 := div32(sub32(d.lambda[i], d.lambda[i-1]), h)
		l.C = -mul32(mul32(0.5, c), div32(1, r0))
	}
	return l
}

// Linear for DDIM: x0 from the model output (clipped if configured), then
// √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε (+ σ·noise with eta).
func (d *ddim) Linear(i int) Linear {
	c := d.coefs(i)
	l := Linear{S: 1, P: 1, Q: -c.sqB, R: c.sqA, B: c.sqPrev, D: c.dir}
	if d.cfg.PredictionType == "v_prediction" { // ε = √ᾱ·m + √(1−ᾱ)·x
		l.P, l.Q, l.R = c.sqA, -c.sqB, 1
		l.A, l.D = mul32(c.dir, c.sqB), mul32(c.dir, c.sqA)
	}
	if d.cfg.ClipSample {
		l.Clip = float32(d.cfg.ClipSampleRange)
	}
	if d.cfg.Eta > 0 {
		l.N, l.Noise = c.std, true
	}
	return l
}
