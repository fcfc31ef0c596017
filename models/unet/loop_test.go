package unet

import (
	"context"
	"math"
	"testing"

	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/sampling/rng"
	"github.com/stretchr/testify/require"
)

// loopCase is one sampler configuration for the device loop tests.
type loopCase struct {
	sampler  string
	edit     func(*sampling.Config)
	guidance float64
}

var loopCases = []loopCase{
	{"euler", nil, 5},
	{"euler", nil, 1},
	{"euler_a", nil, 7.5},
	{"dpmpp_2m", nil, 5},
	{"ddim", func(c *sampling.Config) { c.ClipSample, c.ClipSampleRange, c.Eta = true, 1.5, 0.5 }, 3},
	{"euler", func(c *sampling.Config) { c.PredictionType = "v_prediction" }, 5},
}

// hostLoop is the sampler loop with the host in the middle of every step:
// the Stepper's prediction on smp's model input, guidance in Go, then
// update(i, m, x).
func hostLoop(t *testing.T, u *UNet, lc loopCase, in Inputs, x []float32, smp sampling.Sampler,
	update func(i int, m, x []float32) []float32) []float32 {
	t.Helper()
	st, err := u.NewStepper(in)
	require.NoError(t, err)
	defer st.Close()
	for i, ts := range smp.Timesteps() {
		xin := smp.ScaleModelInput(x, i)
		in.Sample = xin
		if lc.guidance > 1 {
			in.Sample = append(append([]float32{}, xin...), xin...)
		}
		for b := range in.Timesteps {
			in.Timesteps[b] = float32(ts)
		}
		out, err := st.Predict(context.Background(), in)
		require.NoError(t, err)
		m := out
		if lc.guidance > 1 {
			m = sampling.CFG(out[:len(x)], out[len(x):], lc.guidance)
		}
		x = update(i, m, x)
	}
	return x
}

// TestLoopMatchesHostLoop runs each sampler's loop on the (CPU) device and
// on the host. With the host applying the same coefficients
// (sampling.Linear.Apply) the latents agree bit for bit, which checks the
// graph's wiring: guidance, every update term, the history and the noise.
// With the host running the samplers' own Step (diffusers' arithmetic) they
// agree to float32 rounding.
func TestLoopMatchesHostLoop(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	const w, h, nsteps = 8, 6, 4
	for _, lc := range loopCases {
		name := lc.sampler
		if lc.edit != nil {
			name += "+config"
		}
		t.Run(name, func(t *testing.T) {
			cfg := sampling.DefaultConfig()
			if lc.edit != nil {
				lc.edit(&cfg)
			}
			newSampler := func() sampling.Sampler {
				smp, err := sampling.New(lc.sampler, cfg, nsteps, rng.NewTorchCPU(11))
				require.NoError(t, err)
				return smp
			}
			batch := 1
			if lc.guidance > 1 {
				batch = 2
			}
			in := randInputs(s, w, h, batch)
			smp := newSampler()
			x := sampling.Scale(in.Sample[:w*h*s.in], smp.InitNoiseSigma())
			lin := sampling.LinearSteps(smp)

			loop, err := u.NewLoop(LoopInputs{Width: w, Height: h, Latents: x, Guidance: lc.guidance,
				Conditionings: []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}}, Steps: lin})
			require.NoError(t, err)
			defer loop.Close()
			noise := rng.NewTorchCPU(11)
			for i, ts := range smp.Timesteps() {
				var nz []float32
				if lin[i].Noise {
					nz = noise.Normal(len(x))
				}
				require.NoError(t, loop.Step(context.Background(), float32(ts), lin[i], nz))
			}
			got := loop.Latents()

			hostNoise := rng.NewTorchCPU(11)
			var prev []float32
			applied := hostLoop(t, u, lc, in, x, smp, func(i int, m, x []float32) []float32 {
				var nz []float32
				if lin[i].Noise {
					nz = hostNoise.Normal(len(x))
				}
				var next []float32
				next, prev = lin[i].Apply(x, m, prev, nz)
				return next
			})
			require.Equal(t, applied, got, "device loop vs Linear.Apply on the host")

			ref := newSampler()
			stepped := hostLoop(t, u, lc, in, x, ref, func(i int, m, x []float32) []float32 {
				return ref.Step(i, m, x)
			})
			var worst, scale float64
			for k := range got {
				worst = math.Max(worst, math.Abs(float64(got[k]-stepped[k])))
				scale = math.Max(scale, math.Abs(float64(stepped[k])))
			}
			t.Logf("max |loop − Step loop| = %.3g (values up to %.3g)", worst, scale)
			require.LessOrEqual(t, worst, 1e-5*scale)
		})
	}
}

