package cpuinfo

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeSys writes a topology tree: cpu i sits on core cores[i] of package 0.
func fakeSys(t *testing.T, cores []int) string {
	root := t.TempDir()
	for i, c := range cores {
		dir := filepath.Join(root, "cpu"+itoa(i), "topology")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "core_id"), []byte(itoa(c)+"\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "physical_package_id"), []byte("0\n"), 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "cpufreq"), 0o755)) // not a CPU
	return root
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestLinuxCores(t *testing.T) {
	all := func(int) bool { return true }
	// Four hardware threads on two cores (SMT pairs 0+2 and 1+3).
	smt := fakeSys(t, []int{0, 1, 0, 1})
	require.Equal(t, 2, linuxCores(smt, all))
	// Affinity to one thread of each core still reaches both cores.
	require.Equal(t, 2, linuxCores(smt, func(c int) bool { return c < 2 }))
	require.Equal(t, 1, linuxCores(smt, func(c int) bool { return c == 0 || c == 2 }))
	// No SMT.
	require.Equal(t, 3, linuxCores(fakeSys(t, []int{0, 1, 2}), all))
	// Unreadable topology: unknown, not a guess.
	require.Equal(t, 0, linuxCores(t.TempDir(), all))
	broken := fakeSys(t, []int{0, 1})
	require.NoError(t, os.Remove(filepath.Join(broken, "cpu1", "topology", "core_id")))
	require.Equal(t, 0, linuxCores(broken, all))
}

func TestThreads(t *testing.T) {
	n := Threads()
	require.GreaterOrEqual(t, n, 1)
	require.LessOrEqual(t, n, runtime.GOMAXPROCS(0))
	if p := physicalCores(); p > 0 {
		require.Equal(t, min(p, runtime.GOMAXPROCS(0)), n)
	}
}
