package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestQuantizeOnceHint(t *testing.T) {
	const long = 90 * time.Second
	hint := quantizeOnceHint("/m/sd_xl_base_1.0.safetensors", "/m/photomaker-v1.bin", "q4_k", 0, long)
	require.Equal(t, "loading took 90s, mostly quantizing to q4_K; do it once with\n"+
		"  photomaker convert /m/sd_xl_base_1.0.safetensors --photomaker /m/photomaker-v1.bin --type q4_K -o sd_xl_base_1.0-q4_K.gguf\n"+
		"and pass --model sd_xl_base_1.0-q4_K.gguf", hint)
	require.Contains(t, quantizeOnceHint("/m/sdxl.safetensors", "", "q8_0", 0, long), "photomaker convert /m/sdxl.safetensors --type q8_0 -o sdxl-q8_0.gguf")
	for _, tc := range []struct {
		model, typ string
		loras      int
		took       time.Duration
	}{
		{"/m/sdxl.safetensors", "q4_K", 0, 5 * time.Second}, // quick: nothing to gain
		{"/m/sdxl.safetensors", "f16", 0, long},             // not a block type
		{"/m/sdxl.safetensors", "", 0, long},                // as in the file
		{"/m/sdxl-q4_K.GGUF", "q4_K", 0, long},              // already converted
		{"/m/sdxl.safetensors", "q4_K", 1, long},            // --lora: the GGUF would not hold it
	} {
		require.Empty(t, quantizeOnceHint(tc.model, "", tc.typ, tc.loras, tc.took), "%+v", tc)
	}
}

func TestFewStepHint(t *testing.T) {
	require.Equal(t, "RealVisXL_V4.0_Lightning.safetensors looks like a few-step lightning model: those are sampled with --timestep-spacing trailing (this run used leading)",
		fewStepHint("/m/RealVisXL_V4.0_Lightning.safetensors", "leading"))
	require.Contains(t, fewStepHint("Hyper-SDXL-8steps.gguf", "leading"), "few-step hyper model")
	require.Empty(t, fewStepHint("/m/RealVisXL_V4.0_Lightning.safetensors", "trailing"), "already trailing")
	require.Empty(t, fewStepHint("sd_xl_base_1.0.safetensors", "leading"))
}
