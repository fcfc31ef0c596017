package clip

import (
	"context"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/stretchr/testify/require"
)

const tol = 1e-4 // abs, the kit's suggestion for fp32 text/ID encoders

func newRuntime(t *testing.T) *nn.Runtime {
	t.Helper()
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	return rt
}

func openModel(t *testing.T, rel string) *weights.Model {
	t.Helper()
	m, err := weights.Open(golden.Path(rel))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func ints(v []int64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// pad appends pad ids to 77 tokens (the reference tokenizers' padding).
func pad(ids []int, p int) []int {
	for len(ids) < 77 {
		ids = append(ids, p)
	}
	return ids
}

// Negative prompts are not among the tokenizer goldens; their ids
// (<|startoftext|> … <|endoftext|>) were computed with the kit's CLIP BPE
// vocabulary and are confirmed by the negative-embedding goldens below.
var negativeIDs = map[string][]int{
	"blurry, low quality":                     {49406, 21977, 267, 1042, 3027, 49407},
	"(asymmetry, worst quality, low quality)": {49406, 263, 32539, 20039, 267, 5719, 3027, 267, 1042, 3027, 264, 49407},
}

func concat(parts ...[]float32) []float32 {
	var out []float32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestTextEncodersGolden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	m := openModel(t, "tiny-sdxl.safetensors")
	enc, err := LoadSDXL(ctx, rt, m.Tensors, nn.AllF32)
	require.NoError(t, err)
	defer enc.Close()
	require.Equal(t, TextParams{Vocab: 49408, Positions: 77, Hidden: 64, Heads: 1, Layers: 2, Intermediate: 256}, enc.TE1.Params)
	require.Equal(t, 64, enc.TE2.Params.Projection)
	require.Equal(t, QuickGELU, enc.TE1.Config.Activation)
	require.Equal(t, GELU, enc.TE2.Config.Activation)

	// Table from cases.json's encode_prompt.* cases (read by name: cases.json
	// holds -Infinity elsewhere, which encoding/json rejects). negative ""
	// stands for negative_prompt=None.
	for _, tc := range []struct{ name, negative string }{
		{"cat_noneg", ""},
		{"astronaut_neg", "blurry, low quality"},
		{"empty_prompt", ""},
		{"man_noneg", "(asymmetry, worst quality, low quality)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := func(key string) []float32 { return golden.Ref(t, "text_encoders:"+tc.name+"."+key).Data }
			ids1 := ints(golden.Int64(t, "text_encoders:"+tc.name+".input_ids_tokenizer"))
			ids2 := ints(golden.Int64(t, "text_encoders:"+tc.name+".input_ids_tokenizer_2"))

			r1, err := enc.TE1.Encode(ctx, rt, [][]int{ids1})
			require.NoError(t, err)
			golden.AssertClose(t, "te1 hidden_states", concat(r1.Hidden...), ref("te1_hidden_states"), tol, 0)
			golden.AssertClose(t, "te1 last_hidden_state", r1.Last, ref("te1_last_hidden_state"), tol, 0)
			golden.AssertClose(t, "te1 pooler_output", r1.Pooled, ref("te1_pooler_output"), tol, 0)
			require.Nil(t, r1.Projected)

			r2, err := enc.TE2.Encode(ctx, rt, [][]int{ids2})
			require.NoError(t, err)
			golden.AssertClose(t, "te2 hidden_states", concat(r2.Hidden...), ref("te2_hidden_states"), tol, 0)
			golden.AssertClose(t, "te2 text_embeds", r2.Projected, ref("te2_text_embeds"), tol, 0)

			cond, err := enc.Encode(ctx, rt, ids1, ids2, false)
			require.NoError(t, err)
			require.Equal(t, 77, cond.Tokens)
			require.Equal(t, 128, cond.Width)
			golden.AssertClose(t, "prompt_embeds", cond.Embeds, ref("prompt_embeds"), tol, 0)
			golden.AssertClose(t, "pooled_prompt_embeds", cond.Pooled, ref("pooled_prompt_embeds"), tol, 0)

			var neg *Conditioning
			if tc.negative == "" {
				neg, err = enc.Encode(ctx, rt, nil, nil, true)
			} else {
				ids := negativeIDs[tc.negative]
				neg, err = EncodeSDXL(ctx, rt, enc.TE1, enc.TE2, pad(append([]int{}, ids...), 49407), pad(append([]int{}, ids...), 0), false)
			}
			require.NoError(t, err)
			golden.AssertClose(t, "negative_prompt_embeds", neg.Embeds, ref("negative_prompt_embeds"), tol, 0)
			golden.AssertClose(t, "negative_pooled_prompt_embeds", neg.Pooled, ref("negative_pooled_prompt_embeds"), tol, 0)
		})
	}
}

func TestVisionGolden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	m := openModel(t, "photomaker/photomaker-v1-tiny.safetensors")
	vm, err := LoadVision(ctx, rt, m.Tensors, "pm.", VisionConfig{}, nn.AllF32)
	require.NoError(t, err)
	defer vm.Close()
	require.Equal(t, VisionParams{ImageSize: 224, PatchSize: 14, Positions: 257, Hidden: 128, Heads: 2,
		Layers: 2, Intermediate: 512, Projection: 64, Projection2: 64}, vm.Params)

	// Case id_encoder_v1.vision.
	px := golden.Ref(t, "id_encoder_v1:id_pixel_values")
	require.Equal(t, []int64{4, 3, 224, 224}, px.Shape)
	per := 3 * 224 * 224
	images := make([][]float32, 4)
	for i := range images {
		images[i] = px.Data[i*per : (i+1)*per]
	}
	r, err := vm.Encode(ctx, rt, images)
	require.NoError(t, err)
	ref := func(key string) []float32 { return golden.Ref(t, "id_encoder_v1:"+key).Data }
	golden.AssertClose(t, "last_hidden_state", r.Last, ref("last_hidden_state"), tol, 0)
	golden.AssertClose(t, "pooled", r.Pooled, ref("pooled"), tol, 0)
	golden.AssertClose(t, "visual_projection", r.Projected, ref("visual_projection"), tol, 0)
	golden.AssertClose(t, "visual_projection_2", r.Projected2, ref("visual_projection_2"), tol, 0)

	id := r.IDEmbeds()
	require.Len(t, id, 4*128)
	require.Equal(t, r.Projected[64:128], id[128:192])
	require.Equal(t, r.Projected2[64:128], id[192:256])

	// A single image gives the same numbers as in the batch.
	one, err := vm.Encode(ctx, rt, images[2:3])
	require.NoError(t, err)
	golden.AssertClose(t, "image 2 alone", one.Pooled, r.Pooled[2*128:3*128], 1e-5, 0)
}

