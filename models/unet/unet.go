// Package unet is SDXL's denoising UNet (diffusers' UNet2DConditionModel
// with text_time addition embeddings) on ggml. Its hyperparameters are read
// from the weights (see Infer); the conventions shapes cannot tell are SDXL's.
package unet

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// Options tunes Load.
type Options struct {
	// Policy chooses each weight's device type (nil: float32).
	Policy nn.TypePolicy
	// Progress, if set, is called after each uploaded tensor.
	Progress func(done, total int)
	// Stream keeps the weights in host memory and streams them to the
	// device for every step: the UNet then needs only compute memory on
	// the device (slower: each step moves all weights over the bus).
	Stream bool
	// QuantizeKernels lets a quantized Policy reach the convolution
	// kernels (see convPolicy); by default they stay f16.
	QuantizeKernels bool
	// CrossKV places the cross-attentions' key and value projections
	// (about 680 MB of SDXL's f16 weights), which a Loop runs once per
	// conditioning rather than in its steps.
	CrossKV CrossKVPlacement
}

// CrossKVPlacement is where Load puts the cross-attention key and value
// projections (IsCrossKVWeight).
type CrossKVPlacement int

const (
	// CrossKVWithUNet keeps them with the other weights.
	CrossKVWithUNet CrossKVPlacement = iota
	// CrossKVInHost keeps them in host memory that the device reads from:
	// no device memory, one copy to the device per conditioning.
	CrossKVInHost
	// CrossKVFreeable keeps them on the device in a buffer of their own,
	// which FreeCrossKV releases once the loops have their keys and values.
	CrossKVFreeable
)

// IsCrossKVWeight says whether a UNet weight belongs to a cross-attention's
// key or value projection (Options.CrossKV).
func IsCrossKVWeight(name string) bool {
	return strings.Contains(name, ".attn2.to_k.") || strings.Contains(name, ".attn2.to_v.")
}

// UNet is a loaded UNet bound to a runtime's device.
type UNet struct {
	cfg    Config
	m      model
	w      *nn.Weights
	rt     *nn.Runtime
	stream bool // weights in host memory (Options.Stream)
	cross  CrossKVPlacement
	// crossFreed: FreeCrossKV released the cross-attention key and value
	// projections, so only existing loops can run.
	crossFreed bool
}

// Load infers the configuration from the tensors of set under prefix
// ("unet." for a weights.Model's Tensors), then uploads the weights to rt's
// device. Attention follows rt.Attn at graph-build time.
func Load(ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, opts Options) (*UNet, error) {
	cfg, err := Infer(set, prefix)
	if err != nil {
		return nil, err
	}
	policy := convPolicy(opts.Policy, cfg, opts.QuantizeKernels)
	fold := FoldsNorms(rt, opts.Stream)
	if set, err = WeightSet(set, prefix, policy, fold); err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	n := len(set.Prefix(prefix).Names())
	u := &UNet{cfg: cfg, rt: rt, w: nn.NewWeights(n, policy), stream: opts.Stream, cross: opts.CrossKV}
	u.w.StoreKernelsByRow()
	switch {
	case opts.Stream: // every weight is in host memory already
	case opts.CrossKV == CrossKVInHost:
		u.w.KeepInHost(IsCrossKVWeight)
	case opts.CrossKV == CrossKVFreeable:
		u.w.KeepApart(IsCrossKVWeight)
	}
	if err := u.w.Bind(set, prefix, &u.m); err != nil {
		u.w.Free()
		return nil, fmt.Errorf("unet: %w", err)
	}
	upload := u.w.Upload
	if opts.Stream {
		upload = u.w.UploadHost
	}
	if err := upload(ctx, rt.Device, opts.Progress); err != nil {
		u.w.Free()
		return nil, fmt.Errorf("unet: %w", err)
	}
	return u, nil
}

