// Our CPU kernels again, for x86-64-v3 CPUs (AVX2, FMA, F16C: Intel since
// Haswell, AMD since Excavator), in a build whose own target lacks AVX2
// (cpu_targets.h); empty in every other build.
#define PM_TARGET x86_64_v3
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
#pragma clang attribute push(__attribute__((target("avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe"))), apply_to = function)
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#else
#pragma GCC target("avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe")
#endif

#include "cpu_kernel_files.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
