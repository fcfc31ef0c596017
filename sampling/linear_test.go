package sampling

import (
	"math"
	"slices"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// TestLinearLoopsMatchDiffusers runs diffusers' reference loops (toy model,
// recorded noise) through Linear.Apply instead of Step: the device form of
// every sampler must follow the same trajectories within the tolerance the
// Step loops are held to.
func TestLinearLoopsMatchDiffusers(t *testing.T) {
	for _, c := range schedulerCases(t) {
		if c.Kind != "scheduler_loop" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			noise := &rowNoise{}
			if ref, ok := c.Outputs["step_noise"]; ok {
				noise.data = golden.Ref(t, ref).Data
			}
			s := caseSampler(t, c, 20, noise)
			ins := golden.Ref(t, c.Outputs["model_inputs"]).Data
			traj := golden.Ref(t, c.Outputs["latents_trajectory"]).Data
			x0 := golden.Ref(t, c.Inputs["x0"].(string)).Data
			n := len(x0)
			x := Scale(x0, s.InitNoiseSigma())
			var prev []float32
			for i, ts := range s.Timesteps() {
				l := s.Linear(i)
				xin := make([]float32, n)
				for k, v := range x {
					xin[k] = v / l.S
				}
				golden.AssertClose(t, "model_input", xin, ins[i*n:(i+1)*n], 1e-5, 0)
				var nz []float32
				if l.Noise {
					nz = noise.Normal(n)
				}
				x, prev = l.Apply(x, toyEps(xin, ts), prev, nz)
				golden.AssertClose(t, "trajectory", x, traj[(i+1)*n:(i+2)*n], 1e-5, 0)
			}
			if noise.next != len(noise.data) {
				t.Fatalf("drew %d of %d recorded noise values", noise.next, len(noise.data))
			}
		})
	}
}

// countingNoise is deterministic noise that counts its draws.
type countingNoise struct{ draws int }

func (c *countingNoise) Normal(n int) []float32 {
	c.draws++
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(math.Sin(float64(c.draws*1000 + i)))
	}
	return out
}

// TestLinearMatchesStep covers the configurations the reference loops do
// not (v-prediction, clipping, DDIM eta, Karras Euler, trailing spacing):
// from the same sample and model output, Apply gives Step's result to
// float32 rounding and draws noise exactly when Step does.
func TestLinearMatchesStep(t *testing.T) {
	type variant struct {
		sampler string
		edit    func(*Config)
	}
	vpred := func(c *Config) { c.PredictionType = "v_prediction" }
	variants := []variant{
		{"euler", nil}, {"euler", vpred}, {"euler_karras", nil},
		{"euler", func(c *Config) { c.TimestepSpacing, c.FinalSigmasType = "trailing", "sigma_min" }},
		{"euler_a", nil}, {"euler_a", vpred},
		{"dpmpp_2m", nil}, {"dpmpp_2m", vpred}, {"dpmpp_2m_karras", nil},
		{"dpmpp_2m", func(c *Config) { c.FinalSigmasType = "sigma_min" }},
		{"ddim", nil}, {"ddim", vpred},
		{"ddim", func(c *Config) { c.ClipSample, c.ClipSampleRange, c.Eta = true, 0.5, 0.7 }},
		{"ddim", func(c *Config) { vpred(c); c.SetAlphaToOne, c.Eta = true, 1 }},
	}
	for _, steps := range []int{4, 20} {
		for _, v := range variants {
			cfg := DefaultConfig()
			if v.edit != nil {
				v.edit(&cfg)
			}
			stepNoise, linNoise := &countingNoise{}, &countingNoise{}
			s, err := New(v.sampler, cfg, steps, stepNoise)
			if err != nil {
				t.Fatal(err)
			}
			lin, _ := New(v.sampler, cfg, steps, linNoise)
			const n = 64
			x := make([]float32, n)
			for k := range x {
				x[k] = float32(math.Cos(float64(k))) * float32(s.InitNoiseSigma())
			}
			var prev []float32
			for i, ts := range s.Timesteps() {
				l := lin.Linear(i)
				xin := s.ScaleModelInput(x, i)
				for k := range xin {
					if xin[k] != x[k]/l.S {
						t.Fatalf("%s %+v step %d: model input %g, Linear gives %g", v.sampler, cfg, i, xin[k], x[k]/l.S)
					}
				}
				m := toyEps(xin, ts)
				want := s.Step(i, m, x)
				var nz []float32
				if l.Noise {
					nz = linNoise.Normal(n)
				}
				got, x0 := l.Apply(x, m, prev, nz)
				if stepNoise.draws != linNoise.draws {
					t.Fatalf("%s step %d: Step drew noise %d times, Linear %d", v.sampler, i, stepNoise.draws, linNoise.draws)
				}
				scale := 0.0
				for _, w := range want {
					scale = math.Max(scale, math.Abs(float64(w)))
				}
				for k := range want {
					if d := math.Abs(float64(got[k] - want[k])); d > 2e-6*scale+1e-7 {
						t.Fatalf("%s %+v, %d steps, step %d element %d: Apply %g, Step %g", v.sampler, cfg, steps, i, k, got[k], want[k])
					}
				}
				x, prev = want, x0
			}
		}
	}
}

// Trailing spacing, which few-step distilled models (SDXL-Lightning,
// Hyper-SD) are sampled with: diffusers' np.round(np.arange(1000, 0,
// -1000/n)) − 1 for every sampler family.
func TestTrailingTimesteps(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TimestepSpacing = "trailing"
	want := map[int][]float64{
		4: {999, 749, 499, 249},
		8: {999, 874, 749, 624, 499, 374, 249, 124},
		3: {999, 666, 332}, // 1000, 666.67, 333.33 rounded
	}
	for _, name := range []string{"euler", "euler_a", "dpmpp_2m", "ddim"} {
		for n, ts := range want {
			s, err := New(name, cfg, n, &countingNoise{})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Timesteps(); !slices.Equal(got, ts) {
				t.Errorf("%s, %d steps: timesteps %v, want %v", name, n, got, ts)
			}
		}
	}
}
