package ggml

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBothKernelTargets: where a build has our kernels for its own target
// and for x86-64-v3 (a plain `go test` on x86-64, cpu_targets.h) and the
// CPU takes the second, the kernels' graphs take it (wider vectors, our
// integer products of q4_K), and the kernel tests pass for both targets.
func TestBothKernelTargets(t *testing.T) {
	if !kernelsV3 {
		t.Skip("this build has our kernels for one target (or this CPU is not x86-64-v3)")
	}
	require.Equal(t, 8, kernelLanes(), "x86-64-v3's kernels have 8 floats a vector")
	require.True(t, CPUKernelsTakeQ4K(), "x86-64-v3's kernels multiply q4_K weights")
	tests := []struct {
		name string
		test func(*testing.T)
	}{{"GEGLU", TestGEGLUKernel}, {"Im2Col", TestIm2ColKernel}, {"Attention", TestAttentionKernel},
		{"MulMat", TestMulMatKernel}, {"MulMatQ4K", TestMulMatQ4KKernel}, {"MulMatBias", TestMulMatBias},
		{"Conv3x3", TestConv3x3Kernel}, {"Conv3x3Threads", TestConv3x3KernelThreads}, {"Conv1x1", TestConv1x1Kernel},
		{"GroupNorm", TestGroupNormKernel}, {"LayerNorm", TestLayerNormKernel}, {"OpProfile", TestOpProfileNamesOurKernels},
		{"Quantize", TestQuantizeMatchesGGML}, {"QuantizeEverywhere", TestQuantizeSameOnEveryMachine}}
	defer useX86_64V3(true)
	for _, v3 := range []bool{true, false} {
		useX86_64V3(v3)
		if !v3 {
			require.False(t, CPUKernelsTakeQ4K(), "without AVX2 our kernels leave q4_K to ggml")
		}
		for _, tc := range tests {
			t.Run(map[bool]string{true: "x86-64-v3/", false: "own/"}[v3]+tc.name, tc.test)
		}
	}
}
