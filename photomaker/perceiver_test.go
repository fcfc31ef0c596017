package photomaker

import (
	"context"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/stretchr/testify/require"
)

func TestPerceiverV2Golden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	m := openAdapter(t, 2)
	w := nn.NewWeights(len(m.Tensors.Names())+8, nn.AllF32)
	defer w.Free()
	q, err := BindPerceiver(w, m.Tensors, "pm.qformer_perceiver.", PerceiverConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Upload(ctx, rt.Device, nil))
	require.Equal(t, PerceiverParams{IDWidth: 512, Tokens: 2, Dim: 128, Embedding: 128, Depth: 4,
		Heads: 1, DimHead: 128, Eps: DefaultEps}, q.Params)

	// Case id_encoder_v2.tokens: raw face embeddings and the vision tower's
	// last hidden state in, the 2 ID tokens per image out.
	id := golden.Ref(t, "id_encoder_v2:id_embeds")
	lhs := golden.Ref(t, "id_encoder_v2:last_hidden_state")
	require.Equal(t, []int64{4, 512}, id.Shape)
	require.Equal(t, []int64{4, 257, 128}, lhs.Shape)
	out, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		e := c.InputF32(id.Data, 512, 4)
		h := c.InputF32(lhs.Data, 128, 257, 4)
		return []*ggml.Tensor{q.Tokens(c, e), q.Forward(c, e, h)}
	})
	require.NoError(t, err)
	require.Equal(t, [4]int64{128, 2, 4, 1}, out[1].Shape)
	golden.AssertClose(t, "token_proj_normed", out[0].Data, golden.Ref(t, "id_encoder_v2:token_proj_normed").Data, idTol, 0)
	golden.AssertClose(t, "id_tokens", out[1].Data, golden.Ref(t, "id_encoder_v2:id_tokens").Data, idTol, 0)
}

func TestPerceiverRejectsBadDimHead(t *testing.T) {
	m := openAdapter(t, 2)
	w := nn.NewWeights(len(m.Tensors.Names())+8, nn.AllF32)
	defer w.Free()
	_, err := BindPerceiver(w, m.Tensors, "pm.qformer_perceiver.", PerceiverConfig{DimHead: 96})
	require.ErrorContains(t, err, "not a multiple of dim_head 96")
	_, err = BindPerceiver(nn.NewWeights(8, nil), m.Tensors, "pm.nothing.", PerceiverConfig{})
	require.ErrorIs(t, err, nn.ErrMissing)
}
