package ggml

/*
#include "cpu_kernels.h"
*/
import "C"

import (
	"runtime"

	"golang.org/x/sys/cpu"
)

func init() { useKernelTarget(bestKernelTarget()) }

// kernelTarget is one of the targets our CPU kernels are compiled for in a
// build that has several (cpu_targets.h: a plain `go build` on x86-64, or
// one for x86-64-v3 such as make portable).
type kernelTarget int

const (
	ownTarget kernelTarget = C.PM_KERNELS_OWN       // the build's own (SSE2, or x86-64-v3)
	x86_64V3  kernelTarget = C.PM_KERNELS_X86_64_V3 // AVX2, FMA, F16C
	x86_64V4  kernelTarget = C.PM_KERNELS_X86_64_V4 // and AVX-512 with VNNI
)

func (t kernelTarget) String() string {
	return map[kernelTarget]string{ownTarget: "own", x86_64V3: "x86-64-v3", x86_64V4: "x86-64-v4"}[t]
}

// bestKernelTarget is the widest target built that this CPU (and its OS)
// runs, or that GODEBUG leaves (x/sys/cpu: cpu.avx512f=off takes
// x86-64-v3, cpu.avx2=off the build's own).
func bestKernelTarget() kernelTarget { return runnableKernelTargets()[0] }

// runnableKernelTargets are the targets built that this CPU runs, widest
// first, ending with the build's own.
func runnableKernelTargets() []kernelTarget {
	var targets []kernelTarget
	if hasX86_64V4() && kernelTargetBuilt(x86_64V4) {
		targets = append(targets, x86_64V4)
	}
	if hasX86_64V3() && kernelTargetBuilt(x86_64V3) {
		targets = append(targets, x86_64V3)
	}
	return append(targets, ownTarget)
}

// hasX86_64V3 says whether this CPU (and its OS) runs x86-64-v3 code: AVX,
// AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE and POPCNT.
func hasX86_64V3() bool {
	x := cpu.X86
	return x.HasAVX && x.HasAVX2 && x.HasBMI1 && x.HasBMI2 && x.HasF16C && x.HasFMA && x.HasLZCNT && x.HasMOVBE && x.HasPOPCNT
}

// hasX86_64V4 says whether it also runs x86-64-v4 code with VNNI: AVX-512
// F, BW, CD, DQ, VL and VNNI (x/sys/cpu reports them only where the OS
// saves the AVX-512 registers).
func hasX86_64V4() bool {
	x := cpu.X86
	return hasX86_64V3() && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512CD && x.HasAVX512DQ && x.HasAVX512VL && x.HasAVX512VNNI
}

// useKernelTarget makes graphs built from now on take our kernels compiled
// for target, where this build has them (kernelTargetBuilt), else for the
// build's own.
func useKernelTarget(target kernelTarget) {
	if !kernelTargetBuilt(target) {
		target = ownTarget
	}
	C.pm_use_kernel_target(C.enum_pm_kernel_target(target))
	kernels = target
}

// kernelTargetBuilt says whether this build has our kernels compiled for
// target besides its own (ownTarget: always).
func kernelTargetBuilt(target kernelTarget) bool {
	return bool(C.pm_kernel_target_built(C.enum_pm_kernel_target(target)))
}

// kernels is the target our kernels run as compiled for: ownTarget in a
// build that has them for one.
var kernels = ownTarget

// KernelTarget names the target an x86-64 build's CPU kernels were picked
// for at start besides the build's own ("x86-64-v3" or "x86-64-v4"), or ""
// where they run as compiled for the build's own target.
func KernelTarget() string {
	if kernels == ownTarget {
		return ""
	}
	return kernels.String()
}

// CPUKernelsOutpaceGGML reports whether our CPU kernels run with AVX2 and
// ggml's without it (compiled for SSE2 in a plain `go build`, ours for
// x86-64-v3 or v4: cpu_targets.h): graphs should then give ours work that
// ggml's would otherwise do, even at the cost of a conversion. ggml's SSE2
// product of f16 matrices ran at 2 GFLOP/s on the Zen 3 dev VM, against
// 50–60 compiled for AVX2. (An x86-64-v3 build's ggml has AVX2: ours for
// v4 do not outpace it by as much.)
func CPUKernelsOutpaceGGML() bool { return kernels != ownTarget && !ownTargetIsX86_64V3() }