// FoldsNorms says whether Load on rt folds the transformer blocks' layer
// norms into the products after them (foldBlock): for the graphs a GPU
// runs (on the CPU our kernels apply them as they go), with the weights on
// the device (streamed weights spend a step on the bus anyway).
// $PHOTOMAKER_UNFOLDED=1 keeps the norms, for timing both graphs on one
// machine (a bench spec token in ggml/gpu-session.sh).
func FoldsNorms(rt *nn.Runtime, stream bool) bool {
	return !rt.UsesCPUKernels() && !stream && os.Getenv("PHOTOMAKER_UNFOLDED") != "1"
}

// CUDAGraphsEnv, set to 1, marks the step graphs of loops and steppers for
// replay (nn.Graph.Replay), so that ggml-cuda captures each as a CUDA graph
// and replays it. Off by default, ggml's own rule then keeps SDXL's graphs
// uncaptured: on an H200 (2026-11-27, 1024², f16) a replay saved 0.5 ms of
// a 90 ms step, but the capture at a request's first step cost 67 ms, so a
// first 20-step image came 0.1 s later and later ones no sooner.
const CUDAGraphsEnv = "PHOTOMAKER_CUDA_GRAPHS"

// capturesSteps says whether step graphs are marked for replay: with
// CUDAGraphsEnv, and never for streamed weights (replay would keep the
// products on host weights off the device).
func capturesSteps(stream bool) bool { return !stream && os.Getenv(CUDAGraphsEnv) == "1" }

// Check binds the UNet under prefix of set as Load does, without loading
// any weight: an error names the first weight missing or misshapen.
func Check(set *weights.Set, prefix string) error {
	if _, err := Infer(set, prefix); err != nil {
		return err
	}
	set, err := WeightSet(set, prefix, nil, false)
	if err != nil {
		return fmt.Errorf("unet: %w", err)
	}
	w := nn.NewWeights(len(set.Prefix(prefix).Names()), nil)
	defer w.Free()
	var m model
	if err := w.Bind(set, prefix, &m); err != nil {
		return fmt.Errorf("unet: %w", err)
	}
	return nil
}

// StoragePolicy is the type policy Load stores the weights of set under
// prefix with, given the caller's policy and Options.QuantizeKernels: for
// planning memory before loading.
func StoragePolicy(set *weights.Set, prefix string, policy nn.TypePolicy, quantizeKernels bool) (nn.TypePolicy, error) {
	cfg, err := Infer(set, prefix)
	if err != nil {
		return nil, err
	}
	return convPolicy(policy, cfg, quantizeKernels), nil
}

// convPolicy keeps convolution kernels f16 when policy would block-quantize
// them, unless quantizeKernels: then the 3×3 kernels of the deepest level's
// resnets take q8_0 (stored flattened, see nn.Conv2D) and 1×1 kernels
// follow policy. A quantized kernel's im2col columns must be f32 rather
// than f16; at the lowest resolution they are small while the kernels are
// the largest in the model (about 470 MB of SDXL's f16 weights), elsewhere
// the columns would cost more than the kernel saves. The saving (226 MiB
// at q4_K) costs little accuracy: on bench's full-size random weights one
// q4_K step's error against f16 goes from 3.56 % to 3.85 %
// (TestQuantizationQualityBig). It stays opt-in until its speed is
// measured on a GPU, where these products leave the f16 tensor-core path.
func convPolicy(policy nn.TypePolicy, cfg Config, quantizeKernels bool) nn.TypePolicy {
	if policy == nil {
		return nil
	}
	deepest := int64(cfg.BlockOutChannels[len(cfg.BlockOutChannels)-1])
	return func(name string, t *weights.Tensor) ggml.Type {
		typ := policy(name, t)
		switch {
		case len(t.Shape) != 4 || !typ.Quantized():
			return typ
		case !quantizeKernels:
			return ggml.TypeF16
		case t.Shape[2]*t.Shape[3] == 1:
			return typ
		case t.Shape[0] != deepest || !strings.Contains(name, ".resnets."):
			return ggml.TypeF16
		}
		return ggml.TypeQ8_0.FitRow(t.Shape[1] * t.Shape[2] * t.Shape[3])
	}
}

