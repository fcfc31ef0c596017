// Package sampling implements the noise schedules and samplers of the
// PhotoMaker/SDXL pipeline with the step semantics of HF diffusers'
// schedulers, down to their dtypes: float32 where diffusers computes on
// float32 torch tensors (betas, alphas_cumprod, sigmas, every step), float64
// where it computes in NumPy float64 (sigma interpolation, Karras sigmas,
// sigma→timestep inversion).
//
// Samplers: "euler" (EulerDiscreteScheduler, the SDXL default), "euler_a"
// (EulerAncestralDiscreteScheduler), "dpmpp_2m" (DPMSolverMultistepScheduler,
// dpmsolver++, solver_order 2, midpoint, lower_order_final), "ddim"
// (DDIMScheduler); "dpmpp_2m_karras" and "euler_karras" switch on
// use_karras_sigmas. A typical loop:
//
//	s, _ := sampling.New("euler", cfg, steps, noise)
//	x := sampling.Scale(initialNoise, s.InitNoiseSigma())
//	for i, t := range s.Timesteps() {
//		eps := unet(s.ScaleModelInput(x, i), t)
//		x = s.Step(i, eps, x)
//	}
package sampling

import (
	"fmt"
	"sort"
	"strings"
)

// NoiseSource draws standard normal float32 noise; Normal(n) must behave
// like one torch.randn call of n elements (rng.Source satisfies it).
type NoiseSource interface {
	Normal(n int) []float32
}

// Sampler is one configured sampling run of a fixed number of steps. Step
// must be called for i = 0, 1, ..., Steps()-1 in order (multistep samplers
// keep history).
type Sampler interface {
	// Name is the sampler's registry name.
	Name() string
	// Steps is the number of denoising steps.
	Steps() int
	// Timesteps are the UNet timesteps, one per step (float32 values for
	// the Euler family, integers for DPM++ and DDIM).
	Timesteps() []float64
	// Sigmas are the Karras sigmas of the steps plus the final one
	// (Steps()+1 values); nil for DDIM, which works on alphas_cumprod.
	Sigmas() []float64
	// InitNoiseSigma is the factor for the initial N(0,1) latent.
	InitNoiseSigma() float64
	// ScaleModelInput returns the UNet input for step i (a new slice, or x
	// itself when the sampler does not scale).
	ScaleModelInput(x []float32, i int) []float32
	// Step returns the sample after step i given the model output for
	// ScaleModelInput(sample, i). sample is not modified.
	Step(i int, modelOutput, sample []float32) []float32
	// Linear is step i as coefficients of whole-tensor sums (see Linear),
	// for a device that runs the loop without the host. Steps must still
	// run in order: DPM++ 2M's prev is the x0 of step i-1.
	Linear(i int) Linear
}

type constructor func(cfg Config, steps int, noise NoiseSource) (Sampler, error)

var registry = map[string]constructor{
	"euler": func(c Config, n int, _ NoiseSource) (Sampler, error) { return newEuler(c, n) },
	"euler_karras": func(c Config, n int, _ NoiseSource) (Sampler, error) {
		c.UseKarrasSigmas = true
		return newEuler(c, n)
	},
	"euler_a":  newEulerAncestral,
	"dpmpp_2m": func(c Config, n int, _ NoiseSource) (Sampler, error) { return newDPMPP2M(c, n) },
	"dpmpp_2m_karras": func(c Config, n int, _ NoiseSource) (Sampler, error) {
		c.UseKarrasSigmas = true
		return newDPMPP2M(c, n)
	},
	"ddim": newDDIM,
}

var aliases = map[string]string{
	"euler_discrete":                  "euler",
	"eulerdiscretescheduler":          "euler",
	"euler_ancestral":                 "euler_a",
	"eulerancestraldiscretescheduler": "euler_a",
	"dpm++_2m":                        "dpmpp_2m",
	"dpmsolvermultistepscheduler":     "dpmpp_2m",
	"dpm++_2m_karras":                 "dpmpp_2m_karras",
	"ddimscheduler":                   "ddim",
}

// Names lists the sampler names New accepts (aliases aside).
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Known returns nil for a sampler name New accepts, or the error New would
// give: for checking a request before it waits in a queue.
func Known(name string) error {
	key := strings.ToLower(strings.TrimSpace(name))
	if a, ok := aliases[key]; ok {
		key = a
	}
	if _, ok := registry[key]; !ok {
		return fmt.Errorf("sampling: unknown sampler %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return nil
}

// New builds the named sampler for steps denoising steps. noise is needed
// only by stochastic samplers (euler_a, ddim with Eta > 0) and may be nil
// otherwise. cfg.UseKarrasSigmas selects Karras sigmas for euler and
// dpmpp_2m (the *_karras names set it too).
func New(name string, cfg Config, steps int, noise NoiseSource) (Sampler, error) {
	if err := Known(name); err != nil {
		return nil, err
	}
	key := strings.ToLower(strings.TrimSpace(name))
	if a, ok := aliases[key]; ok {
		key = a
	}
	ctor := registry[key]
	if steps <= 0 {
		return nil, fmt.Errorf("sampling: %s: steps must be positive, got %d", key, steps)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if steps > cfg.NumTrainTimesteps {
		return nil, fmt.Errorf("sampling: %s: %d steps exceed the %d train timesteps", key, steps, cfg.NumTrainTimesteps)
	}
	return ctor(cfg, steps, noise)
}

// Scale returns x·s in float32 (the initial latent is noise·InitNoiseSigma).
func Scale(x []float32, s float64) []float32 {
	f := float32(s)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = mul32(v, f)
	}
	return out
}

func checkLens(name string, i, steps int, a, b []float32) {
	if i < 0 || i >= steps {
		panic(fmt.Sprintf("sampling: %s: step %d out of range [0,%d)", name, i, steps))
	}
	if len(a) != len(b) {
		panic(fmt.Sprintf("sampling: %s: model output has %d elements, sample %d", name, len(a), len(b)))
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
