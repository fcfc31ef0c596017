package weights

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// fakeFile writes a safetensors file with zero F16 tensors of the given shapes.
func fakeFile(t *testing.T, tensors map[string][]int64) string {
	t.Helper()
	var entries []safetensors.Entry
	for name, shape := range tensors {
		n := int64(2)
		for _, d := range shape {
			n *= d
		}
		entries = append(entries, safetensors.Entry{Name: name, DType: safetensors.F16, Shape: shape,
			Data: func() ([]byte, error) { return make([]byte, n), nil }})
	}
	p := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, safetensors.Write(p, entries, nil))
	return p
}

// sdxlLike is the minimum an SDXL single file needs to be classified, with
// conv_in's input channels as a parameter.
func sdxlLike(in int64) map[string][]int64 {
	return map[string][]int64{
		"model.diffusion_model.input_blocks.0.0.weight":                                    {32, in, 3, 3},
		"model.diffusion_model.label_emb.0.0.weight":                                       {128, 256},
		"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight":    {64, 2048},
		"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": {10, 8},
		"conditioner.embedders.1.model.token_embedding.weight":                             {10, 8},
		"first_stage_model.decoder.conv_in.weight":                                         {8, 4, 3, 3},
	}
}

func TestDetectUnsupported(t *testing.T) {
	tests := []struct {
		name    string
		tensors map[string][]int64
		want    []string // substrings of the error
	}{
		{"sd15", map[string][]int64{
			"model.diffusion_model.input_blocks.0.0.weight":                                 {320, 4, 3, 3},
			"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": {320, 768},
			"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":     {10, 768},
			"first_stage_model.decoder.conv_in.weight":                                      {512, 4, 3, 3},
		}, []string{"not supported: this looks like an SD1.x checkpoint", "context 768", "cond_stage_model.transformer"}},
		{"sd2", map[string][]int64{
			"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": {320, 1024},
			"cond_stage_model.model.token_embedding.weight":                                 {10, 1024},
		}, []string{"SD2.x", "context 1024"}},
		{"sd3", map[string][]int64{
			"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": {4, 4},
			"first_stage_model.decoder.conv_in.weight":                     {8, 16, 3, 3},
		}, []string{"this looks like a Stable Diffusion 3 checkpoint"}},
		{"flux", map[string][]int64{
			"double_blocks.0.img_attn.qkv.weight": {4, 4},
			"single_blocks.0.linear1.weight":      {4, 4},
		}, []string{"this looks like a Flux checkpoint"}},
		{"flux-prefixed", map[string][]int64{
			"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": {4, 4},
		}, []string{"Flux"}},
		{"sdxl-inpaint", sdxlLike(9), []string{"SDXL inpainting", "9 input channels"}},
		{"sdxl-no-conv-in", func() map[string][]int64 {
			m := sdxlLike(4)
			delete(m, "model.diffusion_model.input_blocks.0.0.weight")
			return m
		}(), []string{"incomplete SDXL checkpoint", "input_blocks.0.0.weight) is missing"}},
		{"sdxl-refiner", map[string][]int64{
			"model.diffusion_model.input_blocks.0.0.weight":        {32, 4, 3, 3},
			"conditioner.embedders.0.model.token_embedding.weight": {10, 8},
		}, []string{"SDXL refiner"}},
		{"vae-original", map[string][]int64{
			"first_stage_model.decoder.conv_in.weight": {8, 4, 3, 3},
			"first_stage_model.encoder.conv_in.weight": {8, 3, 3, 3},
		}, []string{"this is a VAE, not a checkpoint"}},
		{"vae-bare", map[string][]int64{
			"decoder.up.0.block.0.conv1.weight":   {8, 8, 3, 3},
			"encoder.down.0.block.0.conv1.weight": {8, 8, 3, 3},
			"quant_conv.weight":                   {8, 8, 1, 1},
		}, []string{"this is a VAE, not a checkpoint"}},
		{"vae-diffusers", map[string][]int64{
			"decoder.up_blocks.0.resnets.0.conv1.weight": {8, 8, 3, 3},
			"post_quant_conv.weight":                     {4, 4, 1, 1},
		}, []string{"this is a VAE, not a checkpoint"}},
		{"lora-kohya", map[string][]int64{
			"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": {4, 64},
			"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight":   {64, 4},
			"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha":            {},
		}, []string{"this is a LoRA, not a checkpoint", "--lora"}},
		{"lora-peft", map[string][]int64{
			"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": {4, 64},
		}, []string{"this is a LoRA, not a checkpoint"}},
		{"unet-component", map[string][]int64{
			"conv_in.weight":                       {32, 4, 3, 3},
			"down_blocks.0.resnets.0.conv1.weight": {32, 32, 3, 3},
		}, []string{"diffusers UNet weights file"}},
		{"pm-lora-only", map[string][]int64{
			"lora_weights.unet.x.processor.to_q_lora.down.weight": {4, 64},
		}, []string{"PhotoMaker LoRA without its ID encoder"}},
		{"sdxl-missing-vae", func() map[string][]int64 {
			m := sdxlLike(4)
			delete(m, "first_stage_model.decoder.conv_in.weight")
			return m
		}(), []string{"incomplete SDXL model", "vae.decoder.conv_in.weight"}},
		{"unknown", map[string][]int64{"foo.weight": {1}}, []string{"unrecognised model", "foo.weight"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := fakeFile(t, tc.tensors)
			m, err := Open(p)
			if m != nil {
				m.Close()
			}
			require.Error(t, err)
			msg := err.Error()
			assert.True(t, strings.HasPrefix(msg, p+":"), "error names the file: %s", msg)
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

func TestDetectBrokenFiles(t *testing.T) {
	tiny, err := os.ReadFile(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	dir := t.TempDir()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "file is empty"},
		{"truncated", tiny[:len(tiny)/2], "truncated"},
		{"header-only", tiny[:4], "unrecognised file format"},
		{"garbage", []byte("hello world, not a model at all"), "unrecognised file format"},
		{"bad-json", append([]byte{10, 0, 0, 0, 0, 0, 0, 0}, []byte("{not json}")...), "header is not JSON"},
		{"gguf", []byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00"), "GGUF"},
		{"legacy-pickle", []byte("\x80\x02}q\x00."), "legacy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".safetensors")
			require.NoError(t, os.WriteFile(p, tc.data, 0o644))
			_, err := Open(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), p)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err = Open(filepath.Join(dir, "missing.safetensors"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = Open(dir)
	assert.ErrorContains(t, err, "not a diffusers model")
}

// Known-irrelevant extras are ignored silently; anything else is a warning.
func TestSingleFileExtraKeys(t *testing.T) {
	src, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer src.Close()
	var entries []safetensors.Entry
	for _, tt := range src.Tensors() {
		name := tt.Name
		entries = append(entries, safetensors.Entry{Name: name, DType: tt.DType, Shape: tt.Shape, Data: func() ([]byte, error) { return src.Bytes(name) }})
	}
	extra := []string{
		"conditioner.embedders.0.transformer.text_model.embeddings.position_ids", "conditioner.embedders.1.model.logit_scale",
		"model_ema.decay", "model_ema.diffusion_modelinput_blocks00weight", "denoiser.sigmas", "alphas_cumprod",
		"first_stage_model.loss.logvar", "model.diffusion_model.mystery.weight", "cond_stage_model.foo",
	}
	for _, n := range extra {
		entries = append(entries, safetensors.Entry{Name: n, DType: safetensors.F32, Shape: []int64{1}, Data: func() ([]byte, error) { return make([]byte, 4), nil }})
	}
	p := filepath.Join(t.TempDir(), "extra.safetensors")
	require.NoError(t, safetensors.Write(p, entries, nil))
	m, err := Open(p)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, 937, m.Tensors.Len())
	assert.Equal(t, []string{"2 unrecognised tensors skipped", "  cond_stage_model.foo", "  model.diffusion_model.mystery.weight"}, m.Warnings)
}

func TestDetectDiffusersFamilies(t *testing.T) {
	tests := []struct {
		name, unet, index, want string
	}{
		{"sd15", `{"_class_name":"UNet2DConditionModel","cross_attention_dim":768,"in_channels":4}`, `{"_class_name":"StableDiffusionPipeline"}`, "SD1.x pipeline"},
		{"sd2", `{"_class_name":"UNet2DConditionModel","cross_attention_dim":1024,"in_channels":4}`, `{"_class_name":"StableDiffusionPipeline"}`, "SD2.x pipeline"},
		{"inpaint", `{"_class_name":"UNet2DConditionModel","cross_attention_dim":2048,"in_channels":9,"addition_embed_type":"text_time"}`, `{"_class_name":"StableDiffusionXLPipeline"}`, "inpainting"},
		{"sd3", `{}`, `{"_class_name":"StableDiffusion3Pipeline"}`, "Stable Diffusion 3"},
		{"flux", `{}`, `{"_class_name":"FluxPipeline"}`, "Flux"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "unet"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "unet", "config.json"), []byte(tc.unet), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(tc.index), 0o644))
			_, err := Open(dir)
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestDiffusersComponentFolder(t *testing.T) {
	dir := golden.SharedPath(t, "tiny-sdxl/unet")
	_, err := Open(dir)
	assert.ErrorContains(t, err, "one component of a diffusers model")
}

// Opening and reading one small tensor never touches the rest of the file:
// a sparse file declaring a 4 GiB tensor opens and reads instantly.
func TestLazyHugeFile(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("needs a 64-bit address space")
	}
	const big = int64(1) << 31 // elements of F16 → 4 GiB
	hdr := fmt.Sprintf(`{"small.lora_up.weight":{"dtype":"F16","shape":[4,1],"data_offsets":[0,8]},`+
		`"big.lora_down.weight":{"dtype":"F16","shape":[%d],"data_offsets":[8,%d]}}`, big, 8+2*big)
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	p := filepath.Join(t.TempDir(), "huge.safetensors")
	f, err := os.Create(p)
	require.NoError(t, err)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	_, err = f.Write(append(lenBuf[:], hdr...))
	require.NoError(t, err)
	_, err = f.Write([]byte{0, 0x3c, 0, 0x40, 0, 0x42, 0, 0x44}) // 1, 2, 3, 4 in fp16
	require.NoError(t, err)
	require.NoError(t, f.Truncate(int64(8+len(hdr))+8+2*big))
	require.NoError(t, f.Close())

	set, err := OpenLoRA(p)
	require.NoError(t, err)
	defer set.Close()
	bigT, ok := set.Get("big.lora_down.weight")
	require.True(t, ok)
	assert.Equal(t, big, bigT.Elements())
	small, ok := set.Get("small.lora_up.weight")
	require.True(t, ok)
	v, err := small.Float32()
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 2, 3, 4}, v)
}