// A loop's state is its own: two loops on one UNet do not disturb each
// other, and a step whose terms the graph lacks is refused.
func TestLoopErrors(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	in := randInputs(s, 4, 4, 1)
	smp, err := sampling.New("euler", sampling.DefaultConfig(), 2, nil)
	require.NoError(t, err)
	lin := sampling.LinearSteps(smp)
	loop, err := u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 1,
		Conditionings: []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}}, Steps: lin})
	require.NoError(t, err)
	defer loop.Close()
	var ie *InputError
	dpm := lin[0]
	dpm.C = 0.5
	require.ErrorAs(t, loop.Step(context.Background(), 999, dpm, nil), &ie)
	_, err = u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 5,
		Conditionings: []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}}, Steps: lin})
	require.ErrorAs(t, err, &ie, "CFG needs two batch elements of conditioning")
	cond := Conditioning{in.Context, in.TextEmbeds, in.TimeIDs}
	_, err = u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 1, Conditionings: []Conditioning{cond}})
	require.ErrorAs(t, err, &ie, "no steps")
	_, err = u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 1, Steps: lin})
	require.ErrorAs(t, err, &ie, "no conditioning")
	longer := cond
	longer.Context = append(append([]float32{}, cond.Context...), cond.Context...)
	_, err = u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 1,
		Conditionings: []Conditioning{cond, longer}, Steps: lin})
	require.ErrorAs(t, err, &ie, "conditionings shaped differently")
	require.ErrorAs(t, loop.UseConditioning(1), &ie, "only one conditioning")
}

// A loop switching conditionings (to a stashed one, and back to the first,
// whose keys and values are computed again) matches the host loop that
// feeds the Stepper each step's conditioning, bit for bit.
func TestLoopSwitchesConditioning(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	const w, h = 8, 6
	in := randInputs(s, w, h, 2)
	other := Conditioning{Context: make([]float32, len(in.Context)), Pooled: make([]float32, len(in.TextEmbeds)), TimeIDs: in.TimeIDs}
	for i, v := range in.Context {
		other.Context[i] = 0.5 - v
	}
	for i, v := range in.TextEmbeds {
		other.Pooled[i] = -v
	}
	conds := []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}, other}
	use := []int{0, 1, 1, 0}
	smp, err := sampling.New("euler", sampling.DefaultConfig(), len(use), nil)
	require.NoError(t, err)
	lin := sampling.LinearSteps(smp)
	x := sampling.Scale(in.Sample[:w*h*s.in], smp.InitNoiseSigma())
	start := x

	loop, err := u.NewLoop(LoopInputs{Width: w, Height: h, Latents: x, Guidance: 5, Conditionings: conds, Steps: lin})
	require.NoError(t, err)
	defer loop.Close()
	for i, ts := range smp.Timesteps() {
		require.NoError(t, loop.UseConditioning(use[i]))
		require.NoError(t, loop.Step(context.Background(), float32(ts), lin[i], nil))
	}
	got := loop.Latents()
	var held int64
	for _, kv := range loop.kv {
		held += kv.K.Bytes() + kv.V.Bytes()
	}
	require.Equal(t, CrossKVBytes(genUNet(t, s, nil), "unet.", 77, 2, u.rt.Attn.KVType), held, "the planner's figure for one conditioning")

	st, err := u.NewStepper(in)
	require.NoError(t, err)
	defer st.Close()
	var prev []float32
	for i, ts := range smp.Timesteps() {
		xin := smp.ScaleModelInput(x, i)
		in.Sample = append(append([]float32{}, xin...), xin...)
		in.Timesteps = []float32{float32(ts), float32(ts)}
		in.Context, in.TextEmbeds = conds[use[i]].Context, conds[use[i]].Pooled
		out, err := st.Predict(context.Background(), in)
		require.NoError(t, err)
		x, prev = lin[i].Apply(x, sampling.CFG(out[:len(x)], out[len(x):], 5), prev, nil)
	}
	require.Equal(t, x, got)

	// The next image of a batch reuses the loop from its first conditioning.
	require.NoError(t, loop.Restart(start))
	for i, ts := range smp.Timesteps() {
		require.NoError(t, loop.UseConditioning(use[i]))
		require.NoError(t, loop.Step(context.Background(), float32(ts), lin[i], nil))
	}
	require.Equal(t, got, loop.Latents(), "after Restart")
}

