//go:build pm_emulate_avx512

package ggml

// Tests of our kernels' AVX-512 code on CPUs without it: see
// cpu_emulated.h (make test runs the kernel tests so).

// #cgo CFLAGS: -DPM_EMULATE_AVX512 -include ${SRCDIR}/cpu_emulated.h -Wno-psabi
import "C"

const emulatedAVX512 = true
