//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/photomaker"
)

// bench on a scaled-down random model: JSON fields filled, cache reused,
// table printed.
func TestBenchRandomTiny(t *testing.T) {
	cache := t.TempDir()
	args := []string{"bench", "--random", "--random-scale", "tiny", "--cache-dir", cache, "--device", "cpu",
		"--width", "64", "--height", "64", "--steps", "2", "--type", "q8_0"}
	code, out, errOut := runCLI(t, append(args, "--runs", "2", "--json")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "generating random weights")
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	for _, k := range []string{"peak_rss_bytes", "peak_device_bytes", "device_weights_bytes", "device_compute_bytes",
		"unet_step_seconds", "total_seconds", "load_seconds", "text_encode_seconds", "id_encode_seconds",
		"encode_seconds", "vae_seconds", "it_per_s", "unet_step_tflop", "unet_tflop_per_s", "vae_tflop", "vae_tflop_per_s"} {
		require.Greater(t, r[k], 0.0, k)
	}
	require.Len(t, r["unet_steps_seconds"], 2)
	require.Equal(t, "PhotoMaker v1 adapter", r["kind"])
	require.Equal(t, "q8_0", r["type"])
	require.Equal(t, 64.0, r["width"])
	require.Equal(t, 2.0, r["id_images"])
	if kernels := ggml.KernelTarget(); kernels != "" { // an x86-64 build below this CPU
		require.Equal(t, kernels, r["cpu_kernels"])
	} else {
		require.Nil(t, r["cpu_kernels"])
	}
	require.GreaterOrEqual(t, r["total_seconds"], r["load_seconds"].(float64)+r["unet_step_seconds"].(float64))
	require.Nil(t, r["unet_step_profile"], "only with --profile")
	require.Equal(t, 2.0, r["runs"])
	require.Greater(t, r["warm_generate_seconds"], r["warm_unet_step_seconds"].(float64)*2, "two steps and more")
	// One warm run: its parts are its own, disjoint, and leave out its second step.
	parts := 0.0
	for _, k := range []string{"warm_encode_seconds", "warm_first_step_seconds", "warm_vae_seconds", "warm_other_seconds"} {
		require.Greater(t, r[k], 0.0, k)
		parts += r[k].(float64)
	}
	require.Less(t, parts, r["warm_generate_seconds"])
	files, err := filepath.Glob(filepath.Join(cache, "*.safetensors"))
	require.NoError(t, err)
	require.Len(t, files, 2)
	st, err := os.Stat(files[0])
	require.NoError(t, err)

	// Second run: cached files reused, plain table, op profile.
	code, out, errOut = runCLI(t, append(args[:len(args)-2], "--steps", "1", "--photomaker-version", "2", "--profile")...)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `UNet step\s+[0-9.]+ m?s\s+median of 1, [0-9.]+ it/s; [0-9.]+ GFLOP at [0-9]+ GFLOP/s`, out)
	require.Regexp(t, `VAE decode\s+[0-9.]+ m?s\s+per image; [0-9.]+ GFLOP at [0-9]+ GFLOP/s`, out)
	require.Contains(t, out, "peak RSS")
	require.Contains(t, out, "PhotoMaker v2 adapter")
	// The profile lists ops by time; which comes first depends on the
	// machine. Our CPU kernels appear by name, ggml's products by their
	// operands' types; products with their arithmetic, other ops with the
	// bytes they span.
	// Ops above 5 % of the time are split by their operands' shapes.
	shape := `\s+[0-9]+(×[0-9]+)*(, [0-9]+(×[0-9]+)*)*\s+[0-9.]+ ms\s+[0-9]+ nodes, [0-9.]+ [GT]?(FLOP|B) at [0-9.]+ [GT]?(FLOP|B)/s\n`
	opLine := `\s+[A-Z_0-9]+( [a-z0-9_·]+)?( \(ours\))?\s+[0-9.]+ ms\s+[0-9.]+ %, [0-9]+ nodes, [0-9.]+ [GT]?(FLOP|B) at [0-9.]+ [GT]?(FLOP|B)/s\n`
	op := opLine + `((` + shape + `)+(\s+\.\.\. [0-9]+ more shapes\n)?)?`
	require.Regexp(t, `UNet step by op[^\n]*\n(`+op+`)*`+opLine+shape, out, "an op by shape")
	require.Regexp(t, `UNet step by op[^\n]*\n(`+op+`)*\s+MUL_MAT [a-z0-9_]+·[a-z0-9_]+\s+[0-9.]+ ms\s+[0-9.]+ %, [0-9]+ nodes, [0-9.]+ [GT]FLOP at`, out)
	require.Regexp(t, `UNet step by op[^\n]*\n(`+op+`)*\s+ADD\s+[0-9.]+ ms\s+[0-9.]+ %, [0-9]+ nodes, [0-9.]+ GB at [0-9]+ GB/s`, out)
	require.Regexp(t, `VAE decode by op[^\n]*\n(`+op+`)*\s+CONV_3X3 \(ours\)\s+[0-9.]+ ms\s+[0-9.]+ %, [0-9]+ nodes, [0-9.]+ [GT]FLOP at`, out)
	require.Regexp(t, `generate\s+[0-9.]+ m?s\s+encode, denoise, decode`, out)
	require.NotContains(t, out, "generate, warm", "one run unless --runs")
	st2, err := os.Stat(files[0])
	require.NoError(t, err)
	require.Equal(t, st.ModTime(), st2.ModTime())
}

