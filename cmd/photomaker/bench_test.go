//go:build unix

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// bench on a scaled-down random model: JSON fields filled, cache reused,
// table printed.
func TestBenchRandomTiny(t *testing.T) {
	cache := t.TempDir()
	args := []string{"bench", "--random", "--random-scale", "tiny", "--cache-dir", cache, "--device", "cpu",
		"--width", "64", "--height", "64", "--steps", "2", "--type", "q8_0"}
	code, out, errOut := runCLI(t, append(args, "--json")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "generating random weights")
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	for _, k := range []string{"peak_rss_bytes", "peak_device_bytes", "device_weights_bytes", "device_compute_bytes",
		"unet_step_seconds", "total_seconds", "load_seconds", "text_encode_seconds", "id_encode_seconds",
		"encode_seconds", "vae_seconds", "it_per_s"} {
		require.Greater(t, r[k], 0.0, k)
	}
	require.Len(t, r["unet_steps_seconds"], 2)
	require.Equal(t, "PhotoMaker v1 adapter", r["kind"])
	require.Equal(t, "q8_0", r["type"])
	require.Equal(t, 64.0, r["width"])
	require.Equal(t, 2.0, r["id_images"])
	require.GreaterOrEqual(t, r["total_seconds"], r["load_seconds"].(float64)+r["unet_step_seconds"].(float64))
	require.Nil(t, r["unet_step_profile"], "only with --profile")
	files, err := filepath.Glob(filepath.Join(cache, "*.safetensors"))
	require.NoError(t, err)
	require.Len(t, files, 2)
	st, err := os.Stat(files[0])
	require.NoError(t, err)

	// Second run: cached files reused, plain table, op profile.
	code, out, errOut = runCLI(t, append(args[:len(args)-2], "--steps", "1", "--photomaker-version", "2", "--profile")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "UNet step")
	require.Contains(t, out, "peak RSS")
	require.Contains(t, out, "PhotoMaker v2 adapter")
	require.Regexp(t, `UNet step by op[^\n]*\n\s+MUL_MAT\s+[0-9.]+ ms\s+[0-9.]+ %, [0-9]+ nodes`, out)
	st2, err := os.Stat(files[0])
	require.NoError(t, err)
	require.Equal(t, st.ModTime(), st2.ModTime())
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
