// Our own CPU kernels, as ggml custom ops (cpu_kernels.c).
#ifndef PHOTOMAKER_CPU_KERNELS_H
#define PHOTOMAKER_CPU_KERNELS_H

#include "ggml_api.h"

// pm_geglu_erf is h·GELU(g) (the exact, erf GELU) for f32 h and g of one
// shape with contiguous rows: a custom op that only the CPU backend runs.
struct ggml_tensor * pm_geglu_erf(struct ggml_context * ctx, struct ggml_tensor * h, struct ggml_tensor * g);

#endif
