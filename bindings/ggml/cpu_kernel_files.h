// Every kernel file again, for the extra target of the file that includes
// this (cpu_x86_64_v3.c, cpu_x86_64_v4.c: PM_TARGET, the instruction sets
// PM_TARGET_ISA and PM_TARGET_LEVEL, 3 or 4), in a build whose own target
// is below it (cpu_targets.h); nothing in every other build. Not a header
// of its own.
#include "cpu_targets.h"

#if PM_MULTI_TARGET && PM_TARGET_LEVEL > PM_OWN_LEVEL
// What the kernel files include, compiled for the build's own target
// first: the target below is for our functions only.
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

#define PM_PRAGMA_(...) _Pragma(#__VA_ARGS__)
#define PM_PRAGMA(...) PM_PRAGMA_(__VA_ARGS__)
#if defined(__clang__)
// clang's pragma sets the target, not the macros our files test.
PM_PRAGMA(clang attribute push(__attribute__((target(PM_TARGET_ISA))), apply_to = function))
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#if PM_TARGET_LEVEL >= 4
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512CD__ 1
#define __AVX512DQ__ 1
#define __AVX512VL__ 1
#define __AVX512VNNI__ 1
#endif
#else
PM_PRAGMA(GCC target(PM_TARGET_ISA))
#endif

#include "cpu_attention.c"
#include "cpu_gemm.c"
#include "cpu_kernels.c"
#include "cpu_quant.c"
#include "cpu_winograd.c"
// Last: it turns off contraction for the rest of the file.
#include "cpu_quantizers.c"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
