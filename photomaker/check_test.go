package photomaker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights"
)

// CheckWeights passes whole models and adapters and names the first weight
// missing from an incomplete one (a GGUF whose tensor count was lowered
// loses its last tensor: the checkpoint's few required tensors are there).
func TestCheckWeights(t *testing.T) {
	for _, name := range []string{"tiny-sdxl.safetensors", "photomaker/photomaker-v1-tiny.safetensors", "photomaker/photomaker-v2-tiny.safetensors"} {
		m, err := weights.Open(golden.Path(name))
		require.NoError(t, err)
		require.NoError(t, CheckWeights(m), name)
		m.Close()
	}
	m, err := weights.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer m.Close()
	for drop, says := range map[string]string{
		"vae.quant_conv.weight": "vae.quant_conv.weight",
		"unet.up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight": "unet.up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight",
		"te2.text_projection.weight":             "needs text_projection",
		"te1.text_model.final_layer_norm.weight": "te1.text_model.final_layer_norm.weight",
	} {
		less := weights.NewSet()
		for _, n := range m.Tensors.Names() {
			if n != drop {
				tensor, _ := m.Tensors.Get(n)
				require.NoError(t, less.Add(tensor))
			}
		}
		_, ok := m.Tensors.Get(drop)
		require.True(t, ok, drop)
		err := CheckWeights(&weights.Model{Kind: m.Kind, Tensors: less})
		require.ErrorContains(t, err, says, drop)
	}
	a, err := weights.Open(golden.Path("photomaker/photomaker-v2-tiny.safetensors"))
	require.NoError(t, err)
	defer a.Close()
	less := weights.NewSet()
	for _, n := range a.Tensors.Names() {
		if n != "pm.qformer_perceiver.perceiver_resampler.layers.1.0.to_kv.weight" {
			tensor, _ := a.Tensors.Get(n)
			require.NoError(t, less.Add(tensor))
		}
	}
	require.ErrorContains(t, CheckWeights(&weights.Model{Kind: a.Kind, Tensors: less}), "layers.1.0.to_kv.weight")
}
