//go:build unix

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/pngtext"
)

// Bad arguments are refused before anything loads: each case runs with a
// model file that does not exist, so reaching the loader means the
// argument was accepted (exit 1, "no-such-model").
func TestArgumentsRefusedBeforeLoading(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "no-such-model.safetensors")
	out := filepath.Join(dir, "out.png")
	lora := golden.Path("tiny-sdxl.safetensors")
	empty := filepath.Join(dir, "empty.png")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "folder.png"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "m-2.png"), 0o755))
	gen := func(args ...string) []string {
		return append([]string{"generate", "--model", model, "--device", "cpu", "-o", out}, args...)
	}
	face := golden.Path("faces/lfw_0.png")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		// Stray arguments stop urfave/cli's flag parsing: refused, named.
		{gen("--steps", "1", "--prompt", "a", "photo", "of", "a", "lighthouse"), 2, `unexpected argument "photo": generate takes only flags; quote a prompt with spaces`},
		{gen("photo", "--prompt", "x"), 2, `unexpected argument "photo"`},
		{[]string{"bench", "--random", "extra", "--steps", "1"}, 2, `unexpected argument "extra": bench takes only flags`},
		{[]string{"serve", "--model", model, "extra"}, 2, `unexpected argument "extra": serve takes only flags`},
		{[]string{"devices", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"version", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"serve"}, 2, "--model is required"},
		// --threads
		{gen("--prompt", "x", "--threads", "-1"), 2, "--threads must not be negative"},
		{[]string{"bench", "--random", "--threads", "-1"}, 2, "--threads must not be negative"},
		{[]string{"serve", "--model", model, "--threads", "-1"}, 2, "--threads must not be negative"},
		{[]string{"convert", model, "--type", "f16", "-o", out, "--threads", "-1"}, 2, "--threads must not be negative"},
		// Mistyped names are usage errors, checked before anything loads.
		{gen("--prompt", "x", "--sampler", "bogus"), 2, `unknown --sampler "bogus" (want euler, euler_a, dpmpp_2m or ddim)`},
		{gen("--prompt", "x", "--rng", "bogus"), 2, `unknown --rng "bogus" (want torch-cuda or torch-cpu)`},
		{gen("--prompt", "x", "--timestep-spacing", "spread"), 2, `--timestep-spacing: unknown timestep spacing "spread" (want leading, linspace, trailing)`},
		{gen("--prompt", "x", "--type", "bogus"), 2, "--type: "},
		{gen("--prompt", "x", "--type", "i32"), 2, `--type: weight type "i32": want f32, f16, bf16 or a block type`},
		{[]string{"serve", "--model", model, "--type", "bogus"}, 2, "--type: "},
		{[]string{"serve", "--model", model, "--timestep-spacing", "spread"}, 2, `--timestep-spacing: unknown timestep spacing "spread"`},
		{[]string{"serve", "--model", model, "--steps", "300"}, 2, "--steps must be 1 to --max-steps (200), got 300"},
		{[]string{"serve", "--model", model, "--guidance", "NaN"}, 2, "--guidance must be a finite number"},
		{[]string{"bench", "--random", "--type", "i32"}, 2, "--type: "},
		{[]string{"info", model, "--type", "bogus"}, 2, "--type: "},
		// bench --id-images: checked before any photo is made.
		{[]string{"bench", "--random", "--id-images", "100000"}, 2, "--id-images must be 1 to 77"},
		{[]string{"bench", "--random", "--id-images", "-1"}, 2, "--id-images must be 1 to 77"},
		{[]string{"bench", "--random", "--id-images", "0"}, 2, "--id-images must be 1 to 77"},
		// Non-finite and out-of-range numbers.
		{gen("--prompt", "x", "--guidance", "NaN"), 2, "--guidance must be a finite number from 0 to 50"},
		{gen("--prompt", "x", "--guidance", "Inf"), 2, "--guidance must be a finite number from 0 to 50"},
		{gen("--prompt", "x", "--guidance", "1e300"), 2, "--guidance must be a finite number from 0 to 50"},
		{gen("--prompt", "x", "--guidance", "-1"), 2, "--guidance must be a finite number from 0 to 50"},
		{[]string{"bench", "--random", "--guidance", "NaN"}, 2, "--guidance must be a finite number"},
		{gen("--prompt", "x", "--style-strength", "NaN"), 2, "--style-strength is a percentage from 0 to 100"},
		{gen("--prompt", "x", "--style-strength", "101"), 2, "--style-strength is a percentage from 0 to 100"},
		{gen("--prompt", "x", "--lora", lora+":NaN"), 2, "the scale must be a finite number from -100 to 100"},
		{gen("--prompt", "x", "--lora", lora+":1e30"), 2, "the scale must be a finite number from -100 to 100"},
		{gen("--prompt", "x", "--lora", lora+":-Inf"), 2, "the scale must be a finite number from -100 to 100"},
		{gen("--prompt", "x", "--lora", lora+":1e400"), 2, "the scale must be a finite number from -100 to 100"},
		{gen("--prompt", "x", "--vae-tile", "-5"), 2, "--vae-tile must be -1"},
		{gen("--prompt", "x", "--vae-tile", "1"), 2, "--vae-tile must be -1"},
		{[]string{"serve", "--model", model, "--max-side", "7"}, 2, "--max-side must be a positive multiple of 8"},
		{[]string{"info", "--width", "7", lora}, 2, "--width must be a positive multiple of 8"},
		{[]string{"info", lora, "--height", "-8"}, 2, "--height must be a positive multiple of 8"},
		// Outputs: checked before the model loads.
		{gen("--prompt", "x", "-o", ""), 2, "--output is empty"},
		{gen("--prompt", "x", "-o", "-"), 2, "writing to standard output is not supported; give a file name"},
		{gen("--prompt", "x", "-o", filepath.Join(dir, "nodir", "x.png")), 1, "folder " + filepath.Join(dir, "nodir") + " does not exist"},
		{gen("--prompt", "x", "-n", "3", "-o", filepath.Join(dir, "m.png")), 1, filepath.Join(dir, "m-2.png") + " is a folder"},
		{gen("--prompt", "x", "--force", "-o", filepath.Join(dir, "folder.png")), 1, "is a folder, not a file"},
		{[]string{"convert", model, "--type", "f16", "--force", "-o", filepath.Join(dir, "folder.png")}, 1, "is a folder, not a file"},
		// ID photos.
		{gen("--prompt", "a man img", "--id", "man="+face+","), 2, "empty photo path in --id man=" + face + ","},
		{gen("--prompt", "a man img", "--id-image", empty), 1, empty + " is empty"},
		{gen("--prompt", "a man img", "--id-image", filepath.Join(dir, "folder.png")), 1, "folder.png is a folder, not an image"},
		{gen("--prompt", "a man img", "--id", "man="+face, "--id-embeds", "e.npy"), 2, "with --id, --id-embeds wants NAME=FILE"},
		{gen("--prompt", "a man img", "--id", "man="+face, "--id-embeds", "woman=e.npy"), 2, "--id-embeds has no face embeddings for the man"},
		// Accepted: these reach the (missing) model.
		{gen("--prompt", "x", "--guidance", "0", "--style-strength", "0", "--vae-tile", "-1", "--lora", lora+":-2.5"), 1, "no-such-model"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, tc.code, code, "%q: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, "%q", tc.args)
		_, err := os.Stat(out)
		require.True(t, os.IsNotExist(err), "%q wrote an output", tc.args)
	}
	_, err := os.Stat(filepath.Join(dir, "m-1.png"))
	require.True(t, os.IsNotExist(err), "no image of a refused batch is written")
}

