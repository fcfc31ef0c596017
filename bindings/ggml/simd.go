package ggml

/*
#include "cpu_kernels.h"
*/
import "C"

import (
	"runtime"

	"golang.org/x/sys/cpu"
)

// MissingSIMD names the vector extensions this CPU has but the ggml compiled
// into this binary does not use ("" when none). cgo compiles ggml with the
// C compiler's defaults, which on x86-64 means SSE2 only: a plain
// `go build` runs the CPU kernels about 20× slower than `make` (which adds
// -march=native). Callers warn with it when they compute on the CPU.
func MissingSIMD() string {
	if runtime.GOARCH != "amd64" {
		return "" // arm64 always has NEON, which ggml uses unconditionally
	}
	switch {
	case cpu.X86.HasAVX2 && C.ggml_cpu_has_avx2() == 0:
		return "AVX2"
	case cpu.X86.HasFMA && C.ggml_cpu_has_fma() == 0:
		return "FMA"
	case cpu.X86.HasAVX && C.ggml_cpu_has_f16c() == 0:
		return "F16C"
	}
	return ""
}

// UnusedSIMD names wider vectors this CPU has that our own CPU kernels were
// not compiled for ("" when none): a portable build (`make portable`,
// x86-64-v3) on a CPU with AVX-512 runs them with 8 floats per vector
// instead of 16, and the q4_K, q5_K and q8_0 products with half-width
// integer vectors. `make` compiles them for this CPU.
func UnusedSIMD() string {
	if runtime.GOARCH == "amd64" && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && C.pm_kernel_lanes() < 16 {
		return "AVX-512"
	}
	return ""
}
