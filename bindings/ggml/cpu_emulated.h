// Tests only: our kernels' code for instruction sets this CPU lacks, with
// the few intrinsics it calls from them emulated, so that the code the
// kernels take on AVX-512 machines (16 lanes, tiles of 32 × 6 and 48 × 8,
// q8_0 activations in bytes) and on Intel's AVX-VNNI ones runs, and its
// tests check it, on any x86-64-v3 CPU (make test). Forced on every C
// file of the package by emulated_avx512.go and emulated_avxvnni.go (build
// tags pm_emulate_avx512 and pm_emulate_avxvnni); no other build includes
// it.
//
// The real headers come first, as this CPU's; then the target macros our
// files test (and the multi-target build, cpu_targets.h, turns off: the
// kernels compile once, as if for that CPU); then each intrinsic by name.
// 512-bit ones are their 256-bit twins on each half, which is what they
// are for every operation here (none crosses the halves); VNNI's dot
// product (vpdpbusd) follows Intel's pseudo-code (32-bit sums that wrap).
#ifndef PHOTOMAKER_CPU_EMULATED_H
#define PHOTOMAKER_CPU_EMULATED_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "emulating AVX-512 or AVX-VNNI needs an x86-64-v3 build (CGO_CFLAGS=-march=x86-64-v3 or native)"
#endif

// PM_EMU_DPBUSD defines name as vpdpbusd on width bits: each 32-bit lane
// of src plus the four products of a's unsigned bytes with b's signed ones
// in that lane, in 32 bits that wrap. (Through arrays and memcpy: a
// vector's own type may not be written as int32.)
#define PM_EMU_DPBUSD(name, width, type)                                                                               \
	static inline type name(type src, type a, type b) {                                                                 \
		int32_t d[(width) / 32];                                                                                        \
		uint8_t u[(width) / 8];                                                                                         \
		int8_t s[(width) / 8];                                                                                          \
		memcpy(d, &src, sizeof d), memcpy(u, &a, sizeof u), memcpy(s, &b, sizeof s);                                    \
		for (int i = 0; i < (width) / 32; i++) {                                                                        \
			uint32_t sum = (uint32_t)d[i];                                                                              \
			for (int j = 0; j < 4; j++) {                                                                               \
				sum += (uint32_t)((int32_t)u[4 * i + j] * (int32_t)s[4 * i + j]);                                       \
			}                                                                                                           \
			d[i] = (int32_t)sum;                                                                                        \
		}                                                                                                               \
		type r;                                                                                                         \
		memcpy(&r, d, sizeof r);                                                                                        \
		return r;                                                                                                       \
	}

#if defined(PM_EMULATE_AVX512)

#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512CD__ 1
#define __AVX512DQ__ 1
#define __AVX512VL__ 1
#define __AVX512VNNI__ 1

// A 512-bit vector as two 256-bit halves (__m256 and __m256i may alias any
// type).
#define PM_EMU_LO(T, v) (*(const T *)&(v))
#define PM_EMU_HI(T, v) (*((const T *)&(v) + 1))
#define PM_EMU_JOIN(T512, T, lo, hi)                                                                                   \
	({                                                                                                                 \
		T512 r_;                                                                                                       \
		T h_[2] = {(lo), (hi)};                                                                                        \
		memcpy(&r_, h_, sizeof r_);                                                                                    \
		r_;                                                                                                            \
	})
#define PM_EMU_2(name, T512, T, op)                                                                                    \
	static inline T512 name(T512 a, T512 b) {                                                                          \
		return PM_EMU_JOIN(T512, T, op(PM_EMU_LO(T, a), PM_EMU_LO(T, b)), op(PM_EMU_HI(T, a), PM_EMU_HI(T, b)));      \
	}
#define PM_EMU_3(name, T512, T, op)                                                                                    \
	static inline T512 name(T512 a, T512 b, T512 c) {                                                                  \
		return PM_EMU_JOIN(T512, T, op(PM_EMU_LO(T, a), PM_EMU_LO(T, b), PM_EMU_LO(T, c)),                            \
		                   op(PM_EMU_HI(T, a), PM_EMU_HI(T, b), PM_EMU_HI(T, c)));                                     \
	}

