package photomaker

import (
	"context"
	"fmt"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/stretchr/testify/require"
)

const idTol = 1e-4 // abs, the kit's suggestion for fp32 ID encoders

func newRuntime(t *testing.T) *nn.Runtime {
	t.Helper()
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	return rt
}

func openAdapter(t *testing.T, version int) *weights.Model {
	t.Helper()
	m, err := weights.Open(golden.Path(fmt.Sprintf("photomaker/photomaker-v%d-tiny.safetensors", version)))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// bindUpload binds module under prefix of set with float32 weights and
// uploads it to rt's device.
func bindUpload(t *testing.T, rt *nn.Runtime, set *weights.Set, prefix string, module any) {
	t.Helper()
	w := nn.NewWeights(len(set.Names())+8, nn.AllF32)
	t.Cleanup(w.Free)
	require.NoError(t, w.Bind(set, prefix, module))
	require.NoError(t, w.Upload(context.Background(), rt.Device, nil))
}

func maskBools(v []int64) []bool {
	out := make([]bool, len(v))
	for i, x := range v {
		out[i] = x != 0
	}
	return out
}

// v1 ID embeddings of the first n golden photos: visual_projection ++
// visual_projection_2 per image.
func goldenV1IDEmbeds(t *testing.T, n int) []float32 {
	p1 := golden.Ref(t, "id_encoder_v1:visual_projection")
	p2 := golden.Ref(t, "id_encoder_v1:visual_projection_2")
	w1, w2 := int(p1.Shape[1]), int(p2.Shape[1])
	var out []float32
	for i := 0; i < n; i++ {
		out = append(out, p1.Data[i*w1:(i+1)*w1]...)
		out = append(out, p2.Data[i*w2:(i+1)*w2]...)
	}
	return out
}

func TestFuseModuleV1Golden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	m := openAdapter(t, 1)
	var f FuseModule
	bindUpload(t, rt, m.Tensors, "pm.fuse_module.", &f)
	require.NoError(t, f.check())
	require.Equal(t, 128, f.Width())
	require.Equal(t, 128, f.IDWidth())

	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) {
			key := func(k string) string { return fmt.Sprintf("id_encoder_v1:n%d.%s", n, k) }
			pe := golden.Ref(t, key("prompt_embeds"))
			rows := MaskRows(maskBools(golden.Int64(t, key("class_tokens_mask"))))
			require.Len(t, rows, n)
			id := goldenV1IDEmbeds(t, n)
			out, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
				p := GatherRows(c, c.InputF32(pe.Data, 128, 77), rows)
				return []*ggml.Tensor{f.Forward(c, p, c.InputF32(id, 128, int64(n)))}
			})
			require.NoError(t, err)
			got := ScatterRows(pe.Data, 128, rows, out[0].Data)
			golden.AssertClose(t, "updated_prompt_embeds", got, golden.Ref(t, key("updated_prompt_embeds")).Data, idTol, 0)
		})
	}
}

func TestFuseRejectsBadShapes(t *testing.T) {
	rt := newRuntime(t)
	m := openAdapter(t, 1)
	var f FuseModule
	bindUpload(t, rt, m.Tensors, "pm.fuse_module.", &f)
	// Swap in mlp2 as mlp1: its input is no wider than the output.
	f.MLP1 = f.MLP2
	require.ErrorContains(t, f.check(), "not larger")
}

func TestMaskRowsAndScatter(t *testing.T) {
	require.Equal(t, []int{1, 3}, MaskRows([]bool{false, true, false, true}))
	require.Nil(t, MaskRows(make([]bool, 3)))
	pe := []float32{0, 0, 1, 1, 2, 2}
	got := ScatterRows(pe, 2, []int{2, 0}, []float32{7, 8, 9, 10})
	require.Equal(t, []float32{9, 10, 1, 1, 7, 8}, got)
	require.Equal(t, []float32{0, 0, 1, 1, 2, 2}, pe) // input untouched
}
