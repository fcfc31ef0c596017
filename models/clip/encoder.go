package clip

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
)

// SelfAttention is CLIPAttention: q, k, v and output projections, all with
// biases.
type SelfAttention struct {
	Q   nn.Linear `w:"q_proj"`
	K   nn.Linear `w:"k_proj"`
	V   nn.Linear `w:"v_proj"`
	Out nn.Linear `w:"out_proj"`
}

// MLP is CLIPMLP: fc1 → activation → fc2.
type MLP struct {
	FC1 nn.Linear `w:"fc1"`
	FC2 nn.Linear `w:"fc2"`
}

// EncoderLayer is a pre-LN transformer block (CLIPEncoderLayer).
type EncoderLayer struct {
	LN1  nn.LayerNorm  `w:"layer_norm1"`
	Attn SelfAttention `w:"self_attn"`
	LN2  nn.LayerNorm  `w:"layer_norm2"`
	MLP  MLP           `w:"mlp"`
}

// Encoder is CLIPEncoder: a stack of layers.
type Encoder struct {
	Layers []EncoderLayer `w:"layers"`
}

// LayerOptions are the per-model settings every layer's Forward needs.
type LayerOptions struct {
	Heads      int
	Activation Activation
	Eps        float32
	Attn       nn.AttentionOptions
}

// Forward maps x [C, N, B] to [C, N, B]. mask (may be nil) is [N, N] added
// to the attention scores.
func (l *EncoderLayer) Forward(c *ggml.Context, x, mask *ggml.Tensor, o LayerOptions) *ggml.Tensor {
	h := l.LN1.Forward(c, x, o.Eps)
	q := l.Attn.Q.Forward(c, h)
	k := l.Attn.K.Forward(c, h)
	v := l.Attn.V.Forward(c, h)
	a := nn.Attend(c, q, k, v, o.Heads, mask, o.Attn)
	x = c.Add(x, l.Attn.Out.Forward(c, a))

	h = l.LN2.Forward(c, x, o.Eps)
	h = l.MLP.FC2.Forward(c, o.Activation.apply(c, l.MLP.FC1.Forward(c, h)))
	return c.Add(x, h)
}

// Forward runs every layer and returns the hidden states as transformers
// lists them: [0] is the input, [i] the output of layer i-1.
func (e *Encoder) Forward(c *ggml.Context, x, mask *ggml.Tensor, o LayerOptions) []*ggml.Tensor {
	hidden := make([]*ggml.Tensor, 0, len(e.Layers)+1)
	hidden = append(hidden, x)
	for i := range e.Layers {
		x = e.Layers[i].Forward(c, x, mask, o)
		hidden = append(hidden, x)
	}
	return hidden
}

// check validates every layer for width C, MLP width I and head width d,
// and returns I.
func (e *Encoder) check(s *shapeChecker, hidden int64) int64 {
	if len(e.Layers) == 0 {
		s.fail("encoder has no layers")
		return 0
	}
	inter := int64(0)
	if w := e.Layers[0].MLP.FC1.Weight; w != nil {
		inter = w.Ne(1)
	}
	if inter <= 0 {
		s.fail("encoder.layers.0.mlp.fc1.weight: cannot read the MLP width")
		return 0
	}
	for i := range e.Layers {
		l := &e.Layers[i]
		p := fmt.Sprintf("encoder.layers.%d.", i)
		norm := func(n string, ln *nn.LayerNorm) {
			s.want(p+n+".weight", ln.Weight, false, hidden)
			s.want(p+n+".bias", ln.Bias, true, hidden)
		}
		lin := func(n string, ln *nn.Linear, in, out int64) {
			s.want(p+n+".weight", ln.Weight, false, in, out)
			s.want(p+n+".bias", ln.Bias, true, out)
		}
		norm("layer_norm1", &l.LN1)
		norm("layer_norm2", &l.LN2)
		lin("self_attn.q_proj", &l.Attn.Q, hidden, hidden)
		lin("self_attn.k_proj", &l.Attn.K, hidden, hidden)
		lin("self_attn.v_proj", &l.Attn.V, hidden, hidden)
		lin("self_attn.out_proj", &l.Attn.Out, hidden, hidden)
		lin("mlp.fc1", &l.MLP.FC1, hidden, inter)
		lin("mlp.fc2", &l.MLP.FC2, inter, hidden)
	}
	return inter
}

// headsFor returns hidden/headDim or an error when it does not divide.
func headsFor(s *shapeChecker, hidden int64, headDim int) int {
	if hidden%int64(headDim) != 0 {
		s.fail("width %d is not a multiple of the head width %d", hidden, headDim)
		return 0
	}
	return int(hidden / int64(headDim))
}
