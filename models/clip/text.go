package clip

import (
	"context"
	"fmt"
	"math"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// TextEmbeddings is CLIPTextEmbeddings: token and learned position tables.
type TextEmbeddings struct {
	Token    nn.Embedding `w:"token_embedding"`
	Position nn.Embedding `w:"position_embedding"`
}

// TextTransformer is CLIPTextTransformer (the "text_model" module).
type TextTransformer struct {
	Embeddings TextEmbeddings `w:"embeddings"`
	Encoder    Encoder        `w:"encoder"`
	FinalLN    nn.LayerNorm   `w:"final_layer_norm"`
}

// TextParams are the sizes read from a text encoder's weights.
type TextParams struct {
	Vocab, Positions     int
	Hidden, Heads        int
	Layers, Intermediate int
	// Projection is the width of text_projection (0 without one).
	Projection int
}

// TextModel is a CLIP text encoder bound to device weights.
type TextModel struct {
	Model      TextTransformer `w:"text_model"`
	Projection *nn.Linear      `w:"text_projection,optional"`

	Params TextParams
	Config TextConfig // resolved (no zero fields)
	// Attn selects how attention is computed (LoadText copies the runtime's).
	Attn nn.AttentionOptions

	prefix string
	loaded
}

// BindText declares a text encoder's weights under prefix (e.g. "te1.") in
// w and validates their shapes. Upload w before running the model. Use it
// to load several models into one weight buffer; LoadText does all steps.
func BindText(w *nn.Weights, set *weights.Set, prefix string, cfg TextConfig) (*TextModel, error) {
	prefix = normPrefix(prefix)
	m := &TextModel{prefix: prefix, Config: cfg.resolve(prefix)}
	if err := w.Bind(set, prefix, m); err != nil {
		return nil, fmt.Errorf("clip text encoder %s: %w", prefix, err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadText binds the text encoder under prefix, stores its weights for rt
// (nn.Runtime.Upload) as policy says (nil: all float32) and returns it
// ready to run.
func LoadText(ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, cfg TextConfig, policy nn.TypePolicy) (*TextModel, error) {
	return loadOwned(ctx, rt, set, prefix, policy, func(w *nn.Weights) (*TextModel, error) { return BindText(w, set, prefix, cfg) })
}

func (m *TextModel) check() error {
	s := &shapeChecker{prefix: m.prefix}
	tm := &m.Model
	tok, pos := tm.Embeddings.Token.Weight, tm.Embeddings.Position.Weight
	hidden := tok.Ne(0)
	s.want("text_model.embeddings.token_embedding.weight", tok, false, hidden, tok.Ne(1))
	s.want("text_model.embeddings.position_embedding.weight", pos, false, hidden, pos.Ne(1))
	s.want("text_model.final_layer_norm.weight", tm.FinalLN.Weight, false, hidden)
	s.want("text_model.final_layer_norm.bias", tm.FinalLN.Bias, true, hidden)
	sub := &shapeChecker{prefix: m.prefix + "text_model."}
	inter := tm.Encoder.check(sub, hidden)
	if s.err == nil {
		s.err = sub.err
	}
	heads := headsFor(s, hidden, m.Config.HeadDim)
	proj := int64(0)
	if m.Projection != nil {
		proj = m.Projection.Weight.Ne(1)
		s.want("text_projection.weight", m.Projection.Weight, false, hidden, proj)
		s.want("text_projection.bias", m.Projection.Bias, true, proj)
	}
	if s.err != nil {
		return s.err
	}
	m.Params = TextParams{
		Vocab: int(tok.Ne(1)), Positions: int(pos.Ne(1)),
		Hidden: int(hidden), Heads: heads,
		Layers: len(tm.Encoder.Layers), Intermediate: int(inter),
		Projection: int(proj),
	}
	return nil
}

// TextInput is a batch of token sequences as graph inputs.
type TextInput struct {
	Batch, Tokens int
	IDs           *ggml.Tensor // I32 [N·B]
	Positions     *ggml.Tensor // I32 [N]: 0..N-1
	Pool          *ggml.Tensor // I32 [B]: row N·b + pooled position of sequence b
	Mask          *ggml.Tensor // F32 [N, N]: causal, -Inf above the diagonal
}

// NewInput validates ids (equal lengths, at most Positions tokens, ids in
// the vocabulary) and declares them as inputs of c.
func (m *TextModel) NewInput(c *ggml.Context, ids [][]int) (*TextInput, error) {
	if err := m.CheckIDs(ids); err != nil {
		return nil, err
	}
	B, N := len(ids), len(ids[0])
	flat := make([]int32, 0, B*N)
	pool := make([]int32, B)
	for b, seq := range ids {
		for _, id := range seq {
			flat = append(flat, int32(id))
		}
		pool[b] = int32(b*N + m.PoolPosition(seq))
	}
	posIDs := make([]int32, N)
	mask := make([]float32, N*N)
	ninf := float32(math.Inf(-1))
	for q := 0; q < N; q++ {
		posIDs[q] = int32(q)
		for k := q + 1; k < N; k++ {
			mask[q*N+k] = ninf
		}
	}
	return &TextInput{
		Batch: B, Tokens: N,
		IDs:       c.InputI32(flat, int64(N*B)),
		Positions: c.InputI32(posIDs, int64(N)),
		Pool:      c.InputI32(pool, int64(B)),
		Mask:      c.InputF32(mask, int64(N), int64(N)),
	}, nil
}

// CheckIDs reports why ids cannot be encoded, or nil.
func (m *TextModel) CheckIDs(ids [][]int) error {
	if len(ids) == 0 || len(ids[0]) == 0 {
		return fmt.Errorf("clip %s: no tokens to encode", m.prefix)
	}
	n := len(ids[0])
	if n > m.Params.Positions {
		return fmt.Errorf("clip %s: %d tokens, the encoder has %d positions", m.prefix, n, m.Params.Positions)
	}
	for b, seq := range ids {
		if len(seq) != n {
			return fmt.Errorf("clip %s: sequence %d has %d tokens, sequence 0 has %d", m.prefix, b, len(seq), n)
		}
		for i, id := range seq {
			if id < 0 || id >= m.Params.Vocab {
				return fmt.Errorf("clip %s: sequence %d token %d: id %d outside the vocabulary [0,%d)", m.prefix, b, i, id, m.Params.Vocab)
			}
		}
	}
	return nil
}

// PoolPosition returns the position pooled for seq under Config.PoolToken.
func (m *TextModel) PoolPosition(seq []int) int {
	if m.Config.PoolToken > 0 {
		for i, id := range seq {
			if id == m.Config.PoolToken {
				return i
			}
		}
		return 0
	}
	best := 0
	for i, id := range seq {
		if id > seq[best] {
			best = i
		}
	}
	return best
}

// TextOutputs are the graph nodes of a text-encoder forward pass.
type TextOutputs struct {
	// Hidden are transformers' hidden_states, each [C, N, B]: [0] the
	// embeddings, [i] the output of layer i-1; Hidden[len-2] is the
	// penultimate layer output SDXL conditions on.
	Hidden []*ggml.Tensor
	// Last is last_hidden_state = final_layer_norm(Hidden[len-1]) [C, N, B].
	Last *ggml.Tensor
	// Pooled is Last at each sequence's pooled position [C, B]
	// (CLIPTextModel's pooler_output).
	Pooled *ggml.Tensor
	// Projected is text_projection(Pooled) [P, B] (text_embeds), nil when
	// the model has no projection.
	Projected *ggml.Tensor
}

// Penultimate returns hidden_states[-2].
func (o TextOutputs) Penultimate() *ggml.Tensor { return o.Hidden[len(o.Hidden)-2] }

// Forward builds the encoder's graph for in. Nodes nobody reads (e.g. the
// last layer when only Penultimate is used) are never computed.
func (m *TextModel) Forward(c *ggml.Context, in *TextInput) TextOutputs {
	tm := &m.Model
	C, N, B := int64(m.Params.Hidden), int64(in.Tokens), int64(in.Batch)
	x := tm.Embeddings.Token.Forward(c, in.IDs)                   // [C, N·B]
	x = c.Reshape(x, C, N, B)                                     // [C, N, B]
	x = c.Add(x, tm.Embeddings.Position.Forward(c, in.Positions)) // + [C, N]

	hidden := tm.Encoder.Forward(c, x, in.Mask, LayerOptions{
		Heads: m.Params.Heads, Activation: m.Config.Activation, Eps: m.Config.Eps, Attn: m.Attn,
	})
	out := TextOutputs{Hidden: hidden}
	out.Last = tm.FinalLN.Forward(c, hidden[len(hidden)-1], m.Config.Eps)
	out.Pooled = c.GetRows(c.Reshape(out.Last, C, N*B), in.Pool) // [C, B]
	if m.Projection != nil {
		out.Projected = m.Projection.Forward(c, out.Pooled)
	}
	return out
}

// TextResult holds a text encoder's outputs as float32 in PyTorch layout.
type TextResult struct {
	Batch, Tokens, Width int
	// Hidden[i] is hidden_states[i], [B, N, Width].
	Hidden [][]float32
	// Last is last_hidden_state [B, N, Width].
	Last []float32
	// Pooled is pooler_output [B, Width].
	Pooled []float32
	// Projected is text_embeds [B, Params.Projection]; nil without a projection.
	Projected []float32
}

// Penultimate returns hidden_states[-2].
func (r *TextResult) Penultimate() []float32 { return r.Hidden[len(r.Hidden)-2] }

// Encode runs the encoder on a batch of equally long token sequences.
func (m *TextModel) Encode(ctx context.Context, rt *nn.Runtime, ids [][]int) (*TextResult, error) {
	if err := m.CheckIDs(ids); err != nil {
		return nil, err
	}
	var nh int
	outs, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		in, err := m.NewInput(c, ids)
		if err != nil {
			panic(err) // already checked
		}
		o := m.Forward(c, in)
		nh = len(o.Hidden)
		list := append([]*ggml.Tensor{}, o.Hidden...)
		list = append(list, o.Last, o.Pooled)
		if o.Projected != nil {
			list = append(list, o.Projected)
		}
		return list
	})
	if err != nil {
		return nil, fmt.Errorf("clip %s: %w", m.prefix, err)
	}
	r := &TextResult{Batch: len(ids), Tokens: len(ids[0]), Width: m.Params.Hidden}
	for _, o := range outs[:nh] {
		r.Hidden = append(r.Hidden, o.Data)
	}
	r.Last, r.Pooled = outs[nh].Data, outs[nh+1].Data
	if len(outs) > nh+2 {
		r.Projected = outs[nh+2].Data
	}
	return r, nil
}