// More threads than logical CPUs are capped, with a warning.
func TestThreadsCapped(t *testing.T) {
	model := filepath.Join(t.TempDir(), "no-such-model.safetensors")
	n := runtime.NumCPU()
	code, _, errOut := runCLI(t, "generate", "--model", model, "--prompt", "x", "--device", "cpu",
		"-o", filepath.Join(t.TempDir(), "x.png"), "--threads", fmt.Sprint(n+1))
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, fmt.Sprintf("warning: --threads %d is more than the %d logical CPUs; using %d\n", n+1, n, n))
	_, _, errOut = runCLI(t, "generate", "--model", model, "--prompt", "x", "--device", "cpu",
		"-o", filepath.Join(t.TempDir(), "x.png"), "--threads", fmt.Sprint(n))
	require.NotContains(t, errOut, "warning")
}

func TestCheckOutputs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.png")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "folder"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "m-2.png"), 0o755))
	fifo := filepath.Join(dir, "fifo.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	link := filepath.Join(dir, "link.png")
	require.NoError(t, os.Symlink(file, link))
	for _, tc := range []struct {
		out   string
		n     int
		force bool
		want  string // "" when accepted
		usage bool
	}{
		{filepath.Join(dir, "new.png"), 1, false, "", false},
		{filepath.Join(dir, "new.png"), 3, false, "", false},
		{file, 1, true, "", false},
		{"", 1, false, "--output is empty", true},
		{"", 3, false, "--output is empty", true},
		{"-", 1, true, "writing to standard output is not supported; give a file name", true},
		{file, 1, false, file + " already exists; choose another --output or pass --force", false},
		{filepath.Join(dir, "nodir", "x.png"), 1, false, "folder " + filepath.Join(dir, "nodir") + " does not exist", false},
		{filepath.Join(file, "x.png"), 1, false, file + " is not a folder", false},
		{filepath.Join(dir, "folder"), 1, true, "is a folder, not a file", false},
		{fifo, 1, true, "is a named pipe, not a file", false},
		{link, 1, true, "is a symbolic link, not a file", false},
		{filepath.Join(dir, "m.png"), 3, true, filepath.Join(dir, "m-2.png") + " is a folder", false},
		{"/dev/null", 1, true, "/dev/null is a device, not a file", false},
		{"/proc/x.png", 1, true, "cannot write /proc/x.png: cannot create files in /proc", false},
	} {
		if strings.HasPrefix(tc.out, "/proc/") && runtime.GOOS != "linux" {
			continue
		}
		names, err := checkOutputs(tc.out, tc.n, tc.force)
		if tc.want == "" {
			require.NoError(t, err, tc.out)
			require.Len(t, names, tc.n)
			continue
		}
		require.ErrorContains(t, err, tc.want, tc.out)
		_, isUsage := err.(usageError)
		require.Equal(t, tc.usage, isUsage, tc.out)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 5, "the checks leave no files behind")
}

