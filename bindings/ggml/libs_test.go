package ggml

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// A backend library is loaded from the first folder that has it: a copy
// next to the binary and one on the library path would list its devices
// twice.
func TestBackendLibrariesLoadOnce(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("library names below are Linux's")
	}
	a, b := t.TempDir(), t.TempDir()
	for _, f := range []string{filepath.Join(a, "libggml-cuda.so"), filepath.Join(a, "libggml-base.so.0"),
		filepath.Join(b, "libggml-cuda.so"), filepath.Join(b, "libggml-vulkan.so"), filepath.Join(b, "README")} {
		require.NoError(t, os.WriteFile(f, nil, 0o644))
	}
	loaded := map[string]bool{}
	require.Equal(t, []string{"libggml-cuda.so"}, newBackendLibraries(a, loaded))
	require.Equal(t, []string{"libggml-vulkan.so"}, newBackendLibraries(b, loaded))
	require.Empty(t, newBackendLibraries(b, loaded))
	require.Empty(t, newBackendLibraries(filepath.Join(a, "missing"), loaded))
}