// FreeCrossKV releases the cross-attention key and value projections when
// Load kept them apart (CrossKVFreeable): loops made before keep their keys
// and values and run on, but nothing that projects a text context (a new
// Loop, Predict) can run afterwards. Otherwise it does nothing.
func (u *UNet) FreeCrossKV() {
	if u.cross == CrossKVFreeable && !u.stream && !u.crossFreed {
		u.w.FreeApart()
		u.crossFreed = true
	}
}

// CrossKVFreed says whether FreeCrossKV released the projections.
func (u *UNet) CrossKVFreed() bool { return u.crossFreed }

// errCrossFreed is what graphs that need the freed projections get.
var errCrossFreed = &InputError{Msg: "the cross-attention key and value projections were freed (FreeCrossKV)"}

// Config returns the inferred configuration.
func (u *UNet) Config() Config { return u.cfg }

// Close frees the weights.
func (u *UNet) Close() {
	if u.w != nil {
		u.w.Free()
		u.w = nil
	}
}

// InputError describes inputs whose shapes do not fit the UNet.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return "unet: " + e.Msg }

// checkInputs validates the ggml shapes of Forward's inputs and returns the
// per-time-id embedding width (addition_time_embed_dim).
func (u *UNet) checkInputs(sample, timestep, context, textEmbeds, timeIDs [4]int64) (int, error) {
	cfg := &u.cfg
	bad := func(format string, a ...any) (int, error) {
		return 0, &InputError{Msg: fmt.Sprintf(format, a...)}
	}
	W, H, C, B := sample[0], sample[1], sample[2], sample[3]
	switch {
	case C != int64(cfg.InChannels):
		return bad("sample %v has %d channels, want %d", sample, C, cfg.InChannels)
	case W <= 0 || H <= 0:
		return bad("sample %v: width and height must be positive", sample)
	case timestep != [4]int64{B, 1, 1, 1}:
		return bad("timestep %v: want one per batch element [%d]", timestep, B)
	case context[0] != int64(cfg.CrossAttentionDim) || context[1] <= 0 || context[2] != B || context[3] != 1:
		return bad("encoder_hidden_states %v: want [%d, tokens, %d]", context, cfg.CrossAttentionDim, B)
	case textEmbeds[1] != B || textEmbeds[2] != 1 || textEmbeds[3] != 1:
		return bad("text_embeds %v: want [width, %d]", textEmbeds, B)
	case timeIDs[0] <= 0 || timeIDs[1] != B || timeIDs[2] != 1 || timeIDs[3] != 1:
		return bad("time_ids %v: want [n, %d]", timeIDs, B)
	}
	rest := int64(cfg.AddEmbedInDim) - textEmbeds[0]
	if rest <= 0 || rest%timeIDs[0] != 0 || (rest/timeIDs[0])%2 != 0 {
		return bad("text_embeds of width %d and %d time ids do not fit add_embedding's input width %d", textEmbeds[0], timeIDs[0], cfg.AddEmbedInDim)
	}
	return int(rest / timeIDs[0]), nil
}

// Forward builds the noise prediction [W, H, out, B] for sample [W, H, in, B]
// at timestep (F32 [B], one per batch element) with encoder_hidden_states
// context [ctx, tokens, B], pooled text_embeds [pooled, B] and time_ids
// (F32 [6, B]: orig h, w, crop top, left, target h, w). Every batch element
// is independent, so classifier-free guidance can run as one B=2 graph.
func (u *UNet) Forward(c *ggml.Context, sample, timestep, context, textEmbeds, timeIDs *ggml.Tensor) (*ggml.Tensor, error) {
	addDim, err := u.checkInputs(sample.Shape(), timestep.Shape(), context.Shape(), textEmbeds.Shape(), timeIDs.Shape())
	if err != nil {
		return nil, err
	}
	if timestep.Type() != ggml.TypeF32 || timeIDs.Type() != ggml.TypeF32 {
		return nil, &InputError{Msg: "timestep and time_ids must be F32"}
	}
	if u.crossFreed {
		return nil, errCrossFreed
	}
	return u.forward(c, sample, timestep, encoderStates{context}, textEmbeds, timeIDs, addDim, nil), nil
}

