//go:build pm_emulate_avx512 || pm_emulate_avxvnni

package ggml

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEmulated: a build with an instruction set emulated (cpu_emulated.h)
// runs our kernels' code for it: AVX-512's 16 lanes, or AVX-VNNI's 8; both
// with q8_0 activations in bytes (vpdpbusd).
func TestEmulated(t *testing.T) {
	require.Equal(t, map[bool]int{true: 16, false: 8}[emulatedAVX512], kernelLanes())
	require.EqualValues(t, 127, cpuKernelsQ8Levels())
	require.True(t, CPUKernelsTakeInts(TypeQ4_0))
}
