package photomaker

import (
	"context"
	"image"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/tools/convert"
)

// One GGUF holding the tiny SDXL with the PhotoMaker v1 adapter (LoRA
// merged at conversion) reproduces the official pipeline's end-to-end
// golden, loaded without a separate adapter.
func TestGGUFEndToEnd(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tiny-pm-v1.gguf")
	_, err := convert.Convert(context.Background(), convert.Options{
		Src: golden.Path("tiny-sdxl.safetensors"), PhotoMaker: golden.Path("photomaker/photomaker-v1-tiny.safetensors"),
		Type: ggml.TypeF32, Out: out})
	require.NoError(t, err)
	p, err := Load(context.Background(), Config{Model: out, Device: "cpu", WeightType: "f32"})
	require.NoError(t, err)
	defer p.Close()
	require.Equal(t, "PhotoMaker v1 adapter", p.Kind())
	var faces []image.Image
	for _, f := range []string{"faces/astronaut_0.png", "faces/astronaut_1.png"} {
		img, err := imageproc.DecodeFile(golden.Path(f), imageproc.Limits{})
		require.NoError(t, err)
		faces = append(faces, img)
	}
	req := Request{
		Prompt:         "a photo of a man img, portrait, sharp focus",
		NegativePrompt: "(asymmetry, worst quality, low quality, illustration, 3d, 2d, painting, cartoons, sketch), open mouth",
		Width:          128, Height: 128, Steps: 8, Guidance: 5, StyleStrength: 20,
		IDImages:       faces,
		InitialLatents: golden.Ref(t, "e2e_v1:initial_latents").Data,
	}
	var final []float32
	p.testHookFinalLatents = func(l []float32) { final = append([]float32(nil), l...) }
	_, err = p.Generate(context.Background(), req)
	require.NoError(t, err)
	golden.AssertClose(t, "final latents", final, golden.Ref(t, "e2e_v1:final_latents").Data, 1e-3, 0)

	_, err = Load(context.Background(), Config{Model: out, PhotoMaker: golden.Path("photomaker/photomaker-v1-tiny.safetensors"), Device: "cpu"})
	require.ErrorContains(t, err, "already holds a PhotoMaker adapter")
}

// A quantized GGUF loads with its stored types (quantized blocks uploaded
// as they are) or dequantized for another type, and generates.
func TestGGUFQuantizedLoads(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tiny-q8.gguf")
	_, err := convert.Convert(context.Background(), convert.Options{
		Src: golden.Path("tiny-sdxl.safetensors"), PhotoMaker: golden.Path("photomaker/photomaker-v1-tiny.safetensors"),
		Type: ggml.TypeQ8_0, Out: out})
	require.NoError(t, err)
	face, err := imageproc.DecodeFile(golden.Path("faces/astronaut_0.png"), imageproc.Limits{})
	require.NoError(t, err)
	for _, wt := range []string{"", "f32", "q4_0"} {
		p, err := Load(context.Background(), Config{Model: out, Device: "cpu", WeightType: wt})
		require.NoError(t, err, wt)
		require.Equal(t, "PhotoMaker v1 adapter", p.Kind())
		res, err := p.Generate(context.Background(), Request{Prompt: "a photo of a man img", IDImages: []image.Image{face},
			Width: 64, Height: 64, Steps: 2, Seed: 1})
		require.NoError(t, err, wt)
		require.Len(t, pixels(res.Images[0]), 64*64*3)
		p.Close()
	}
}
