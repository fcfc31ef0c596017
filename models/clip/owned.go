package clip

import (
	"context"

	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// loaded is embedded by models that Load* made ready to run: it holds the
// weights they own and gives them Close. Models from Bind* own nothing.
type loaded struct {
	owned *nn.Weights
}

// Close frees the weights the model's Load function allocated (nothing for
// models made with Bind*, whose caller owns the weights).
func (l *loaded) Close() {
	if l.owned != nil {
		l.owned.Free()
		l.owned = nil
	}
}

// runnable is a model that loadOwned can finish.
type runnable interface {
	own(w *nn.Weights, attn nn.AttentionOptions)
}

func (m *TextModel) own(w *nn.Weights, attn nn.AttentionOptions)   { m.owned, m.Attn = w, attn }
func (m *VisionModel) own(w *nn.Weights, attn nn.AttentionOptions) { m.owned, m.Attn = w, attn }

// loadOwned binds a model with bind into fresh weights stored as policy
// says, uploads them for rt (its device, or host memory: Runtime.Upload)
// and hands them to the model.
func loadOwned[M runnable](ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, policy nn.TypePolicy, bind func(*nn.Weights) (M, error)) (M, error) {
	w := nn.NewWeights(len(set.Prefix(normPrefix(prefix)).Names())+16, policy)
	m, err := bind(w)
	if err == nil {
		err = rt.Upload(ctx, w, nil)
	}
	if err != nil {
		w.Free()
		var zero M
		return zero, err
	}
	m.own(w, rt.Attn)
	return m, nil
}
