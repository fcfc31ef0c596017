// Our CPU kernels again, for x86-64-v4 CPUs with VNNI (x86-64-v3 and
// AVX-512 F, BW, CD, DQ, VL and VNNI: Intel since Cascade Lake and Ice
// Lake, AMD since Zen 4), in an x86-64 build whose own target lacks
// AVX-512: a plain one (SSE2) or make portable's (x86-64-v3); empty in
// every other build (cpu_targets.h). Twice the vector width of x86-64-v3's,
// and q8_0 products in 8-bit integers (ggml/README.md, "CPU builds").
// Without AVX-512 BF16, so bf16 weights stay ours, as ggml's (SSE2 or
// AVX2 here) has no bf16 dot products.
#define PM_TARGET x86_64_v4
#define PM_TARGET_ISA "avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni"
#define PM_TARGET_LEVEL 4
#include "cpu_kernel_files.h"