// With more than one step the table gives the first apart: on a GPU it
// pays the graph's capture and first kernel loads. Times under a second
// are in milliseconds.
func TestBenchTableFirstStep(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, printBench(&out, &benchResult{Device: "CUDA0", Type: "f16", Steps: 3, UNetStepSeconds: 0.095, UNetStepsSeconds: []float64{0.261, 0.095, 0.094}}))
	require.Regexp(t, `UNet step\s+95.0 ms\s+median of 3, [^\n]*; the first 261.0 ms\n`, out.String())
	out.Reset()
	require.NoError(t, printBench(&out, &benchResult{Device: "CUDA0", Type: "f16", Steps: 1, UNetStepSeconds: 0.261, UNetStepsSeconds: []float64{0.261}}))
	require.NotContains(t, out.String(), "the first")
}

func TestBenchUsage(t *testing.T) {
	code, _, errOut := runCLI(t, "bench")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--random")
	code, _, _ = runCLI(t, "bench", "--random", "--model", "x.safetensors")
	require.Equal(t, 2, code)
	code, _, _ = runCLI(t, "bench", "--random", "--steps", "0")
	require.Equal(t, 2, code)
	code, _, _ = runCLI(t, "bench", "--random", "--type", "q9_Z")
	require.Equal(t, 2, code)
}

// Stage times from a OneShot run's events (a load stage between encoding
// and denoising): each step is timed from the event before it, the first
// from the loop's start.
func TestStageTimes(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(stage string, done, total, ms int) benchEvent {
		return benchEvent{photomaker.Progress{Stage: stage, Done: done, Total: total}, at(ms)}
	}
	res := &benchResult{}
	stageTimes(res, []benchEvent{
		ev("encode", 0, 1, 0), ev("encode", 1, 1, 500),
		ev("load", 0, 1, 500), ev("load", 7, 10, 2000), ev("load", 10, 10, 3500),
		ev("denoise", 0, 2, 3600), ev("denoise", 1, 2, 4600), ev("denoise", 2, 2, 6600),
		ev("decode", 0, 1, 6600), ev("decode", 1, 1, 7400),
	})
	require.InDelta(t, 0.5, res.EncodeSeconds, 1e-9)
	require.Len(t, res.UNetStepsSeconds, 2)
	require.InDelta(t, 1.0, res.UNetStepsSeconds[0], 1e-9)
	require.InDelta(t, 1.5, res.UNetStepSeconds, 1e-9)
	require.InDelta(t, 0.8, res.VAESeconds, 1e-9)
}

// bench names what slows its figures: ops left to the CPU, and a ggml built
// without this CPU's vector instructions or repacked q4 products.
func TestBenchWarnings(t *testing.T) {
	require.Equal(t, []string{"the GPU backend has no kernel for FLASH_ATTN_EXT, IM2COL: the CPU computed those ops"},
		benchWarnings(&benchResult{Device: "CUDA0", Type: "f16"}, []string{"FLASH_ATTN_EXT", "IM2COL"}))
	got := benchWarnings(&benchResult{Device: "CPU", Type: "q4_K"}, nil)
	var want []string
	if simd := ggml.MissingSIMD(); simd != "" {
		want = append(want, "ggml was compiled without "+simd+", which this CPU has: build with make")
	}
	if simd := ggml.UnusedSIMD(); simd != "" {
		want = append(want, "this CPU has "+simd+", which our CPU kernels were not compiled for: build with make (about 1.6× faster)")
	}
	if !ggml.CanRepack() && !ggml.CPUKernelsTakeInts(ggml.TypeQ4_K) { // our q4_K product needs no repacking
		want = append(want, "ggml was compiled without its repacked q4_K CPU products (about 1.6× faster): build with make")
	}
	require.Equal(t, want, got)
	q40 := benchWarnings(&benchResult{Device: "CPU", Type: "q4_0"}, nil)
	if !ggml.CanRepack() && !ggml.CPUKernelsTakeInts(ggml.TypeQ4_0) {
		require.Contains(t, q40, "ggml was compiled without its repacked q4_0 CPU products (about 1.6× faster): build with make")
	} else {
		require.NotContains(t, q40, "ggml was compiled without its repacked q4_0 CPU products (about 1.6× faster): build with make")
	}
	require.Empty(t, benchWarnings(&benchResult{Device: "CUDA0", Type: "q4_K"}, nil), "the GPU multiplies q4_K itself")
	require.Equal(t, []string{"the CPU computed 37.5% of a GPU graph's products: a bug, please report it"},
		benchWarnings(&benchResult{Device: "CUDA0", Type: "f16", CPUPlacedShare: 0.375}, nil))
}
