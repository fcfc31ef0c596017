package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/pngtext"
	"github.com/gophotomaker/photomaker/photomaker"

	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"photomaker"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDevices(t *testing.T) {
	code, out, _ := runCLI(t, "devices")
	require.Equal(t, 0, code)
	require.Contains(t, out, "CPU")
	code, out, _ = runCLI(t, "devices", "--json")
	require.Equal(t, 0, code)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.NotEmpty(t, rows)
	require.Equal(t, "CPU", rows[0]["type"])
	require.Greater(t, rows[0]["total_bytes"], 0.0)
}

// $PHOTOMAKER_VIRTUAL_GPU adds the virtual GPU (never picked by "auto").
func TestVirtualGPUByEnv(t *testing.T) {
	t.Setenv("PHOTOMAKER_VIRTUAL_GPU", "none")
	code, _, errOut := runCLI(t, "devices")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "memory in GiB")
	t.Setenv("PHOTOMAKER_VIRTUAL_GPU", "2")
	code, out, _ := runCLI(t, "devices")
	require.Equal(t, 0, code)
	require.Contains(t, out, "VGPU0")
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.Contains(t, out, "photomaker")
}

func TestUsageErrorsExit2(t *testing.T) {
	code, _, errOut := runCLI(t, "devices", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--help")
	code, _, _ = runCLI(t, "no-such-command")
	require.Equal(t, 2, code)
}

func TestInfo(t *testing.T) {
	code, out, errOut := runCLI(t, "info", golden.Path("tiny-sdxl.safetensors"))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "SDXL single-file checkpoint")
	require.Contains(t, out, "unet")
	require.Contains(t, out, "GPU memory for one 1024×1024 image, weights as stored")
	require.Contains(t, out, "--vram stream")
	// The estimates as JSON, for another size and type; they shrink with both.
	var est struct {
		DeviceMemory []photomaker.MemoryEstimate `json:"device_memory"`
	}
	code, out, errOut = runCLI(t, "info", "--json", "--type", "q8_0", "--width", "512", "--height", "512", golden.Path("tiny-sdxl.safetensors"))
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &est))
	want, err := photomaker.EstimateMemory(photomaker.Config{Model: golden.Path("tiny-sdxl.safetensors"), WeightType: "q8_0"}, 512, 512)
	require.NoError(t, err)
	require.Equal(t, want, est.DeviceMemory)
	require.Less(t, want[0].Bytes, want[0].ServeBytes, "generate holds one part at a time")
	require.Len(t, want, 3)
	big, err := photomaker.EstimateMemory(photomaker.Config{Model: golden.Path("tiny-sdxl.safetensors")}, 2048, 2048)
	require.NoError(t, err)
	for i := range want {
		require.Less(t, want[i].Bytes, big[i].Bytes, want[i].Mode)
	}
	code, out, _ = runCLI(t, "info", "--json", "--tensors", golden.Path("photomaker/photomaker-v1-real.bin"))
	require.Equal(t, 0, code)
	var doc struct {
		Kind    string
		Tensors []struct{ Name, Type string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Equal(t, "PhotoMaker v1 adapter", doc.Kind)
	types := map[string]bool{}
	for _, tt := range doc.Tensors {
		types[tt.Type] = true
	}
	require.True(t, types["BF16"] && types["F32"], "the real .bin mixes bf16 and f32: %v", types)
	// Flags after the file, as in the README.
	code, out, errOut = runCLI(t, "info", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--tensors")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `NAME\s+TYPE\s+SHAPE\s+SIZE\n`, out)
	code, _, errOut = runCLI(t, "info", "/nonexistent/model.safetensors")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "/nonexistent/model.safetensors")
	code, _, _ = runCLI(t, "info")
	require.Equal(t, 2, code)
}

func TestGenerateTiny(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cat.png")
	args := []string{"generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "a photo of a cat",
		"--width", "64", "--height", "64", "--steps", "2", "--device", "cpu", "--rng", "torch-cpu", "-o", out}
	code, stdout, errOut := runCLI(t, args...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, stdout, "wrote "+out)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	text, err := pngtext.Read(b)
	require.NoError(t, err)
	require.Contains(t, text["parameters"], "a photo of a cat\n")
	require.Contains(t, text["parameters"], "Steps: 2, Sampler: euler")
	require.NotContains(t, text["parameters"], "Timestep spacing", "the default (leading) goes unsaid")
	// Never overwrites without --force.
	code, _, errOut = runCLI(t, args...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "already exists")
	// Usage errors exit 2.
	code, _, _ = runCLI(t, "generate", "--model", "x", "--prompt", "y", "--width", "100")
	require.Equal(t, 2, code)
	code, _, errOut = runCLI(t, "generate", "--model", "x", "--prompt", "y", "--style", "watercolour")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unknown style")
	code, _, errOut = runCLI(t, "generate", "--model", "x", "--prompt", "y", "--vram", "lots")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "auto, full, low, stream")
	// Quantized weights with quantized convolution kernels.
	q := filepath.Join(t.TempDir(), "q.png")
	code, _, errOut = runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "a photo of a cat",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "--type", "q8_0", "--quantize-convs", "-o", q)
	require.Equal(t, 0, code, errOut)
	_, err = os.Stat(q)
	require.NoError(t, err)
}

