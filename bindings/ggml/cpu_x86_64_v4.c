// Our CPU kernels again, for x86-64-v4 CPUs with VNNI (x86-64-v3 and
// AVX-512 F, BW, CD, DQ, VL and VNNI: Intel since Cascade Lake and Ice
// Lake, AMD since Zen 4), in a build whose own target lacks AVX2
// (cpu_targets.h); empty in every other build. Twice the vector width of
// x86-64-v3's, and q8_0 products in 8-bit integers (ggml/README.md, "CPU
// builds"). Without AVX-512 BF16, so bf16 weights stay ours, as ggml's
// (SSE2 here) has no bf16 dot products.
#define PM_TARGET x86_64_v4
#include "cpu_targets.h"

#if PM_MULTI_TARGET
// What the kernel files include, compiled for the build's own target
// first: the target below is for our functions only.
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

#if defined(__clang__)
// clang's pragma sets the target, not the macros our files test.
#pragma clang attribute push(__attribute__((target("avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni"))), apply_to = function)
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512CD__ 1
#define __AVX512DQ__ 1
#define __AVX512VL__ 1
#define __AVX512VNNI__ 1
#else
#pragma GCC target("avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni")
#endif

#include "cpu_kernel_files.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
