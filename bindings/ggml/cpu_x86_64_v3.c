// Our CPU kernels again, for x86-64-v3 CPUs (AVX2, FMA, F16C: Intel since
// Haswell, AMD since Excavator), in a build whose own target lacks AVX2
// (cpu_targets.h); empty in every other build.
#define PM_TARGET x86_64_v3
#define PM_TARGET_ISA "avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe"
#define PM_TARGET_LEVEL 3
#include "cpu_kernel_files.h"
