package ggml

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKernelTargets: where a build has our kernels for several targets (a
// plain `go test` on x86-64: its own, x86-64-v3 and v4; an x86-64-v3 one:
// its own and v4; cpu_targets.h), the widest this CPU runs is taken at
// start, the kernels' graphs take the picked one (its vector width, our
// integer products of q4_K), and the kernel tests pass for every target
// this CPU runs.
func TestKernelTargets(t *testing.T) {
	if bestKernelTarget() == ownTarget {
		t.Skip("this build has our kernels for no target beyond its own that this CPU runs")
	}
	require.Equal(t, bestKernelTarget(), kernels, "the widest target this CPU runs")
	tests := []struct {
		name string
		test func(*testing.T)
	}{{"GEGLU", TestGEGLUKernel}, {"Im2Col", TestIm2ColKernel}, {"Attention", TestAttentionKernel},
		{"MulMat", TestMulMatKernel}, {"MulMatInt", TestMulMatIntKernel}, {"MulMatBias", TestMulMatBias},
		{"Conv3x3", TestConv3x3Kernel}, {"Conv3x3Threads", TestConv3x3KernelThreads}, {"Conv1x1", TestConv1x1Kernel},
		{"GroupNorm", TestGroupNormKernel}, {"LayerNorm", TestLayerNormKernel}, {"OpProfile", TestOpProfileNamesOurKernels},
		{"Quantize", TestQuantizeMatchesGGML}, {"QuantizeEverywhere", TestQuantizeSameOnEveryMachine}}
	defer useKernelTarget(bestKernelTarget())
	for _, target := range runnableKernelTargets() {
		useKernelTarget(target)
		require.Equal(t, target != ownTarget || ownTargetIsX86_64V3(), CPUKernelsTakeInts(TypeQ4_K), "%s: our kernels multiply q4_K weights with AVX2", target)
		if target != ownTarget {
			require.Equal(t, map[kernelTarget]int{x86_64V3: 8, x86_64V4: 16}[target], kernelLanes(), "%s's floats a vector", target)
			require.Equal(t, target.String(), KernelTarget())
		}
		for _, tc := range tests {
			t.Run(target.String()+"/"+tc.name, tc.test)
		}
	}
}

// TestKernelTargetsBuilt: the targets a build compiles our kernels for
// besides its own (cpu_targets.h): on x86-64, x86-64-v4 unless its own
// target has AVX-512, and x86-64-v3 unless it is x86-64-v3 (AVX2, FMA and
// F16C); elsewhere none. A target not built gives the own kernels.
func TestKernelTargetsBuilt(t *testing.T) {
	defer useKernelTarget(bestKernelTarget())
	useKernelTarget(ownTarget)
	ownLanes := kernelLanes()
	amd64 := runtime.GOARCH == "amd64"
	require.True(t, kernelTargetBuilt(ownTarget))
	require.Equal(t, amd64 && ownLanes < 16, kernelTargetBuilt(x86_64V4), "x86-64-v4 (own target: %d floats a vector)", ownLanes)
	require.Equal(t, amd64 && !ownTargetIsX86_64V3(), kernelTargetBuilt(x86_64V3), "x86-64-v3")
	for _, target := range []kernelTarget{x86_64V3, x86_64V4} {
		if !kernelTargetBuilt(target) {
			useKernelTarget(target)
			require.Equal(t, ownTarget, kernels, target.String())
			require.Equal(t, ownLanes, kernelLanes(), target.String())
			require.Empty(t, KernelTarget(), target.String())
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
	if bestKernelTarget() == ownTarget {
		t.Skip("this build has our kernels for no target beyond its own that this CPU runs")
	}
	withoutAVX512 := ownTarget
	if slices.Contains(runnableKernelTargets(), x86_64V3) {
		withoutAVX512 = x86_64V3
	}
	for godebug, want := range map[string]kernelTarget{"cpu.avx2=off": ownTarget, "cpu.avx512f=off": withoutAVX512} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKernelTargetGODEBUG$", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG="+godebug, "PM_PRINT_KERNEL_TARGET=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "kernels: "+want.String()+"\n", godebug)
	}
}
