package unet

import (
	"context"
	"fmt"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/weights"
)

// Loop runs a whole sampler loop on the UNet's device. The latents, the
// conditioning and the sampler's history live in device memory; one graph
// scales the model input, runs the UNet (both CFG branches as one batch),
// applies guidance and the sampler's update (sampling.Linear) and writes
// the new latents in place. A step uploads only its timestep and a dozen
// coefficients (and, for ancestral samplers, its noise) and reads nothing
// back, so a GPU never waits on the host inside the loop.
//
// Cross-attention's keys and values depend only on the text: they are
// computed once per conditioning, before the first step, rather than in
// every step (SDXL's 140 projections of the text context took 0.5 s of a
// 6.1 s 256² step on a 2-core CPU).
type Loop struct {
	u     *UNet
	g     *nn.Graph
	terms sampling.Terms

	state *ggml.Context // persistent tensors, in buf
	buf   *ggml.Buffer
	x     *ggml.Tensor    // latents [W, H, C, 1]
	prev  *ggml.Tensor    // previous x0 (Terms.Prev)
	cond  [2]*ggml.Tensor // text_embeds and time_ids of the current conditioning
	kv    crossKV         // the current conditioning's keys and values, read by the step

	conds   []Conditioning
	ctxDims [4]int64  // the shape of every conditioning's context
	stashed []crossKV // with several conditionings, each one's keys and values, which UseConditioning copies into kv
	current int       // the conditioning in kv

	coef, timesteps, noise *ggml.Tensor // per-step inputs
	batch                  int
}

// Conditioning is one prompt's conditioning, in PyTorch order.
type Conditioning struct {
	Context []float32 // encoder_hidden_states [B, tokens, ctx]
	Pooled  []float32 // text_embeds [B, pooled]
	TimeIDs []float32 // [B, 6]
}

// LoopInputs shapes a Loop and gives its starting values.
type LoopInputs struct {
	Width, Height int       // latent pixels
	Latents       []float32 // the initial sample [1, C, H, W]
	// Guidance > 1 runs classifier-free guidance: the conditioning then
	// holds two batch elements, [unconditional, conditional], as diffusers
	// orders them.
	Guidance float64
	// Conditionings are the prompts the loop denoises with, all shaped
	// alike. It starts with the first; UseConditioning switches (the
	// PhotoMaker branch moves from the text-only prompt to the ID prompt at
	// its merge step): each one's keys and values are computed up front,
	// and switching copies them within the device. The loop keeps reading
	// these slices: leave them unchanged while it runs.
	Conditionings []Conditioning
	// Steps are the sampler's steps as coefficients (sampling.LinearSteps);
	// the graph holds only the terms some step uses.
	Steps []sampling.Linear
}

// coefficient slots in the per-step input
const (
	cS = iota
	cP
	cQ
	cR
	cA
	cB
	cC
	cD
	cN
	nCoef
)

