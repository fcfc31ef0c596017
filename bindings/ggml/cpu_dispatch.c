// cpu_kernels.h's functions in a build with our kernels for several
// targets (cpu_targets.h): each calls the target picked by
// pm_use_kernel_target.
#define PM_CALLER
#include "cpu_targets.h"
#include "cpu_kernels.h"

#if PM_MULTI_TARGET
static enum pm_kernel_target target;

bool pm_kernel_target_built(enum pm_kernel_target t) {
	return t == PM_KERNELS_OWN || t == PM_KERNELS_X86_64_V4 || (t == PM_KERNELS_X86_64_V3 && PM_HAS_V3_TARGET);
}
void pm_use_kernel_target(enum pm_kernel_target t) { target = pm_kernel_target_built(t) ? t : PM_KERNELS_OWN; }

// DECLARE declares f's versions for every target built, with its own
// parameters (so the compiler checks them against cpu_kernels.h); DISPATCH
// defines f to call the picked one. An x86-64-v3 build has no _x86_64_v3
// versions: its own are those.
#if PM_HAS_V3_TARGET
#define DECLARE_V3(ret, f, params) ret f##_x86_64_v3 params;
#define CASE_V3(f, args)                                                                                               \
	case PM_KERNELS_X86_64_V3:                                                                                          \
		return f##_x86_64_v3 args;
#define CALL_V3(f, args) f##_x86_64_v3 args
#else
#define DECLARE_V3(ret, f, params)
#define CASE_V3(f, args)
#define CALL_V3(f, args) 0
#endif
#define DECLARE(ret, f, params)                                                                                        \
	ret f##_base params;                                                                                                \
	DECLARE_V3(ret, f, params)                                                                                          \
	ret f##_x86_64_v4 params;
#define DISPATCH(ret, f, params, args)                                                                                 \
	DECLARE(ret, f, params)                                                                                             \
	ret f params {                                                                                                      \
		switch (target) {                                                                                               \
		case PM_KERNELS_X86_64_V4:                                                                                      \
			return f##_x86_64_v4 args;                                                                                  \
			CASE_V3(f, args)                                                                                            \
		default:                                                                                                        \
			return f##_base args;                                                                                       \
		}                                                                                                               \
	}

typedef struct ggml_tensor * tensor;
typedef const struct ggml_tensor * ctensor;
typedef struct ggml_context * context;

DISPATCH(tensor, pm_geglu_erf, (context ctx, tensor h, tensor g), (ctx, h, g))
DISPATCH(tensor, pm_group_norm, (context ctx, tensor x, tensor w, tensor b, int groups, float eps, bool silu),
         (ctx, x, w, b, groups, eps, silu))
DISPATCH(bool, pm_group_norm_fits, (ctensor x, ctensor w, ctensor b, int groups), (x, w, b, groups))
DISPATCH(tensor, pm_layer_norm, (context ctx, tensor x, tensor w, tensor b, float eps), (ctx, x, w, b, eps))
DISPATCH(bool, pm_layer_norm_fits, (ctensor x, ctensor w, ctensor b), (x, w, b))
DISPATCH(tensor, pm_im2col, (context ctx, tensor src, int kw, int kh, int s0, int s1, int p0, int p1, enum ggml_type type),
         (ctx, src, kw, kh, s0, s1, p0, p1, type))
DISPATCH(bool, pm_im2col_fits, (int kw, int kh, int s0, int s1, int p0, int p1, int64_t channels, enum ggml_type type),
         (kw, kh, s0, s1, p0, p1, channels, type))
DISPATCH(tensor, pm_attention, (context ctx, tensor q, tensor k, tensor v, float scale), (ctx, q, k, v, scale))
DISPATCH(bool, pm_attention_fits, (int64_t d, int64_t keys), (d, keys))
DISPATCH(tensor, pm_mul_mat, (context ctx, tensor a, tensor b, tensor bias), (ctx, a, b, bias))
DISPATCH(bool, pm_mul_mat_fits, (ctensor a, ctensor b), (a, b))
DISPATCH(bool, pm_mul_mat_bias_fits, (ctensor a, ctensor bias), (a, bias))
DISPATCH(bool, pm_mul_mat_takes_int, (enum ggml_type type), (type))
DISPATCH(bool, pm_mul_mat_takes_bf16, (void), ())
DISPATCH(int, pm_mul_mat_widen_min_n, (void), ())
DISPATCH(int, pm_mul_mat_q8_levels, (void), ())
DISPATCH(bool, pm_quantize, (enum ggml_type type, const float * x, void * y, int64_t n), (type, x, y, n))
DISPATCH(tensor, pm_conv3x3, (context ctx, tensor kernel, tensor x, tensor bias, int up), (ctx, kernel, x, bias, up))
DISPATCH(bool, pm_conv3x3_fits, (ctensor kernel, ctensor x), (kernel, x))
DISPATCH(int, pm_conv3x3_tile, (int64_t cin, int64_t cout, int64_t pixels), (cin, cout, pixels))
DISPATCH(int64_t, pm_conv3x3_groups, (int64_t cin, int64_t cout, int64_t pixels), (cin, cout, pixels))
DISPATCH(tensor, pm_conv1x1, (context ctx, tensor w, tensor x, tensor bias), (ctx, w, x, bias))
DISPATCH(bool, pm_conv1x1_fits, (ctensor w, ctensor x), (w, x))
DISPATCH(int, pm_kernel_lanes, (void), ())

// Every target's: they all set the same value.
DECLARE(int64_t, pm_set_wino_group_floats, (int64_t n))
int64_t pm_set_wino_group_floats(int64_t n) {
	pm_set_wino_group_floats_x86_64_v4(n);
	(void)CALL_V3(pm_set_wino_group_floats, (n));
	return pm_set_wino_group_floats_base(n);
}

// A node is one target's (or none's): the others answer 0.
DECLARE(int64_t, pm_kernel_flops, (ctensor t))
int64_t pm_kernel_flops(ctensor t) {
	return pm_kernel_flops_base(t) + CALL_V3(pm_kernel_flops, (t)) + pm_kernel_flops_x86_64_v4(t);
}

// Whether ggml's quantizers fuse: ggml is compiled for the build's target.
bool pm_fuses_multiply_add_base(void);
bool pm_fuses_multiply_add(void) { return pm_fuses_multiply_add_base(); }
#else
bool pm_kernel_target_built(enum pm_kernel_target t) { return t == PM_KERNELS_OWN; }
void pm_use_kernel_target(enum pm_kernel_target t) { (void)t; }
#endif