// ownTargetIsX86_64V3 says whether the build's own target (ggml's, and our
// kernels' own) has x86-64-v3's AVX2, FMA and F16C (cpu_targets.h's
// PM_OWN_LEVEL 3).
func ownTargetIsX86_64V3() bool {
	return C.ggml_cpu_has_avx2() != 0 && C.ggml_cpu_has_fma() != 0 && C.ggml_cpu_has_f16c() != 0
}

// MissingSIMD names the vector extensions this CPU has but the ggml compiled
// into this binary does not use ("" when none). cgo compiles ggml with the
// C compiler's defaults, which on x86-64 means SSE2 only: a plain
// `go build` runs the CPU kernels about 20× slower than `make` (which adds
// -march=native). On arm64 the defaults (ARMv8.0) have NEON but not the
// int8 dot products of later cores (dotprod from ARMv8.2: Apple M1,
// Graviton 2, Cortex-A76; i8mm from ARMv8.6), without which ggml's
// quantized products take a slower path and are not repacked (Apple's
// clang targets the M1 by default). Callers warn with it when they compute
// on the CPU.
//
// In a plain `go build` on x86-64 our kernels also run as compiled for
// x86-64-v3 or v4 (CPUKernelsOutpaceGGML), taking the products of every
// weight type: nothing is reported then.
func MissingSIMD() string {
	if CPUKernelsOutpaceGGML() {
		return ""
	}
	switch runtime.GOARCH {
	case "amd64":
		switch {
		case cpu.X86.HasAVX2 && C.ggml_cpu_has_avx2() == 0:
			return "AVX2"
		case cpu.X86.HasFMA && C.ggml_cpu_has_fma() == 0:
			return "FMA"
		case cpu.X86.HasAVX && C.ggml_cpu_has_f16c() == 0:
			return "F16C"
		}
	case "arm64":
		switch {
		case cpu.ARM64.HasASIMDDP && C.ggml_cpu_has_dotprod() == 0:
			return "dotprod"
		case cpu.ARM64.HasI8MM && C.ggml_cpu_has_matmul_int8() == 0:
			return "i8mm"
		}
	}
	return ""
}

// MissingSIMDEffect says what lacking simd (MissingSIMD's answer) costs:
// without x86's AVX2, FMA or F16C every CPU kernel runs many times slower;
// without ARM's int8 dot products, the quantized weights' products.
func MissingSIMDEffect(simd string) string {
	if simd == "dotprod" || simd == "i8mm" {
		return "quantized weights' products run slower"
	}
	return "CPU work runs many times slower"
}

// RepackKernelsBuilt reports whether the compiled ggml has repacked q4_K
// and q4_0 products (AVX2; on arm64, dotprod or i8mm), for tests that
// expect weights to be repacked whatever the CPU (ggml decides when it
// stores a weight: Backend.Repacks).
func RepackKernelsBuilt() bool {
	if runtime.GOARCH == "arm64" {
		return C.ggml_cpu_has_dotprod() != 0 || C.ggml_cpu_has_matmul_int8() != 0
	}
	return C.ggml_cpu_has_avx2() != 0
}

// CPUSumsF16 reports whether ggml's own CPU products of f16 operands sum
// in f16 rather than f32: ARM builds with fp16 vector arithmetic (ARMv8.2's
// FP16, which -march=native gives on the Apple M1, Graviton 2, Cortex-A76
// and later). Our kernels' products (MulMat with SetCPUKernels) sum in f32.
func CPUSumsF16() bool { return C.ggml_cpu_has_fp16_va() != 0 }

// kernelLanes is the floats per vector of our kernels' target.
func kernelLanes() int { return int(C.pm_kernel_lanes()) }

// UnusedSIMD names wider vectors this CPU has that our own CPU kernels were
// not compiled for ("" when none): a plain or portable build (`make
// portable`, x86-64-v3) on a CPU with AVX-512 but without VNNI (Skylake-SP
// and -X), which does not take their x86-64-v4 kernels, runs them with 8
// floats per vector instead of 16, and the products of quantized weights
// with half-width integer vectors. `make` compiles them for this CPU.
func UnusedSIMD() string {
	if runtime.GOARCH == "amd64" && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && kernelLanes() < 16 {
		return "AVX-512"
	}
	return ""
}
