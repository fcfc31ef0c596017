//go:build pm_emulate_avxvnni && !pm_emulate_avx512

package ggml

// Tests of our kernels' AVX-VNNI code on CPUs without it: see
// cpu_emulated.h (make test runs the kernel tests so).

// #cgo CFLAGS: -DPM_EMULATE_AVXVNNI -include ${SRCDIR}/cpu_emulated.h -Wno-psabi
import "C"

const emulatedAVX512 = false