PM_EMU_2(pm_emu_mm512_add_ps, __m512, __m256, _mm256_add_ps)
PM_EMU_2(pm_emu_mm512_sub_ps, __m512, __m256, _mm256_sub_ps)
PM_EMU_2(pm_emu_mm512_mul_ps, __m512, __m256, _mm256_mul_ps)
PM_EMU_2(pm_emu_mm512_max_ps, __m512, __m256, _mm256_max_ps)
PM_EMU_2(pm_emu_mm512_min_ps, __m512, __m256, _mm256_min_ps)
PM_EMU_3(pm_emu_mm512_fmadd_ps, __m512, __m256, _mm256_fmadd_ps)
PM_EMU_2(pm_emu_mm512_add_epi16, __m512i, __m256i, _mm256_add_epi16)
PM_EMU_2(pm_emu_mm512_add_epi32, __m512i, __m256i, _mm256_add_epi32)
PM_EMU_2(pm_emu_mm512_madd_epi16, __m512i, __m256i, _mm256_madd_epi16)
PM_EMU_2(pm_emu_mm512_maddubs_epi16, __m512i, __m256i, _mm256_maddubs_epi16)

static inline __m512 pm_emu_mm512_cvtepi32_ps(__m512i a) {
	return PM_EMU_JOIN(__m512, __m256, _mm256_cvtepi32_ps(PM_EMU_LO(__m256i, a)),
	                   _mm256_cvtepi32_ps(PM_EMU_HI(__m256i, a)));
}
static inline __m512 pm_emu_mm512_loadu_ps(const void * p) {
	__m512 v;
	memcpy(&v, p, sizeof v);
	return v;
}
static inline __m512i pm_emu_mm512_loadu_si512(const void * p) {
	__m512i v;
	memcpy(&v, p, sizeof v);
	return v;
}
static inline void pm_emu_mm512_storeu_ps(void * p, __m512 v) { memcpy(p, &v, sizeof v); }
static inline __m512 pm_emu_mm512_set1_ps(float x) {
	return PM_EMU_JOIN(__m512, __m256, _mm256_set1_ps(x), _mm256_set1_ps(x));
}
static inline __m512i pm_emu_mm512_set1_epi32(int32_t x) {
	return PM_EMU_JOIN(__m512i, __m256i, _mm256_set1_epi32(x), _mm256_set1_epi32(x));
}
static inline __m512i pm_emu_mm512_setzero_si512(void) { return pm_emu_mm512_set1_epi32(0); }
PM_EMU_DPBUSD(pm_emu_mm512_dpbusd_epi32, 512, __m512i)

#undef _mm512_add_ps
#define _mm512_add_ps pm_emu_mm512_add_ps
#undef _mm512_sub_ps
#define _mm512_sub_ps pm_emu_mm512_sub_ps
#undef _mm512_mul_ps
#define _mm512_mul_ps pm_emu_mm512_mul_ps
#undef _mm512_max_ps
#define _mm512_max_ps pm_emu_mm512_max_ps
#undef _mm512_min_ps
#define _mm512_min_ps pm_emu_mm512_min_ps
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps pm_emu_mm512_fmadd_ps
#undef _mm512_add_epi16
#define _mm512_add_epi16 pm_emu_mm512_add_epi16
#undef _mm512_add_epi32
#define _mm512_add_epi32 pm_emu_mm512_add_epi32
#undef _mm512_madd_epi16
#define _mm512_madd_epi16 pm_emu_mm512_madd_epi16
#undef _mm512_maddubs_epi16
#define _mm512_maddubs_epi16 pm_emu_mm512_maddubs_epi16
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps pm_emu_mm512_cvtepi32_ps
#undef _mm512_loadu_ps
#define _mm512_loadu_ps pm_emu_mm512_loadu_ps
#undef _mm512_loadu_si512
#define _mm512_loadu_si512 pm_emu_mm512_loadu_si512
#undef _mm512_storeu_ps
#define _mm512_storeu_ps pm_emu_mm512_storeu_ps
#undef _mm512_set1_ps
#define _mm512_set1_ps pm_emu_mm512_set1_ps
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 pm_emu_mm512_set1_epi32
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 pm_emu_mm512_setzero_si512
#undef _mm512_dpbusd_epi32
#define _mm512_dpbusd_epi32 pm_emu_mm512_dpbusd_epi32

#elif defined(PM_EMULATE_AVXVNNI)

#define __AVXVNNI__ 1

PM_EMU_DPBUSD(pm_emu_mm256_dpbusd_avx_epi32, 256, __m256i)
#undef _mm256_dpbusd_avx_epi32
#define _mm256_dpbusd_avx_epi32 pm_emu_mm256_dpbusd_avx_epi32

#else
#error "cpu_emulated.h: define PM_EMULATE_AVX512 or PM_EMULATE_AVXVNNI"
#endif

#endif