func TestParseLoRAs(t *testing.T) {
	f := golden.Path("tiny-sdxl.safetensors")
	for _, tc := range []struct {
		spec  string
		scale float32
		err   string
	}{
		{f, 1, ""},
		{f + ":0.5", 0.5, ""},
		{f + ":-100", -100, ""},
		{f + ":100.5", 0, "the scale must be a finite number from -100 to 100, got 100.5"},
		{f + ":NaN", 0, "got NaN"},
		{f + ":inf", 0, "got +Inf"},
		{f + ":1e30", 0, "got 1e+30"},
		{f + ":1e39", 0, "got 1e+39"}, // beyond float32: a bad scale, not part of the path
		{f + ":1e999", 0, "got +Inf"},
		{f + ":x", 0, "no such file"},
	} {
		ls, err := parseLoRAs([]string{tc.spec})
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.spec)
			continue
		}
		require.NoError(t, err, tc.spec)
		require.Equal(t, f, ls[0].Path)
		require.Equal(t, tc.scale, ls[0].Scale)
		require.False(t, math.IsNaN(float64(ls[0].Scale)))
	}
}

// --guidance 0 turns guidance off and --style-strength 0 sets the merge
// step to 0, the ID from the second step (the request reads 0 as "the
// default"): the image is
// the one of --guidance 1 (off too) and --style-strength 1 (merge step
// int(0.01·5) = 0), and the PNG records the 0s asked for.
func TestGuidanceAndStyleStrengthZero(t *testing.T) {
	dir := t.TempDir()
	gen := func(guidance, style string) ([]byte, string) {
		out := filepath.Join(dir, guidance+"-"+style+".png")
		code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
			"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--id-image", golden.Path("faces/lfw_0.png"),
			"--prompt", "a photo of a man img", "--width", "64", "--height", "64", "--steps", "5", "--device", "cpu",
			"--guidance", guidance, "--style-strength", style, "-o", out)
		require.Equal(t, 0, code, errOut)
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		img, err := png.Decode(bytes.NewReader(b))
		require.NoError(t, err)
		text, err := pngtext.Read(b)
		require.NoError(t, err)
		var raw bytes.Buffer
		require.NoError(t, png.Encode(&raw, img)) // pixels only, without the text
		return raw.Bytes(), text["parameters"]
	}
	zero, params := gen("0", "0")
	require.Contains(t, params, "CFG scale: 0,")
	require.Contains(t, params, "Style strength: 0,")
	one, params := gen("1", "1")
	require.Contains(t, params, "CFG scale: 1,")
	require.Equal(t, one, zero)
}

