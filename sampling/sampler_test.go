package sampling

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/pyjson"
	"github.com/gophotomaker/photomaker/sampling/rng"
)

// schedCase is a scheduler entry of cases.json. cases.json holds Python's
// -Infinity (lambda_min_clipped), which encoding/json (and so golden.Cases)
// rejects, so these tests read the file themselves.
type schedCase struct {
	Name           string            `json:"name"`
	Kind           string            `json:"kind"`
	Outputs        map[string]string `json:"outputs"`
	Inputs         map[string]any    `json:"inputs"`
	InitNoiseSigma *float64          `json:"init_noise_sigma"`
	Config         json.RawMessage   `json:"scheduler_config"`
}

func schedulerCases(t *testing.T) []schedCase {
	t.Helper()
	b, err := os.ReadFile(golden.Path("golden/cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	b = pyjson.Sanitize(b)
	var m struct {
		Cases []json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var out []schedCase
	for _, raw := range m.Cases {
		var c schedCase
		var kind struct{ Kind string }
		if json.Unmarshal(raw, &kind); kind.Kind != "scheduler" && kind.Kind != "scheduler_loop" {
			continue
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("case: %v", err)
		}
		out = append(out, c)
	}
	if len(out) != 30 {
		t.Fatalf("found %d scheduler cases, want 30", len(out))
	}
	return out
}

// samplerName maps a case name (scheduler.<family>.…) to a registry name.
func samplerName(c schedCase) string {
	fam := strings.Split(c.Name, ".")[1]
	if fam == "euler_ancestral" {
		return "euler_a"
	}
	return fam
}

func caseSampler(t *testing.T, c schedCase, steps int, noise NoiseSource) Sampler {
	t.Helper()
	cfg, err := ParseConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(samplerName(c), cfg, steps, noise)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func goldenTimesteps(t *testing.T, ref string) []float32 {
	t.Helper()
	file, name, _ := strings.Cut(ref, ":")
	info, _ := golden.File(t, file).Tensor(name)
	if info.DType == "I64" {
		iv := golden.Int64(t, ref)
		out := make([]float32, len(iv))
		for i, v := range iv {
			out[i] = float32(v)
		}
		return out
	}
	return golden.Ref(t, ref).Data
}

func TestSchedulerGoldens(t *testing.T) {
	for _, c := range schedulerCases(t) {
		if c.Kind != "scheduler" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			parts := strings.Split(c.Name, ".")
			var steps int
			if err := json.Unmarshal([]byte(parts[len(parts)-1]), &steps); err != nil {
				t.Fatal(err)
			}
			s := caseSampler(t, c, steps, rng.NewTorchCPU(0))
			wantT := goldenTimesteps(t, c.Outputs["timesteps"])
			gotT := f32s(s.Timesteps())
			if len(gotT) != len(wantT) {
				t.Fatalf("%d timesteps, want %d", len(gotT), len(wantT))
			}
			for i := range wantT {
				if gotT[i] != wantT[i] {
					t.Fatalf("timesteps = %v\nwant %v", gotT, wantT)
				}
			}
			if ref, ok := c.Outputs["sigmas"]; ok {
				want := golden.Ref(t, ref).Data
				golden.AssertClose(t, "sigmas", f32s(s.Sigmas()), want, 0, 1e-6)
			}
			if c.InitNoiseSigma != nil {
				if got := s.InitNoiseSigma(); float32(got) != float32(*c.InitNoiseSigma) {
					t.Fatalf("init_noise_sigma %v, want %v", got, *c.InitNoiseSigma)
				}
			}
		})
	}
}

// rowNoise replays recorded noise draws one row per call.
type rowNoise struct {
	data []float32
	next int
}

func (r *rowNoise) Normal(n int) []float32 {
	out := r.data[r.next : r.next+n]
	r.next += n
	return out
}

func toyEps(xin []float32, t float64) []float32 {
	// eps = 0.5*tanh(x_in) + 0.1*sin(float32(t)/100)
	b := float32(0.1 * float64(float32(math.Sin(float64(float32(t)/100)))))
	out := make([]float32, len(xin))
	for i, v := range xin {
		out[i] = float32(0.5*float64(float32(math.Tanh(float64(v))))) + b
	}
	return out
}

func TestSchedulerLoops(t *testing.T) {
	for _, c := range schedulerCases(t) {
		if c.Kind != "scheduler_loop" {
			continue
		}
		for _, noiseKind := range []string{"golden", "rng"} {
			name := samplerName(c)
			if noiseKind == "rng" && name != "euler_a" {
				continue
			}
			t.Run(c.Name+"/"+noiseKind, func(t *testing.T) {
				var noise NoiseSource
				if ref, ok := c.Outputs["step_noise"]; ok {
					if noiseKind == "golden" {
						noise = &rowNoise{data: golden.Ref(t, ref).Data}
					} else {
						// The pipeline's path: the torch-compatible CPU
						// generator seeded like the reference loop.
						noise = rng.NewTorchCPU(uint64(c.Inputs["step_generator_seed"].(float64)))
					}
				}
				s := caseSampler(t, c, 20, noise)
				wantT := goldenTimesteps(t, c.Outputs["timesteps"])
				gotT := f32s(s.Timesteps())
				for i := range wantT {
					if gotT[i] != wantT[i] {
						t.Fatalf("timesteps = %v\nwant %v", gotT, wantT)
					}
				}
				x0 := golden.Ref(t, c.Inputs["x0"].(string)).Data
				n := len(x0)
				ins := golden.Ref(t, c.Outputs["model_inputs"]).Data
				outs := golden.Ref(t, c.Outputs["model_outputs"]).Data
				traj := golden.Ref(t, c.Outputs["latents_trajectory"]).Data
				x := Scale(x0, s.InitNoiseSigma())
				var worstIn, worstOut, worstTraj float64
				worstTraj = golden.MaxAbsDiff(t, x, traj[:n])
				golden.AssertClose(t, "trajectory[0]", x, traj[:n], 1e-5, 0)
				for i, ts := range s.Timesteps() {
					xin := s.ScaleModelInput(x, i)
					golden.AssertClose(t, "model_input", xin, ins[i*n:(i+1)*n], 1e-5, 0)
					eps := toyEps(xin, ts)
					golden.AssertClose(t, "model_output", eps, outs[i*n:(i+1)*n], 1e-5, 0)
					x = s.Step(i, eps, x)
					golden.AssertClose(t, "trajectory", x, traj[(i+1)*n:(i+2)*n], 1e-5, 0)
					worstIn = math.Max(worstIn, golden.MaxAbsDiff(t, xin, ins[i*n:(i+1)*n]))
					worstOut = math.Max(worstOut, golden.MaxAbsDiff(t, eps, outs[i*n:(i+1)*n]))
					worstTraj = math.Max(worstTraj, golden.MaxAbsDiff(t, x, traj[(i+1)*n:(i+2)*n]))
				}
				t.Logf("max abs diff over 20 steps: model_inputs %.3g, model_outputs %.3g, trajectory %.3g", worstIn, worstOut, worstTraj)
			})
		}
	}
}

// TestSchedulerStepsBitwise feeds each step the reference's own sample and
// model output: every scale_model_input and step result must then match
// diffusers bit for bit (the loop test above accumulates the small
// differences of Go's tanh/sin in the toy model).
func TestSchedulerStepsBitwise(t *testing.T) {
	for _, c := range schedulerCases(t) {
		if c.Kind != "scheduler_loop" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			var noise NoiseSource
			if ref, ok := c.Outputs["step_noise"]; ok {
				noise = &rowNoise{data: golden.Ref(t, ref).Data}
			}
			s := caseSampler(t, c, 20, noise)
			ins := golden.Ref(t, c.Outputs["model_inputs"]).Data
			outs := golden.Ref(t, c.Outputs["model_outputs"]).Data
			traj := golden.Ref(t, c.Outputs["latents_trajectory"]).Data
			n := len(ins) / 20
			x0 := golden.Ref(t, c.Inputs["x0"].(string)).Data
			bitwise(t, "trajectory[0]", Scale(x0, s.InitNoiseSigma()), traj[:n])
			for i := 0; i < 20; i++ {
				x := traj[i*n : (i+1)*n]
				bitwise(t, "model_input", s.ScaleModelInput(x, i), ins[i*n:(i+1)*n])
				bitwise(t, "step", s.Step(i, outs[i*n:(i+1)*n], x), traj[(i+1)*n:(i+2)*n])
			}
		})
	}
}