// NewLoop builds the loop's graph and puts its starting values on the device.
func (u *UNet) NewLoop(in LoopInputs) (*Loop, error) {
	batch := 1
	if in.Guidance > 1 {
		batch = 2
	}
	if len(in.Conditionings) == 0 {
		return nil, &InputError{Msg: "a loop needs a conditioning"}
	}
	var s, cs, te, ti [4]int64
	sample, timesteps := make([]float32, batch*len(in.Latents)), make([]float32, batch) // only their lengths are checked
	for k, cond := range in.Conditionings {
		shapeIn := Inputs{Width: in.Width, Height: in.Height, Batch: batch, Sample: sample,
			Timesteps: timesteps, Context: cond.Context, TextEmbeds: cond.Pooled, TimeIDs: cond.TimeIDs}
		s2, _, cs2, te2, ti2, err := u.shapes(&shapeIn)
		if err != nil {
			return nil, err
		}
		if k > 0 && (cs2 != cs || te2 != te || ti2 != ti) {
			return nil, &InputError{Msg: fmt.Sprintf("conditioning %d is shaped %v, %v, %v; the first %v, %v, %v", k, cs2, te2, ti2, cs, te, ti)}
		}
		s, cs, te, ti = s2, cs2, te2, ti2
	}
	if len(in.Steps) == 0 {
		return nil, &InputError{Msg: "a loop needs at least one step"}
	}
	if u.crossFreed {
		return nil, errCrossFreed
	}
	l := &Loop{u: u, terms: sampling.TermsOf(in.Steps), batch: batch, conds: in.Conditionings, ctxDims: cs, current: -1}
	latent := [4]int64{s[0], s[1], s[2], 1}

	attns := u.m.crossAttentions()
	l.state = ggml.NewContext(4+2*len(attns)*(1+len(in.Conditionings)), 0)
	l.x = l.state.NewTensor(ggml.TypeF32, latent[:]...).SetName("loop.latents")
	if l.terms.Prev {
		l.prev = l.state.NewTensor(ggml.TypeF32, latent[:]...).SetName("loop.prev_x0")
	}
	l.cond = [2]*ggml.Tensor{l.state.NewTensor(ggml.TypeF32, te[:2]...).SetName("loop.text_embeds"),
		l.state.NewTensor(ggml.TypeF32, ti[:2]...).SetName("loop.time_ids")}
	l.kv = l.newCrossKV(attns, "")
	if len(in.Conditionings) > 1 {
		for k := range in.Conditionings {
			l.stashed = append(l.stashed, l.newCrossKV(attns, fmt.Sprint(k)))
		}
	}
	var err error
	if l.buf, err = u.rt.Device.AllocState(l.state); err != nil {
		l.Close()
		return nil, fmt.Errorf("unet: sampler state: %w", err)
	}
	for k := range in.Conditionings {
		if err := l.computeCross(k); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.Restart(in.Latents); err != nil {
		l.Close()
		return nil, err
	}

	var ferr error
	l.g, err = u.rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
		var outs []*ggml.Tensor
		outs, ferr = l.build(c, in.Guidance, latent)
		return outs
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	l.g.Replay = capturesSteps(u.stream)
	return l, nil
}

// newCrossKV declares in the loop's state one key and one value tensor per
// cross-attention, shaped and typed as nn.SplitKV makes them of the
// projected context (found on a scratch context: nothing is computed), for
// the step to read (name "") or to stash a conditioning's (its number).
func (l *Loop) newCrossKV(attns []*attention, name string) crossKV {
	cfg, opt := &l.u.cfg, l.u.rt.Attn
	scratch := ggml.NewContext(8*len(attns), 0)
	defer scratch.Free()
	scratch.SetCPUKernels(l.u.rt.UsesCPUKernels()) // the layouts the step's graph reads
	set := crossKV{}
	for i, a := range attns {
		proj := scratch.NewTensor(ggml.TypeF32, a.ToK.Weight.Ne(1), l.ctxDims[1], l.ctxDims[2])
		like := nn.SplitKV(scratch, proj, proj, a.heads(cfg), opt)
		kt, vt := like.K.Shape(), like.V.Shape()
		set[a] = nn.HeadsKV{
			K: l.state.NewTensor(like.K.Type(), kt[:]...).SetName(fmt.Sprintf("loop.cross%s.k%d", name, i)),
			V: l.state.NewTensor(like.V.Type(), vt[:]...).SetName(fmt.Sprintf("loop.cross%s.v%d", name, i)),

			CPUKernel: like.CPUKernel,
		}
	}
	return set
}

// computeCross computes conditioning k's keys and values into their
// tensors: its stash, or kv when it is the only one.
func (l *Loop) computeCross(k int) error {
	set := l.kv
	if l.stashed != nil {
		set = l.stashed[k]
	}
	cfg, opt := &l.u.cfg, l.u.rt.Attn
	g, err := l.u.rt.PrepareWrites(func(c *ggml.Context) []*ggml.Tensor {
		text := c.InputF32(l.conds[k].Context, l.ctxDims[:3]...)
		var outs []*ggml.Tensor
		for _, a := range l.u.m.crossAttentions() {
			kv := a.keysValues(c, cfg, opt, text)
			outs = append(outs, c.Copy(kv.K, set[a].K), c.Copy(kv.V, set[a].V))
		}
		return outs
	})
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.Compute(context.Background()); err != nil {
		return fmt.Errorf("unet: cross-attention keys and values: %w", err)
	}
	return nil
}

// UseConditioning makes the following steps denoise with conditioning k of
// LoopInputs.Conditionings.
func (l *Loop) UseConditioning(k int) error {
	switch {
	case k < 0 || k >= len(l.conds):
		return &InputError{Msg: fmt.Sprintf("conditioning %d of %d", k, len(l.conds))}
	case k == l.current:
		return nil
	}
	if l.stashed != nil {
		for a, kv := range l.kv {
			from := l.stashed[k][a]
			if err := kv.K.CopyFrom(from.K); err != nil {
				return err
			}
			if err := kv.V.CopyFrom(from.V); err != nil {
				return err
			}
		}
	}
	for i, v := range [2][]float32{l.conds[k].Pooled, l.conds[k].TimeIDs} {
		if err := l.cond[i].SetData(ggml.F32Bytes(v)); err != nil {
			return &InputError{Msg: fmt.Sprintf("conditioning: %v", err)}
		}
	}
	l.current = k
	return nil
}

// Restart starts the loop from initial latents (again for the next image
// of a batch), with the first conditioning: the graph, its buffers and the
// keys and values are reused.
func (l *Loop) Restart(latents []float32) error {
	if err := l.x.SetData(ggml.F32Bytes(latents)); err != nil {
		return &InputError{Msg: fmt.Sprintf("latents: %v", err)}
	}
	if l.prev != nil { // read with a zero coefficient on the first step
		if err := l.prev.SetData(make([]byte, l.prev.Bytes())); err != nil {
			return err
		}
	}
	return l.UseConditioning(0)
}

// build writes the loop body: see Linear for the update's terms.
func (l *Loop) build(c *ggml.Context, guidance float64, latent [4]int64) ([]*ggml.Tensor, error) {
	l.coef = c.InputF32(make([]float32, nCoef), nCoef)
	l.timesteps = c.InputF32(make([]float32, l.batch), int64(l.batch))
	k := func(slot int) *ggml.Tensor { return c.View(l.coef, [4]int64{1, 1, 1, 1}, 4, 4, 4, int64(4*slot)) }

	x := l.x
	xin := c.Div(x, k(cS))
	if l.batch == 2 {
		xin = c.Concat(xin, xin, 3)
	}
	addDim, err := l.u.checkInputs(xin.Shape(), l.timesteps.Shape(), l.ctxDims, l.cond[0].Shape(), l.cond[1].Shape())
	if err != nil {
		return nil, err
	}
	out := l.u.forward(c, xin, l.timesteps, l.kv, l.cond[0], l.cond[1], addDim, nil)
	m := out
	if l.batch == 2 { // uncond + g·(cond − uncond)
		nb1, nb2, nb3 := out.Nb(1), out.Nb(2), out.Nb(3)
		uncond := c.View(out, latent, nb1, nb2, nb3, 0)
		cond := c.View(out, latent, nb1, nb2, nb3, nb3)
		m = c.Add(uncond, c.Scale(c.Sub(cond, uncond), float32(guidance)))
	}

	t := l.terms
	next := c.Mul(x, k(cA))
	var x0 *ggml.Tensor
	if t.X0 {
		x0 = c.Add(c.Mul(x, k(cP)), c.Mul(m, k(cQ)))
		if t.Div {
			x0 = c.Div(x0, k(cR))
		}
		if t.Clip > 0 {
			x0 = c.Clamp(x0, -t.Clip, t.Clip)
		}
		next = c.Add(next, c.Mul(x0, k(cB)))
	}
	if t.Prev {
		next = c.Add(next, c.Mul(c.Sub(x0, l.prev), k(cC)))
	}
	if t.Model {
		next = c.Add(next, c.Mul(m, k(cD)))
	}
	if t.Noise {
		l.noise = c.InputF32(make([]float32, latent[0]*latent[1]*latent[2]), latent[:]...)
		next = c.Add(next, c.Mul(l.noise, k(cN)))
	}
	// Writes come last, in this order: every read of the old latents and
	// of prev is an ancestor of next, and ggml runs a graph in order.
	outs := []*ggml.Tensor{c.Copy(next, l.x)}
	if t.Prev {
		outs = append(outs, c.Copy(x0, l.prev))
	}
	return outs, nil
}

// Step runs step lin at timestep t on the device. noise is a fresh N(0,1)
// draw of the latents' size where lin.Noise says so, else nil.
func (l *Loop) Step(ctx context.Context, t float32, lin sampling.Linear, noise []float32) error {
	coef := make([]float32, nCoef)
	coef[cS], coef[cP], coef[cQ], coef[cR] = lin.S, lin.P, lin.Q, lin.R
	coef[cA], coef[cB], coef[cC], coef[cD], coef[cN] = lin.A, lin.B, lin.C, lin.D, lin.N
	switch {
	case lin.Clip != l.terms.Clip:
		return &InputError{Msg: fmt.Sprintf("step clips at %g, the loop at %g", lin.Clip, l.terms.Clip)}
	case (lin.B != 0 || lin.C != 0) && !l.terms.X0, lin.C != 0 && !l.terms.Prev,
		lin.D != 0 && !l.terms.Model, lin.Noise && !l.terms.Noise:
		return &InputError{Msg: fmt.Sprintf("step %+v uses a term the loop was built without", lin)}
	}
	c := l.g.Context()
	if err := c.SetInputF32(l.coef, coef); err != nil {
		return err
	}
	ts := make([]float32, l.batch)
	for i := range ts {
		ts[i] = t
	}
	if err := c.SetInputF32(l.timesteps, ts); err != nil {
		return err
	}
	if l.terms.Noise {
		if len(noise) == 0 && !lin.Noise {
			noise = make([]float32, l.noise.Elements())
		}
		if err := c.SetInputF32(l.noise, noise); err != nil {
			return err
		}
	}
	return l.g.Compute(ctx)
}

// Reserve allocates the compute buffers a step needs without running one
// and returns their size on the device.
func (l *Loop) Reserve() (int64, error) { return l.g.Reserve() }

// Latents reads the current latents back ([1, C, H, W]).
func (l *Loop) Latents() []float32 { return l.x.Float32() }

// Close frees the graph and the device state.
func (l *Loop) Close() {
	if l.g != nil {
		l.g.Close()
		l.g = nil
	}
	if l.buf != nil {
		l.buf.Free()
		l.buf = nil
	}
	if l.state != nil {
		l.state.Free()
		l.state = nil
	}
}

// CrossKVBytes is the device memory a Loop keeps per conditioning for the
// cross-attention keys and values of the UNet under prefix in set, with a
// text context of tokens tokens for batch images, stored as kvType (the
// flash path's type: f16 on GPUs).
func CrossKVBytes(set *weights.Set, prefix string, tokens, batch int, kvType ggml.Type) int64 {
	var n int64
	sub := set.Prefix(prefix)
	for _, name := range sub.Names() {
		if t, _ := sub.Get(name); IsCrossKVWeight(name) && strings.HasSuffix(name, ".to_k.weight") && len(t.Shape) == 2 {
			n += 2 * kvType.RowBytes(t.Shape[0]) * int64(tokens) * int64(batch)
		}
	}
	return n
}

// StateBytes is the device memory the loop's own tensors take (latents,
// sampler history, conditioning, cross-attention keys and values).
func (l *Loop) StateBytes() int64 { return l.buf.Size() }

// StepFLOPs counts the arithmetic of one step's products
// (ggml.Graph.FLOPs): the UNet at CFG's batch, nearly all of a step's work.
func (l *Loop) StepFLOPs() int64 { return l.g.FLOPs() }
