package photomaker

import (
	"fmt"
	"math"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// DefaultDimHead is the attention head width of PhotoMaker v2's perceiver
// resampler (128 in the official model; the tiny test adapters keep it).
// It cannot be read from the weights: only heads·dim_head can.
const DefaultDimHead = 128

// PerceiverAttention lets a few latent tokens attend over image features
// and themselves. No biases.
type PerceiverAttention struct {
	Norm1 nn.LayerNorm `w:"norm1"` // on the image features
	Norm2 nn.LayerNorm `w:"norm2"` // on the latents
	ToQ   nn.Linear    `w:"to_q"`
	ToKV  nn.Linear    `w:"to_kv"` // keys then values
	ToOut nn.Linear    `w:"to_out"`
}

// Forward maps latents [D, T, B] with features x [D, Nx, B] to [D, T, B]
// (without the residual).
func (a *PerceiverAttention) Forward(c *ggml.Context, x, latents *ggml.Tensor, p *PerceiverParams, opt nn.AttentionOptions) *ggml.Tensor {
	x = a.Norm1.Forward(c, x, p.Eps)
	latents = a.Norm2.Forward(c, latents, p.Eps)
	q := a.ToQ.Forward(c, latents)                   // [inner, T, B]
	kv := a.ToKV.Forward(c, c.Concat(x, latents, 1)) // [2·inner, Nx+T, B]
	inner := kv.Ne(0) / 2
	half := func(i int64) *ggml.Tensor {
		v := c.View(kv, [4]int64{inner, kv.Ne(1), kv.Ne(2), 1}, kv.Nb(1), kv.Nb(2), kv.Nb(3), i*inner*kv.Nb(0))
		return c.Cont(v)
	}
	// The reference scales q and k by dim_head^-1/4 each before their
	// product: the same as one 1/sqrt(dim_head) on the scores.
	scale := float32(1 / math.Sqrt(float64(p.DimHead)))
	o := nn.AttendScaled(c, q, half(0), half(1), p.Heads, nil, scale, opt)
	return a.ToOut.Forward(c, o)
}

// FeedForward is LayerNorm → Linear → GELU (erf) → Linear, no biases, held
// in a torch Sequential (indices 0, 1, 3).
type FeedForward struct {
	Norm nn.LayerNorm `w:"0"`
	Up   nn.Linear    `w:"1"`
	Down nn.Linear    `w:"3"`
}

// Forward maps [D, ...] to [D, ...] (without the residual).
func (f *FeedForward) Forward(c *ggml.Context, x *ggml.Tensor, eps float32) *ggml.Tensor {
	return f.Down.Forward(c, c.GELUErf(f.Up.Forward(c, f.Norm.Forward(c, x, eps))))
}

// PerceiverLayer is one [attention, feed-forward] pair of the resampler.
type PerceiverLayer struct {
	Attn PerceiverAttention `w:"0"`
	FF   FeedForward        `w:"1"`
}

// FacePerceiverResampler refines latent tokens by attending over the CLIP
// vision tower's hidden states.
type FacePerceiverResampler struct {
	ProjIn  nn.Linear        `w:"proj_in"`
	Layers  []PerceiverLayer `w:"layers"`
	ProjOut nn.Linear        `w:"proj_out"`
	NormOut nn.LayerNorm     `w:"norm_out"`
}

// TokenProj is token_proj: Linear → GELU (erf) → Linear, in a Sequential.
type TokenProj struct {
	Up   nn.Linear `w:"0"`
	Down nn.Linear `w:"2"`
}

// PerceiverParams are QFormerPerceiver's sizes, read from its weights
// except DimHead and Eps.
type PerceiverParams struct {
	IDWidth   int // face embedding width (512)
	Tokens    int // ID tokens per image (2)
	Dim       int // token width (2048; 128 tiny)
	Embedding int // vision hidden width attended over (1024; 128 tiny)
	Depth     int // resampler layers (4)
	Heads     int // attention width (to_q outputs) / DimHead
	DimHead   int
	Eps       float32
}

// PerceiverConfig holds what cannot be read from the weights.
type PerceiverConfig struct {
	// DimHead is the attention head width (0: DefaultDimHead).
	DimHead int
	// Eps is the LayerNorm epsilon (0: DefaultEps).
	Eps float32
}

// QFormerPerceiver is PhotoMaker v2's ID-token generator: a face embedding
// is projected to Tokens tokens, normalised, then refined by a perceiver
// resampler over the CLIP hidden states; output = tokens + resampler(tokens).
type QFormerPerceiver struct {
	TokenProj TokenProj              `w:"token_proj"`
	TokenNorm nn.LayerNorm           `w:"token_norm"`
	Resampler FacePerceiverResampler `w:"perceiver_resampler"`

	Params PerceiverParams
	// Attn selects how attention is computed.
	Attn nn.AttentionOptions
}

// BindPerceiver declares the qformer_perceiver under prefix (e.g.
// "pm.qformer_perceiver.") in w and validates its shapes.
func BindPerceiver(w *nn.Weights, set *weights.Set, prefix string, cfg PerceiverConfig) (*QFormerPerceiver, error) {
	q := &QFormerPerceiver{}
	if err := w.Bind(set, prefix, q); err != nil {
		return nil, fmt.Errorf("qformer_perceiver: %w", err)
	}
	if err := q.check(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	return q, nil
}

func (q *QFormerPerceiver) check(cfg PerceiverConfig) error {
	p := PerceiverParams{DimHead: cfg.DimHead, Eps: cfg.Eps}
	if p.DimHead <= 0 {
		p.DimHead = DefaultDimHead
	}
	if p.Eps <= 0 {
		p.Eps = DefaultEps
	}
	r := &q.Resampler
	p.Dim = int(q.TokenNorm.Weight.Ne(0))
	p.IDWidth = int(q.TokenProj.Up.InFeatures())
	p.Embedding = int(r.ProjIn.InFeatures())
	p.Depth = len(r.Layers)
	out := int(q.TokenProj.Down.OutFeatures())
	switch {
	case p.Dim == 0 || out%p.Dim != 0:
		return fmt.Errorf("token_proj gives %d values, not a whole number of %d-wide tokens", out, p.Dim)
	case q.TokenProj.Down.InFeatures() != q.TokenProj.Up.OutFeatures():
		return fmt.Errorf("token_proj.2 takes %d inputs, token_proj.0 gives %d", q.TokenProj.Down.InFeatures(), q.TokenProj.Up.OutFeatures())
	case int(r.ProjIn.OutFeatures()) != p.Dim:
		return fmt.Errorf("perceiver_resampler.proj_in gives %d, want %d", r.ProjIn.OutFeatures(), p.Dim)
	case int(r.ProjOut.InFeatures()) != p.Dim || int(r.ProjOut.OutFeatures()) != p.Dim:
		return fmt.Errorf("perceiver_resampler.proj_out is %d→%d, want %d→%d", r.ProjOut.InFeatures(), r.ProjOut.OutFeatures(), p.Dim, p.Dim)
	case int(r.NormOut.Weight.Ne(0)) != p.Dim:
		return fmt.Errorf("perceiver_resampler.norm_out is %d wide, want %d", r.NormOut.Weight.Ne(0), p.Dim)
	case p.Depth == 0:
		return fmt.Errorf("perceiver_resampler has no layers")
	}
	p.Tokens = out / p.Dim
	for i := range r.Layers {
		a, ff := &r.Layers[i].Attn, &r.Layers[i].FF
		inner := int(a.ToQ.OutFeatures())
		switch {
		case int(a.ToQ.InFeatures()) != p.Dim || int(a.ToKV.InFeatures()) != p.Dim || int(a.ToKV.OutFeatures()) != 2*inner:
			return fmt.Errorf("perceiver_resampler.layers.%d: to_q %d→%d and to_kv %d→%d do not fit width %d",
				i, a.ToQ.InFeatures(), inner, a.ToKV.InFeatures(), a.ToKV.OutFeatures(), p.Dim)
		case int(a.ToOut.InFeatures()) != inner || int(a.ToOut.OutFeatures()) != p.Dim:
			return fmt.Errorf("perceiver_resampler.layers.%d.to_out is %d→%d, want %d→%d", i, a.ToOut.InFeatures(), a.ToOut.OutFeatures(), inner, p.Dim)
		case inner%p.DimHead != 0:
			return fmt.Errorf("perceiver_resampler.layers.%d: attention width %d is not a multiple of dim_head %d", i, inner, p.DimHead)
		case int(ff.Up.InFeatures()) != p.Dim || int(ff.Down.OutFeatures()) != p.Dim || ff.Down.InFeatures() != ff.Up.OutFeatures():
			return fmt.Errorf("perceiver_resampler.layers.%d: feed-forward %d→%d→%d does not fit width %d",
				i, ff.Up.InFeatures(), ff.Up.OutFeatures(), ff.Down.OutFeatures(), p.Dim)
		}
		heads := inner / p.DimHead
		if i > 0 && heads != p.Heads {
			return fmt.Errorf("perceiver_resampler.layers.%d has %d heads, layer 0 has %d", i, heads, p.Heads)
		}
		p.Heads = heads
	}
	q.Params = p
	return nil
}

// Tokens builds token_norm(token_proj(idEmbeds)) for face embeddings
// [IDWidth, B]: [Dim, Tokens, B].
func (q *QFormerPerceiver) Tokens(c *ggml.Context, idEmbeds *ggml.Tensor) *ggml.Tensor {
	p := &q.Params
	if idEmbeds.Ne(0) != int64(p.IDWidth) {
		panic(fmt.Sprintf("qformer_perceiver: ID embeddings %v, want [%d B]", idEmbeds.Shape(), p.IDWidth))
	}
	b := idEmbeds.Ne(1)
	x := q.TokenProj.Down.Forward(c, c.GELUErf(q.TokenProj.Up.Forward(c, idEmbeds))) // [Dim·Tokens, B]
	x = c.Reshape(x, int64(p.Dim), int64(p.Tokens), b)
	return q.TokenNorm.Forward(c, x, p.Eps)
}

// Forward maps face embeddings [IDWidth, B] and the vision tower's
// last_hidden_state [Embedding, N, B] to the ID tokens [Dim, Tokens, B].
func (q *QFormerPerceiver) Forward(c *ggml.Context, idEmbeds, hidden *ggml.Tensor) *ggml.Tensor {
	p := &q.Params
	if hidden.Ne(0) != int64(p.Embedding) || hidden.Ne(2) != idEmbeds.Ne(1) {
		panic(fmt.Sprintf("qformer_perceiver: hidden states %v for %d ID embeddings, want [%d N %d]",
			hidden.Shape(), idEmbeds.Ne(1), p.Embedding, idEmbeds.Ne(1)))
	}
	tokens := q.Tokens(c, idEmbeds)
	return c.Add(tokens, q.Resampler.Forward(c, tokens, hidden, p, q.Attn))
}

// Forward refines latents [Dim, T, B] over features [Embedding, N, B].
func (r *FacePerceiverResampler) Forward(c *ggml.Context, latents, features *ggml.Tensor, p *PerceiverParams, opt nn.AttentionOptions) *ggml.Tensor {
	x := r.ProjIn.Forward(c, features)
	for i := range r.Layers {
		l := &r.Layers[i]
		latents = c.Add(l.Attn.Forward(c, x, latents, p, opt), latents)
		latents = c.Add(l.FF.Forward(c, latents, p.Eps), latents)
	}
	return r.NormOut.Forward(c, r.ProjOut.Forward(c, latents), p.Eps)
}
