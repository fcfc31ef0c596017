//go:build linux

package ggml

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// An address-space limit (ulimit -v) bounds the memory this process can
// still use: ggml aborts when an allocation fails past it, so the memory
// checks before a computation must see it.
func TestHostMemoryUnderAddressSpaceLimit(t *testing.T) {
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_AS, &old))
	mapped, ok := statValue("/proc/self/status", "VmSize:")
	require.True(t, ok)
	const room = 3 << 30
	lim := syscall.Rlimit{Cur: mapped*1024 + room, Max: old.Max}
	if lim.Cur > old.Max {
		t.Skip("the hard limit is lower")
	}
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_AS, &lim))
	var set syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_AS, &set))
	got, ok := availableHostMemory()
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_AS, &old))
	if set.Cur != lim.Cur {
		t.Skip("the limit did not take (an emulator such as qemu-user ignores it)")
	}
	require.True(t, ok)
	require.LessOrEqual(t, got, uint64(room))
	require.Greater(t, got, uint64(room)*3/4, "the limit less what is mapped")
}