// forward is Forward after validation; tap (may be nil) sees the
// intermediate activations under the reference's module names.
func (u *UNet) forward(c *ggml.Context, sample, timestep *ggml.Tensor, text textContext, textEmbeds, timeIDs *ggml.Tensor, addDim int, tap func(string, *ggml.Tensor)) *ggml.Tensor {
	cfg, m, opt := &u.cfg, &u.m, u.rt.Attn
	if tap == nil {
		tap = func(string, *ggml.Tensor) {}
	}
	B := sample.Ne(3)

	// Time embedding plus the text_time addition embedding.
	emb := m.TimeEmbedding.Forward(c, c.TimestepEmbedding(timestep, cfg.TimeProjDim, 10000)) // [T, B]
	tap("time_embedding", emb)
	n := timeIDs.Ne(0)
	ids := c.TimestepEmbedding(c.Reshape(timeIDs, n*B), addDim, 10000) // [addDim, n·B]
	aug := c.Concat(textEmbeds, c.Reshape(ids, int64(addDim)*n, B), 0)
	aug = m.AddEmbedding.Forward(c, aug)
	tap("add_embedding", aug)
	embAct := c.SiLU(c.Add(emb, aug))

	x := m.ConvIn.Forward(c, sample, 1, 1)
	tap("conv_in", x)
	skips := []*ggml.Tensor{x}
	for i := range m.Down {
		blk := &m.Down[i]
		for j := range blk.Resnets {
			x = blk.Resnets[j].Forward(c, cfg, x, embAct)
			if len(blk.Attentions) > 0 {
				x = blk.Attentions[j].Forward(c, cfg, opt, x, text)
			}
			skips = append(skips, x)
		}
		if len(blk.Downsamplers) > 0 {
			x = blk.Downsamplers[0].Forward(c, x)
			skips = append(skips, x)
		}
		tap(fmt.Sprintf("down_blocks.%d", i), x)
	}

	x = m.Mid.Resnets[0].Forward(c, cfg, x, embAct)
	for j := range m.Mid.Attentions {
		x = m.Mid.Attentions[j].Forward(c, cfg, opt, x, text)
		x = m.Mid.Resnets[j+1].Forward(c, cfg, x, embAct)
	}
	tap("mid_block", x)

	for i := range m.Up {
		blk := &m.Up[i]
		for j := range blk.Resnets {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			x = blk.Resnets[j].Forward(c, cfg, c.Concat(x, skip, 2), embAct)
			if len(blk.Attentions) > 0 {
				x = blk.Attentions[j].Forward(c, cfg, opt, x, text)
			}
		}
		if len(blk.Upsamplers) > 0 {
			// Upsample to the size of the skip it meets next: twice the size,
			// or one less for odd sides, as diffusers' upsample_size does.
			next := skips[len(skips)-1]
			x = blk.Upsamplers[0].ForwardTo(c, x, next.Ne(0), next.Ne(1))
		}
		tap(fmt.Sprintf("up_blocks.%d", i), x)
	}

	x = m.ConvOut.Forward(c, m.NormOut.ForwardSiLU(c, x, cfg.NormGroups, cfg.ResnetEps), 1, 1)
	tap("conv_out", x)
	return x
}

// Inputs are Predict's inputs as flat float32 slices in PyTorch (row-major)
// order, which is also ggml's memory order.
type Inputs struct {
	Width, Height, Batch int
	Sample               []float32 // [B, C, H, W]
	Timesteps            []float32 // [B]
	Context              []float32 // encoder_hidden_states [B, tokens, ctx]
	TextEmbeds           []float32 // pooled [B, pooled]
	TimeIDs              []float32 // [B, 6]
}