func bitwise(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for k := range want {
		if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
			t.Fatalf("%s: element %d = %g, want %g (not bitwise equal)", what, k, got[k], want[k])
		}
	}
}

func TestEulerAncestralNoiseFromTorchCPU(t *testing.T) {
	// diffusers draws the ancestral noise with randn_tensor on the step
	// generator (CPU, seed 2035): rng.TorchCPU must replay it exactly.
	want := golden.Ref(t, "schedulers:euler_ancestral.loop.step_noise").Data
	g := rng.NewTorchCPU(2035)
	n := len(want) / 20
	for i := 0; i < 20; i++ {
		bitwise(t, "step_noise", g.Normal(n), want[i*n:(i+1)*n])
	}
}

func TestNewErrors(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name  string
		steps int
		noise NoiseSource
		cfg   Config
	}{
		{"euler", 0, nil, cfg},
		{"ddim", -3, nil, cfg},
		{"heun", 20, nil, cfg},
		{"euler_a", 20, nil, cfg}, // needs noise
		{"euler", 1001, nil, cfg},
		{"euler", 20, nil, func() Config { c := cfg; c.PredictionType = "sample"; return c }()},
		{"euler", 20, nil, func() Config { c := cfg; c.TimestepSpacing = "cosine"; return c }()},
	} {
		if _, err := New(tc.name, tc.cfg, tc.steps, tc.noise); err == nil {
			t.Errorf("New(%q, steps %d) succeeded, want an error", tc.name, tc.steps)
		} else {
			t.Logf("New(%q, %d): %v", tc.name, tc.steps, err)
		}
	}
	for _, name := range append(Names(), "Euler_Ancestral", "DPM++_2M_Karras", "EulerDiscreteScheduler") {
		if _, err := New(name, cfg, 4, rng.NewTorchCPU(1)); err != nil {
			t.Errorf("New(%q): %v", name, err)
		}
	}
}