// Multi-person v2: one embeddings file per person, NAME=FILE.
func TestGenerateTwoPeopleV2(t *testing.T) {
	dir := t.TempDir()
	man, woman := writeNPY(t, dir, "man.npy", 2), writeNPY(t, dir, "woman.npy", 1)
	out := filepath.Join(dir, "two.png")
	args := []string{"generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v2-tiny.safetensors"),
		"--id", "man=" + golden.Path("faces/astronaut_0.png") + "," + golden.Path("faces/astronaut_1.png"),
		"--id", "woman=" + golden.Path("faces/lfw_1.png"),
		"--prompt", "a man img and a woman img at the beach",
		"--width", "64", "--height", "64", "--steps", "1", "--device", "cpu", "-o", out}
	code, _, errOut := runCLI(t, append(args, "--id-embeds", "woman="+woman, "--id-embeds", "man="+man)...)
	require.Equal(t, 0, code, errOut)
	_, err := os.Stat(out)
	require.NoError(t, err)
	for _, tc := range []struct {
		embeds []string
		msg    string
	}{
		{[]string{"man=" + man}, "--id-embeds has no face embeddings for the woman: add --id-embeds woman=FILE"},
		{[]string{"man=" + woman, "woman=" + woman}, "holds 1 face embeddings for 2 photos of the man"},
		{[]string{"man=" + man, "woman=" + woman, "child=" + woman}, "--id-embeds child=" + woman + ": no --id child=PHOTOS"},
		{[]string{"man=" + man, "man=" + man}, "--id-embeds man=... given twice"},
		{[]string{man}, "with --id, --id-embeds wants NAME=FILE for each person"},
	} {
		var a []string
		for _, e := range tc.embeds {
			a = append(a, "--id-embeds", e)
		}
		code, _, errOut := runCLI(t, append(append(args, "--force"), a...)...)
		require.Equal(t, 2, code, "%q: %s", tc.embeds, errOut)
		require.Contains(t, errOut, tc.msg, tc.embeds)
	}
}

// Errors from the library carry the program's name once; a request it
// refuses is a usage error (exit 2), as the flags' own checks.
func TestErrorPrefixOnce(t *testing.T) {
	emb := writeNPY(t, t.TempDir(), "e.npy", 1)
	code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--id-image", golden.Path("faces/lfw_0.png"),
		"--id-embeds", emb, "--prompt", "a photo of a man img", "--width", "64", "--height", "64", "--steps", "1",
		"--device", "cpu", "-o", filepath.Join(t.TempDir(), "x.png"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "photomaker: invalid request: PhotoMaker v1 takes no face embeddings (they are for v2 adapters)")
	require.Equal(t, 1, strings.Count(errOut, "photomaker:"), errOut)
	code, _, errOut = runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
		"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--id-image", golden.Path("faces/lfw_0.png"),
		"--prompt", "img a photo of a man", "--width", "64", "--height", "64", "--steps", "1",
		"--device", "cpu", "-o", filepath.Join(t.TempDir(), "x.png"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "photomaker: invalid request: bad ID prompt: the trigger word img is first")
	require.Equal(t, 1, strings.Count(errOut, "photomaker:"), errOut)
}

// writeNPY writes n float32 rows of 512 values as a .npy file.
func writeNPY(t *testing.T, dir, name string, n int) string {
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 512), }", n)
	hdr += strings.Repeat(" ", 63-(10+len(hdr))%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(hdr)))
	b.WriteString(hdr)
	for i := range n * 512 {
		binary.Write(&b, binary.LittleEndian, float32(i%13-6)/10)
	}
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b.Bytes(), 0o644))
	return p
}