// shapes returns the ggml shapes of in, or an error when lengths do not
// divide or the shapes do not fit the UNet (checkInputs).
func (u *UNet) shapes(in *Inputs) (sample, ts, ctx, text, ids [4]int64, err error) {
	W, H, B := int64(in.Width), int64(in.Height), int64(in.Batch)
	per := func(name string, v []float32, unit int64) (int64, error) {
		if unit <= 0 || len(v) == 0 || int64(len(v))%unit != 0 {
			return 0, &InputError{Msg: fmt.Sprintf("%s has %d values, not a positive multiple of %d", name, len(v), unit)}
		}
		return int64(len(v)) / unit, nil
	}
	var C, N, P, K int64
	if C, err = per("sample", in.Sample, W*H*B); err != nil {
		return
	}
	d := int64(u.cfg.CrossAttentionDim)
	if N, err = per("context", in.Context, d*B); err != nil {
		return
	}
	if P, err = per("text_embeds", in.TextEmbeds, B); err != nil {
		return
	}
	if K, err = per("time_ids", in.TimeIDs, B); err != nil {
		return
	}
	sample, ts, ctx, text, ids = [4]int64{W, H, C, B}, [4]int64{int64(len(in.Timesteps)), 1, 1, 1}, [4]int64{d, N, B, 1},
		[4]int64{P, B, 1, 1}, [4]int64{K, B, 1, 1}
	_, err = u.checkInputs(sample, ts, ctx, text, ids)
	return
}

// Predict runs one forward pass on rt and returns the noise prediction
// [B, out, H, W] (PyTorch order).
func (u *UNet) Predict(ctx context.Context, in Inputs) ([]float32, error) {
	s, err := u.NewStepper(in)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Predict(ctx, in)
}

// Stepper evaluates the UNet again and again on inputs of one shape: the
// graph is built and its buffers allocated once, and each Predict only
// uploads new values. A sampler loop uses one Stepper for all its steps.
type Stepper struct {
	u      *UNet
	g      *nn.Graph
	shapes [5][4]int64
	inputs [5]*ggml.Tensor // sample, timesteps, context, text_embeds, time_ids
}

// NewStepper builds the graph for inputs shaped like in.
func (u *UNet) NewStepper(in Inputs) (*Stepper, error) {
	s, ts, cs, te, ti, err := u.shapes(&in)
	if err != nil {
		return nil, err
	}
	st := &Stepper{u: u, shapes: [5][4]int64{s, ts, cs, te, ti}}
	var ferr error
	st.g, err = u.rt.Prepare(func(c *ggml.Context) []*ggml.Tensor {
		st.inputs = [5]*ggml.Tensor{c.InputF32(in.Sample, s[:]...), c.InputF32(in.Timesteps, ts[0]),
			c.InputF32(in.Context, cs[:3]...), c.InputF32(in.TextEmbeds, te[:2]...), c.InputF32(in.TimeIDs, ti[:2]...)}
		y, err := u.Forward(c, st.inputs[0], st.inputs[1], st.inputs[2], st.inputs[3], st.inputs[4])
		if err != nil {
			ferr = err
			return nil
		}
		return []*ggml.Tensor{y}
	})
	if ferr != nil {
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	st.g.Replay = capturesSteps(u.stream)
	return st, nil
}

// Reserve allocates the compute buffers a step needs without running one
// and returns their size on the device.
func (st *Stepper) Reserve() (int64, error) { return st.g.Reserve() }

// Predict evaluates the UNet on in, which must be shaped like the inputs
// the Stepper was made for.
func (st *Stepper) Predict(ctx context.Context, in Inputs) ([]float32, error) {
	s, ts, cs, te, ti, err := st.u.shapes(&in)
	if err != nil {
		return nil, err
	}
	if got := [5][4]int64{s, ts, cs, te, ti}; got != st.shapes {
		return nil, &InputError{Msg: fmt.Sprintf("inputs shaped %v, but this stepper was built for %v", got, st.shapes)}
	}
	c := st.g.Context()
	for i, v := range [5][]float32{in.Sample, in.Timesteps, in.Context, in.TextEmbeds, in.TimeIDs} {
		if err := c.SetInputF32(st.inputs[i], v); err != nil {
			return nil, err
		}
	}
	out, err := st.g.Run(ctx)
	if err != nil {
		return nil, err
	}
	return out[0].Data, nil
}

// Close frees the graph.
func (st *Stepper) Close() {
	if st.g != nil {
		st.g.Close()
		st.g = nil
	}
}
