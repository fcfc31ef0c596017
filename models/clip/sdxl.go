package clip

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// SDXLText is SDXL's pair of text encoders: TE1 (CLIP-L, canonical prefix
// "te1.") and TE2 (OpenCLIP bigG with text_projection, prefix "te2.").
type SDXLText struct {
	TE1, TE2 *TextModel
}

// LoadSDXL loads both encoders of an SDXL checkpoint's canonical tensors
// with the default configs (quick GELU for TE1, exact GELU for TE2).
func LoadSDXL(ctx context.Context, rt *nn.Runtime, set *weights.Set, policy nn.TypePolicy) (*SDXLText, error) {
	te1, err := LoadText(ctx, rt, set, "te1.", TextConfig{}, policy)
	if err != nil {
		return nil, err
	}
	te2, err := LoadText(ctx, rt, set, "te2.", TextConfig{}, policy)
	if err != nil {
		te1.Close()
		return nil, err
	}
	e := &SDXLText{TE1: te1, TE2: te2}
	if err := e.check(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// CheckSDXL binds and checks both encoders of set as LoadSDXL does,
// without loading any weight.
func CheckSDXL(set *weights.Set) error {
	w := nn.NewWeights(len(set.Prefix("te1.").Names())+len(set.Prefix("te2.").Names())+32, nil)
	defer w.Free()
	te1, err := BindText(w, set, "te1.", TextConfig{})
	if err != nil {
		return err
	}
	te2, err := BindText(w, set, "te2.", TextConfig{})
	if err != nil {
		return err
	}
	return (&SDXLText{TE1: te1, TE2: te2}).check()
}

// Close frees both encoders' weights.
func (e *SDXLText) Close() {
	e.TE1.Close()
	e.TE2.Close()
}

func (e *SDXLText) check() error {
	if e.TE2.Projection == nil {
		return fmt.Errorf("clip %s: SDXL's second text encoder needs text_projection", e.TE2.prefix)
	}
	return nil
}

// Width is the width of one conditioning token: TE1's plus TE2's (2048 for
// SDXL).
func (e *SDXLText) Width() int { return e.TE1.Params.Hidden + e.TE2.Params.Hidden }

// PooledWidth is the width of the pooled embedding (1280 for SDXL).
func (e *SDXLText) PooledWidth() int { return e.TE2.Params.Projection }

// Conditioning is what SDXL's encode_prompt returns for one prompt.
type Conditioning struct {
	Tokens, Width int
	// Embeds is prompt_embeds [Tokens, Width]: per token, TE1's then TE2's
	// penultimate hidden state (no final LayerNorm).
	Embeds []float32
	// Pooled is TE2's text_embeds [PooledWidth].
	Pooled []float32
}

// Forward builds both encoders into c for inputs with equal batch and
// token counts and returns prompt_embeds [W1+W2, N, B] and the pooled
// text_embeds [P, B]. Mismatched inputs panic (nn.Runtime.Run turns that
// into an error); Encode checks them first.
func (e *SDXLText) Forward(c *ggml.Context, in1, in2 *TextInput) (embeds, pooled *ggml.Tensor) {
	if in1.Tokens != in2.Tokens || in1.Batch != in2.Batch {
		panic(fmt.Sprintf("clip: SDXL encoders got %d×%d and %d×%d tokens", in1.Batch, in1.Tokens, in2.Batch, in2.Tokens))
	}
	o1 := e.TE1.Forward(c, in1)
	o2 := e.TE2.Forward(c, in2)
	return c.Concat(o1.Penultimate(), o2.Penultimate(), 0), o2.Projected
}

// Encode computes SDXL's conditioning for one prompt from the ids of both
// tokenizers (equally long, usually 77). With zero set it returns zeros
// without running the encoders: diffusers' force_zeros_for_empty_prompt
// for an absent negative prompt.
func (e *SDXLText) Encode(ctx context.Context, rt *nn.Runtime, ids1, ids2 []int, zero bool) (*Conditioning, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	n := len(ids1)
	if zero {
		if n == 0 {
			n = e.TE1.Params.Positions
		}
		return &Conditioning{Tokens: n, Width: e.Width(),
			Embeds: make([]float32, n*e.Width()), Pooled: make([]float32, e.PooledWidth())}, nil
	}
	if len(ids2) != n {
		return nil, fmt.Errorf("clip: SDXL prompt has %d tokens for TE1 and %d for TE2", n, len(ids2))
	}
	b1, b2 := [][]int{ids1}, [][]int{ids2}
	if err := e.TE1.CheckIDs(b1); err != nil {
		return nil, err
	}
	if err := e.TE2.CheckIDs(b2); err != nil {
		return nil, err
	}
	outs, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		in1, err1 := e.TE1.NewInput(c, b1)
		in2, err2 := e.TE2.NewInput(c, b2)
		if err1 != nil || err2 != nil {
			panic(fmt.Sprint(err1, err2)) // already checked
		}
		embeds, pooled := e.Forward(c, in1, in2)
		return []*ggml.Tensor{embeds, pooled}
	})
	if err != nil {
		return nil, fmt.Errorf("clip: SDXL text encoders: %w", err)
	}
	return &Conditioning{Tokens: n, Width: e.Width(), Embeds: outs[0].Data, Pooled: outs[1].Data}, nil
}

// EncodeSDXL is (&SDXLText{te1, te2}).Encode.
func EncodeSDXL(ctx context.Context, rt *nn.Runtime, te1, te2 *TextModel, ids1, ids2 []int, zero bool) (*Conditioning, error) {
	return (&SDXLText{TE1: te1, TE2: te2}).Encode(ctx, rt, ids1, ids2, zero)
}
