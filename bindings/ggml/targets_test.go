package ggml

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKernelTargets: where a build has our kernels for its own target and
// for x86-64-v3 and v4 (a plain `go test` on x86-64, cpu_targets.h), the
// widest this CPU runs is taken at start, the kernels' graphs take the
// picked one (its vector width, our integer products of q4_K), and the
// kernel tests pass for every target this CPU runs.
func TestKernelTargets(t *testing.T) {
	if !multiTargetBuild() || bestKernelTarget() == ownTarget {
		t.Skip("this build has our kernels for one target (or this CPU is not x86-64-v3)")
	}
	require.Equal(t, bestKernelTarget(), kernels, "the widest target this CPU runs")
	tests := []struct {
		name string
		test func(*testing.T)
	}{{"GEGLU", TestGEGLUKernel}, {"Im2Col", TestIm2ColKernel}, {"Attention", TestAttentionKernel},
		{"MulMat", TestMulMatKernel}, {"MulMatQ4K", TestMulMatQ4KKernel}, {"MulMatBias", TestMulMatBias},
		{"Conv3x3", TestConv3x3Kernel}, {"Conv3x3Threads", TestConv3x3KernelThreads}, {"Conv1x1", TestConv1x1Kernel},
		{"GroupNorm", TestGroupNormKernel}, {"LayerNorm", TestLayerNormKernel}, {"OpProfile", TestOpProfileNamesOurKernels},
		{"Quantize", TestQuantizeMatchesGGML}, {"QuantizeEverywhere", TestQuantizeSameOnEveryMachine}}
	defer useKernelTarget(bestKernelTarget())
	targets := []kernelTarget{x86_64V3, ownTarget}
	if hasX86_64V4() {
		targets = append([]kernelTarget{x86_64V4}, targets...)
	}
	for _, target := range targets {
		useKernelTarget(target)
		require.Equal(t, target != ownTarget, CPUKernelsTakeQ4K(), "%s: our kernels multiply q4_K weights with AVX2", target)
		if target != ownTarget {
			require.Equal(t, map[kernelTarget]int{x86_64V3: 8, x86_64V4: 16}[target], kernelLanes(), "%s's floats a vector", target)
			require.Equal(t, target.String(), KernelTarget())
		}
		for _, tc := range tests {
			t.Run(target.String()+"/"+tc.name, tc.test)
		}
	}
}

// TestKernelTargetGODEBUG: GODEBUG's cpu options (x/sys/cpu) narrow the
// target taken at start, the way to rule a target out on a machine
// (ggml/README.md, "CPU builds"). The test binary runs itself with each.
func TestKernelTargetGODEBUG(t *testing.T) {
	if os.Getenv("PM_PRINT_KERNEL_TARGET") != "" {
		os.Stdout.WriteString("kernels: " + kernels.String() + "\n")
		return
	}
	if !multiTargetBuild() || bestKernelTarget() == ownTarget {
		t.Skip("this build has our kernels for one target (or this CPU is not x86-64-v3)")
	}
	for godebug, want := range map[string]kernelTarget{"cpu.avx2=off": ownTarget, "cpu.avx512f=off": x86_64V3} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKernelTargetGODEBUG$", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG="+godebug, "PM_PRINT_KERNEL_TARGET=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "kernels: "+want.String()+"\n", godebug)
	}
}