// Wherever Load puts the cross-attentions' key and value projections, a
// loop's latents are the same: in host memory they leave the device's
// buffer, and kept apart they can be freed once the loop has its keys and
// values, after which nothing can project a text context any more.
func TestCrossKVPlacement(t *testing.T) {
	s := smallSpec()
	set := genUNet(t, s, nil)
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	defer rt.Close()
	in := randInputs(s, 8, 6, 2)
	smp, err := sampling.New("euler", sampling.DefaultConfig(), 2, nil)
	require.NoError(t, err)
	lin := sampling.LinearSteps(smp)
	projections := nn.EstimateBytesOf(weightSet(t, set, nil), "unet.", nil, IsCrossKVWeight)
	stored := nn.EstimateBytes(weightSet(t, set, nil), "unet.", nil)
	require.Positive(t, projections)
	run := func(place CrossKVPlacement) []float32 {
		u, err := Load(context.Background(), rt, set, "unet.", Options{CrossKV: place})
		require.NoError(t, err)
		defer u.Close()
		require.Equal(t, stored, u.w.Allocated())
		loopIn := LoopInputs{Width: 8, Height: 6, Latents: in.Sample[:8*6*s.in], Guidance: 5,
			Conditionings: []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}}, Steps: lin}
		loop, err := u.NewLoop(loopIn)
		require.NoError(t, err)
		defer loop.Close()
		u.FreeCrossKV()
		switch place {
		case CrossKVWithUNet:
			require.Zero(t, u.w.ApartBytes())
		case CrossKVInHost:
			require.Equal(t, projections, u.w.ApartBytes(), "kept in host memory, not freed")
		case CrossKVFreeable:
			require.Zero(t, u.w.ApartBytes())
			require.Equal(t, stored-projections, u.w.Allocated())
			var ie *InputError
			_, err := u.NewLoop(loopIn)
			require.ErrorAs(t, err, &ie)
			_, err = u.Predict(context.Background(), in)
			require.ErrorAs(t, err, &ie)
		}
		for i, ts := range smp.Timesteps() {
			require.NoError(t, loop.Step(context.Background(), float32(ts), lin[i], nil))
		}
		return loop.Latents()
	}
	want := run(CrossKVWithUNet)
	require.Equal(t, want, run(CrossKVInHost))
	require.Equal(t, want, run(CrossKVFreeable))
}

// Loops and steppers are marked for CUDA graph capture only when asked
// (CUDAGraphsEnv), and never with streamed weights.
func TestStepCaptureByEnv(t *testing.T) {
	s := smallSpec()
	u := loadSmall(t, s)
	in := randInputs(s, 4, 4, 1)
	smp, err := sampling.New("euler", sampling.DefaultConfig(), 2, nil)
	require.NoError(t, err)
	replays := func() (loop, stepper bool) {
		l, err := u.NewLoop(LoopInputs{Width: 4, Height: 4, Latents: in.Sample, Guidance: 1,
			Conditionings: []Conditioning{{in.Context, in.TextEmbeds, in.TimeIDs}}, Steps: sampling.LinearSteps(smp)})
		require.NoError(t, err)
		defer l.Close()
		st, err := u.NewStepper(in)
		require.NoError(t, err)
		defer st.Close()
		return l.g.Replay, st.g.Replay
	}
	l, st := replays()
	require.False(t, l || st, "off by default")
	t.Setenv(CUDAGraphsEnv, "1")
	l, st = replays()
	require.True(t, l && st)
	require.False(t, capturesSteps(true), "streamed weights")
}