// Half-precision weights (the usual low-memory setting) stay close to the
// fp32 goldens.
func TestF16WeightsNearGolden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	f16 := nn.KeepPrecise(func(string, *weights.Tensor) ggml.Type { return ggml.TypeF16 })

	m := openModel(t, "tiny-sdxl.safetensors")
	enc, err := LoadSDXL(ctx, rt, m.Tensors, f16)
	require.NoError(t, err)
	defer enc.Close()
	require.Equal(t, ggml.TypeF16, enc.TE1.Model.Encoder.Layers[0].MLP.FC1.Weight.Type())
	ids1 := ints(golden.Int64(t, "text_encoders:cat_noneg.input_ids_tokenizer"))
	ids2 := ints(golden.Int64(t, "text_encoders:cat_noneg.input_ids_tokenizer_2"))
	cond, err := enc.Encode(ctx, rt, ids1, ids2, false)
	require.NoError(t, err)
	golden.AssertClose(t, "prompt_embeds (f16 weights)", cond.Embeds, golden.Ref(t, "text_encoders:cat_noneg.prompt_embeds").Data, 5e-3, 0)
	golden.AssertClose(t, "pooled (f16 weights)", cond.Pooled, golden.Ref(t, "text_encoders:cat_noneg.pooled_prompt_embeds").Data, 5e-3, 0)

	pm := openModel(t, "photomaker/photomaker-v1-tiny.safetensors")
	vm, err := LoadVision(ctx, rt, pm.Tensors, "pm.", VisionConfig{}, f16)
	require.NoError(t, err)
	defer vm.Close()
	px := golden.Ref(t, "id_encoder_v1:id_pixel_values").Data[:3*224*224]
	r, err := vm.Encode(ctx, rt, [][]float32{px})
	require.NoError(t, err)
	golden.AssertClose(t, "pooled (f16 weights)", r.Pooled, golden.Ref(t, "id_encoder_v1:pooled[:1]").Data, 5e-3, 0)
}