func TestGeneratePhotoMakerTiny(t *testing.T) {
	out := filepath.Join(t.TempDir(), "me.png")
	code, stdout, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-real.bin"),
		"--id-image", golden.Path("faces/astronaut_0.png"), "--id-image", golden.Path("faces/lfw_0.png"),
		"--prompt", "a photo of a man img, portrait", "--style", "photographic", "--vram", "stream", "--json",
		"--width", "64", "--height", "64", "--steps", "3", "--device", "cpu", "-o", out)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, stdout, `"vram":"stream"`)
	_, err := os.Stat(out)
	require.NoError(t, err)
	// Without the trigger word: a clear error, no file.
	out2 := filepath.Join(t.TempDir(), "none.png")
	code, _, errOut = runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-real.bin"),
		"--id-image", golden.Path("faces/astronaut_0.png"), "--prompt", "a photo of a man",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "-o", out2)
	require.Equal(t, 2, code, "a usage error")
	require.Contains(t, errOut, "trigger word")
	_, err = os.Stat(out2)
	require.True(t, os.IsNotExist(err))
	// A photo that does not decode.
	bad := filepath.Join(t.TempDir(), "bad.jpg")
	require.NoError(t, os.WriteFile(bad, []byte("not an image"), 0o644))
	code, _, errOut = runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-real.bin"), "--id-image", bad,
		"--prompt", "a photo of a man img", "--device", "cpu", "-o", out2)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "bad.jpg")
}

func TestGenerateTwoPeople(t *testing.T) {
	out := filepath.Join(t.TempDir(), "two.png")
	code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"),
		"--id", "man="+golden.Path("faces/astronaut_0.png")+","+golden.Path("faces/astronaut_1.png"),
		"--id", "woman="+golden.Path("faces/lfw_1.png"),
		"--prompt", "a man img and a woman img at the beach",
		"--width", "64", "--height", "64", "--steps", "2", "--device", "cpu", "-o", out)
	require.Equal(t, 0, code, errOut)
	_, err := os.Stat(out)
	require.NoError(t, err)
	code, _, errOut = runCLI(t, "generate", "--model", "m", "--photomaker", "p", "--id", "man", "--prompt", "x")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "NAME=PHOTO")
}

func TestGenerateLoRAFlag(t *testing.T) {
	code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "x",
		"--lora", "/nonexistent/style.safetensors:0.8")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "/nonexistent/style.safetensors")
	ls, err := parseLoRAs([]string{golden.Path("tiny-sdxl.safetensors") + ":0.5", golden.Path("tiny-sdxl.safetensors")})
	require.NoError(t, err)
	require.Equal(t, float32(0.5), ls[0].Scale)
	require.Equal(t, float32(1), ls[1].Scale)
	// A PhotoMaker adapter as --lora merges its LoRA, and says how to use it whole.
	code, _, errOut = runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "x",
		"--lora", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--width", "64", "--height", "64", "--steps", "1",
		"--device", "cpu", "-o", filepath.Join(t.TempDir(), "x.png"))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "is a PhotoMaker adapter: only its LoRA is merged; pass it as the adapter (--photomaker)")
}

// An output not named .png is still a PNG, and the command says so.
func TestGenerateWarnsOfOtherExtension(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.jpg")
	code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "x",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "-o", out)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "x.jpg will be a PNG file; name it .png")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("\x89PNG")))
}

// Images of one command share the seed; each PNG says its place in the
// batch, which reproduces it with that seed.
func TestGenerateBatchParameters(t *testing.T) {
	out := filepath.Join(t.TempDir(), "b.png")
	code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"), "--prompt", "x",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "-n", "2", "--seed", "5", "-o", out)
	require.Equal(t, 0, code, errOut)
	for i, name := range []string{"b-1.png", "b-2.png"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(out), name))
		require.NoError(t, err)
		text, err := pngtext.Read(b)
		require.NoError(t, err)
		require.Contains(t, text["parameters"], "Seed: 5,")
		require.True(t, strings.HasSuffix(text["parameters"], fmt.Sprintf(", Batch size: 2, Batch pos: %d", i)), text["parameters"])
	}
	require.Empty(t, photomaker.BatchParameters(1, 0))
}

// A mistyped command or flag gets the nearest one; a global flag after the
// command is told where it goes; flags are named as the help names them.
func TestUsageSuggestions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"generat"}, `Did you mean "generate"?`},
		{[]string{"generate", "--widht", "64"}, "flag provided but not defined: --widht; did you mean --width?"},
		{[]string{"generate", "--verbose"}, "flag provided but not defined: --verbose (--verbose goes before the command: photomaker --verbose generate ...)"},
		{[]string{"--verbos", "devices"}, "did you mean --verbose?"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, tc.args)
		require.Contains(t, errOut, tc.want, tc.args)
	}
	code, _, errOut := runCLI(t, "generate", "--zzz")
	require.Equal(t, 2, code)
	require.NotContains(t, errOut, "did you mean", "nothing near")
	require.Equal(t, 0, editDistance("width", "width"))
	require.Equal(t, 2, editDistance("widht", "width"))
	require.Equal(t, 3, editDistance("", "abc"))
}