func TestParseConfigSDXL(t *testing.T) {
	cfg, err := LoadConfig(golden.Path("tiny-sdxl-configs/scheduler.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NumTrainTimesteps != 1000 || cfg.BetaStart != 0.00085 || cfg.BetaEnd != 0.012 ||
		cfg.BetaSchedule != "scaled_linear" || cfg.StepsOffset != 1 || cfg.TimestepSpacing != "leading" ||
		cfg.PredictionType != "epsilon" || cfg.UseKarrasSigmas || cfg.SetAlphaToOne || cfg.ClipSample {
		t.Fatalf("unexpected config %+v", cfg)
	}
	// Python's -Infinity must parse.
	if _, err := ParseConfig([]byte(`{"lambda_min_clipped": -Infinity, "beta_schedule": "scaled_linear"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig([]byte(`{"beta_schedule": "squaredcos_cap_v2"}`)); err == nil {
		t.Fatal("unsupported beta schedule accepted")
	}
}

func TestDPMReset(t *testing.T) {
	// Running the same sampler twice gives the same result (history reset
	// at step 0).
	s, _ := New("dpmpp_2m", DefaultConfig(), 6, nil)
	x0 := []float32{1, -2, 0.5, 3}
	run := func() []float32 {
		x := Scale(x0, s.InitNoiseSigma())
		for i, ts := range s.Timesteps() {
			x = s.Step(i, toyEps(s.ScaleModelInput(x, i), ts), x)
		}
		return x
	}
	a, b := run(), run()
	bitwise(t, "rerun", a, b)
}

func TestCFG(t *testing.T) {
	u := []float32{1, 2, 3}
	c := []float32{2, 2, 1}
	got := CFG(u, c, 5)
	want := []float32{6, 2, -7}
	bitwise(t, "cfg", got, want)
	same := RescaleCFG(got, c, 1, 0)
	bitwise(t, "rescale phi=0", same, got)
	// phi = 1: the result has the conditional prediction's std.
	g := []float32{1, 3, 5, 7, -1, -3, -5, -7}
	cond := []float32{0, 1, 0, 1, 2, 2, 4, 4}
	r := RescaleCFG(g, cond, 2, 1)
	for b := 0; b < 2; b++ {
		if d := math.Abs(std(r[b*4:(b+1)*4]) - std(cond[b*4:(b+1)*4])); d > 1e-6 {
			t.Fatalf("sample %d: std %g, want %g", b, std(r[b*4:(b+1)*4]), std(cond[b*4:(b+1)*4]))
		}
	}
	// phi = 0.7 blends: 0.7·rescaled + 0.3·guided.
	r7 := RescaleCFG(g[:4], cond[:4], 1, 0.7)
	ratio := std(cond[:4]) / std(g[:4])
	for i := range r7 {
		want := 0.7*float64(g[i])*ratio + 0.3*float64(g[i])
		if math.Abs(float64(r7[i])-want) > 1e-6 {
			t.Fatalf("phi 0.7: %v", r7)
		}
	}
}

func TestEulerKarrasShape(t *testing.T) {
	// No golden: check the schedule's shape against the non-Karras one.
	k, err := New("euler_karras", DefaultConfig(), 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New("euler", DefaultConfig(), 20, nil)
	ks, es := k.Sigmas(), e.Sigmas()
	if float32(ks[0]) != float32(es[0]) || float32(ks[19]) != float32(es[19]) || ks[20] != 0 {
		t.Fatalf("karras endpoints %g..%g, want %g..%g", ks[0], ks[19], es[0], es[19])
	}
	ts := k.Timesteps()
	for i := 1; i < 20; i++ {
		if !(ks[i] < ks[i-1]) || !(ts[i] < ts[i-1]) {
			t.Fatalf("not decreasing at %d: sigmas %v timesteps %v", i, ks, ts)
		}
	}
	if math.Abs(ts[0]-e.Timesteps()[0]) > 1e-3 || math.Abs(ts[19]-1) > 1e-3 {
		t.Fatalf("karras timesteps %v", ts)
	}
}
