// Every kernel file, included by cpu_x86_64_v3.c and cpu_x86_64_v4.c once
// they have set their target (cpu_targets.h). Not a header of its own.
#include "cpu_attention.c"
#include "cpu_gemm.c"
#include "cpu_kernels.c"
#include "cpu_quant.c"
#include "cpu_winograd.c"
// Last: it turns off contraction for the rest of the file.
#include "cpu_quantizers.c"
