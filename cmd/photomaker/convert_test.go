package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/pngtext"
)

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "tiny-q4_K.gguf")
	sdxl, v1 := golden.Path("tiny-sdxl.safetensors"), golden.Path("photomaker/photomaker-v1-tiny.safetensors")
	code, stdout, errOut := runCLI(t, "quantize", sdxl, "--photomaker", v1, "--type", "q4_K",
		"--rules", `^pm\.=f16`, "-o", out)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, stdout, "sdxl + photomaker-v1")
	require.Contains(t, stdout, "q4_K")
	require.Contains(t, errOut, "convert [")

	// info names what it is and lists GGUF types.
	code, stdout, errOut = runCLI(t, "info", "--json", "--tensors", out)
	require.Equal(t, 0, code, errOut)
	var doc struct {
		Kind    string
		Bytes   int64
		Tensors []struct {
			Name, Type string
			Bytes      int64
		}
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &doc))
	require.Equal(t, "SDXL GGUF + PhotoMaker v1 adapter (LoRA merged)", doc.Kind)
	types := map[string]string{}
	var sum int64
	for _, tt := range doc.Tensors {
		types[tt.Name] = tt.Type
		sum += tt.Bytes
	}
	require.Equal(t, "F16", types["pm.visual_projection.weight"])
	require.Equal(t, "F32", types["unet.conv_in.bias"])
	require.Equal(t, "Q8_0", types["unet.mid_block.attentions.0.proj_in.weight"]) // 128-wide rows fall back
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.InDelta(t, st.Size(), sum, float64(st.Size())/10, "sizes of quantized tensors count their blocks")

	// The one file generates with ID photos, and its PNGs say PhotoMaker
	// made them although no --photomaker was given.
	generated := filepath.Join(dir, "merged.png")
	code, _, errOut = runCLI(t, "generate", "--model", out, "--id-image", golden.Path("faces/lfw_0.png"), "--prompt", "a photo of a man img",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "-o", generated)
	require.Equal(t, 0, code, errOut)
	b, err := os.ReadFile(generated)
	require.NoError(t, err)
	text, err := pngtext.Read(b)
	require.NoError(t, err)
	require.Contains(t, text["parameters"], ", PhotoMaker: PhotoMaker v1 adapter, Style strength: 20, Trigger word: img, ID images: 1")

	// Never overwrite without --force; PHOTOMAKER_<FLAG> works.
	code, _, errOut = runCLI(t, "convert", sdxl, "--type", "f16", "-o", out)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--force")
	t.Setenv("PHOTOMAKER_TYPE", "q8_0")
	code, stdout, errOut = runCLI(t, "convert", v1, "-o", out, "--force", "--json")
	require.Equal(t, 0, code, errOut)
	var rep struct {
		Kinds  []string `json:"kinds"`
		ByType map[string]struct {
			Tensors int `json:"tensors"`
		} `json:"by_type"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	require.Contains(t, stdout, `"source_bytes":`)
	require.Equal(t, []string{"photomaker-v1"}, rep.Kinds)
	require.Positive(t, rep.ByType["q8_0"].Tensors)
	require.NotContains(t, errOut, "convert [")
	require.NotContains(t, errOut, "warning")
	// A GGUF named otherwise is written, with a word about its name.
	png := filepath.Join(filepath.Dir(out), "adapter.png")
	code, _, errOut = runCLI(t, "convert", v1, "-o", png)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "warning: "+png+" will be a GGUF file; name it .gguf")
}

func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gguf")
	sdxl := golden.Path("tiny-sdxl.safetensors")
	garbage := filepath.Join(dir, "garbage.safetensors")
	require.NoError(t, os.WriteFile(garbage, []byte("garbage, not a model"), 0o644))
	// A GGUF whose header counts one tensor fewer: its last tensor is gone,
	// but the few tensors every checkpoint must have are there.
	short := filepath.Join(t.TempDir(), "short.gguf")
	code, _, errOut := runCLI(t, "convert", sdxl, "--type", "f32", "-o", short)
	require.Equal(t, 0, code, errOut)
	b, err := os.ReadFile(short)
	require.NoError(t, err)
	binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])-1) // after "GGUF" and the version
	require.NoError(t, os.WriteFile(short, b, 0o644))
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"convert", sdxl, "-o", out}, 2, "type"},
		{[]string{"convert", sdxl, "--type", "f16"}, 2, "output"},
		{[]string{"convert", "--type", "f16", "-o", out}, 2, "one SRC"},
		{[]string{"convert", sdxl, sdxl, "--type", "f16", "-o", out}, 2, "one SRC"},
		{[]string{"convert", sdxl, "--type", "q7_X", "-o", out}, 2, "unknown type"},
		{[]string{"convert", sdxl, "--type", "f16", "--rules", "unet(=f16", "-o", out}, 2, "rules"},
		{[]string{"convert", sdxl, "--type", "f16", "--lora-scale", "-1", "-o", out}, 2, "lora-scale"},
		{[]string{"convert", sdxl, "--type", "f16", "--lora-scale", "NaN", "-o", out}, 2, "--lora-scale must be a finite number above 0 and at most 100"},
		{[]string{"convert", sdxl, "--type", "f16", "--lora-scale", "1e30", "-o", out}, 2, "--lora-scale must be a finite number above 0 and at most 100"},
		{[]string{"convert", sdxl, "--type", "f16", "--lora-scale", "Inf", "-o", out}, 2, "--lora-scale must be a finite number above 0 and at most 100"},
		{[]string{"convert", sdxl, "--type", "f16", "--lora-scale", "2", "-o", out}, 2, "--lora-scale is the scale of the --photomaker adapter's LoRA: give the adapter too"},
		{[]string{"convert", sdxl, "--type", "f16", "-o", "-"}, 2, "writing to standard output is not supported"},
		{[]string{"convert", sdxl, "--type", "f16", "-o", filepath.Join(dir, "nodir", "x.gguf")}, 1, "folder " + filepath.Join(dir, "nodir") + " does not exist"},
		{[]string{"convert", garbage, "--type", "f16", "-o", out}, 1, "unrecognised file format"},
		{[]string{"convert", sdxl, "--photomaker", garbage, "--type", "f16", "-o", out}, 1, "garbage.safetensors"},
		{[]string{"convert", short, "--type", "f16", "-o", out}, 1, "short.gguf: vae: missing weight vae."},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, tc.args)
		_, err := os.Stat(out)
		require.True(t, os.IsNotExist(err), "%v left an output file", tc.args)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "only the garbage input remains")
	// info lists what the damaged file holds, then says it cannot be used.
	code, out, errOut = runCLI(t, "info", short)
	require.Equal(t, 1, code)
	require.Contains(t, out, "SDXL GGUF")
	require.Contains(t, errOut, "short.gguf cannot be used: vae: missing weight vae.")
}
