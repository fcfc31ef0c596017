// Our own CPU kernels, as ggml custom ops (cpu_*.c).
#ifndef PHOTOMAKER_CPU_KERNELS_H
#define PHOTOMAKER_CPU_KERNELS_H

#include "ggml_api.h"

// pm_geglu_erf is h·GELU(g) (the exact, erf GELU) for f32 h and g of one
// shape with contiguous rows: a custom op that only the CPU backend runs.
struct ggml_tensor * pm_geglu_erf(struct ggml_context * ctx, struct ggml_tensor * h, struct ggml_tensor * g);

// pm_group_norm is ggml_group_norm of x [W, H, C, B] (f32, rows
// contiguous; groups split C evenly) times w plus b (f32 [C]), then SiLU
// if silu, as a custom op that only the CPU backend runs. The operands must
// satisfy pm_group_norm_fits.
struct ggml_tensor * pm_group_norm(struct ggml_context * ctx, struct ggml_tensor * x, struct ggml_tensor * w,
                                   struct ggml_tensor * b, int groups, float eps, bool silu);
bool pm_group_norm_fits(const struct ggml_tensor * x, const struct ggml_tensor * w, const struct ggml_tensor * b, int groups);

// pm_layer_norm is ggml_norm of x's rows (f32, contiguous; any strides
// above) times w plus b (f32 [ne0]; b may be NULL), as a custom op that
// only the CPU backend runs. The operands must satisfy pm_layer_norm_fits.
struct ggml_tensor * pm_layer_norm(struct ggml_context * ctx, struct ggml_tensor * x, struct ggml_tensor * w,
                                   struct ggml_tensor * b, float eps);
bool pm_layer_norm_fits(const struct ggml_tensor * x, const struct ggml_tensor * w, const struct ggml_tensor * b);

// pm_im2col is ggml_im2col (2-D, dilation 1) of an f32 image src [W, H,
// C, N] whose rows are contiguous into [C·kh·kw, OW, OH, N] columns of type
// (f32 or f16), as a custom op that only the CPU backend runs. Its
// parameters must satisfy pm_im2col_fits.
struct ggml_tensor * pm_im2col(struct ggml_context * ctx, struct ggml_tensor * src, int kw, int kh, int s0, int s1,
                               int p0, int p1, enum ggml_type type);
bool pm_im2col_fits(int kw, int kh, int s0, int s1, int p0, int p1, int64_t channels, enum ggml_type type);

// pm_attention is softmax(q·kᵀ·scale)·v per head, as a custom op that only
// the CPU backend runs: q [D, H, Nq, B], k and v [D, H, Nk, B or 1], f32
// with contiguous rows of D. Returns [D·H, Nq, B]. D and Nk must satisfy
// pm_attention_fits.
struct ggml_tensor * pm_attention(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
                                  struct ggml_tensor * v, float scale);
bool pm_attention_fits(int64_t d, int64_t keys);

// pm_mul_mat is ggml_mul_mat for a [K, M] (2-D: f32, f16, bf16 (see
// pm_mul_mat_takes_bf16), q8_0, or with AVX2 q4_K (stored plainly, not
// repacked), q5_K or q6_K, and any other quantized type times at least
// pm_mul_mat_widen_min_n rows) and f32 b [K, N, B2, B3] with
// contiguous rows, plus bias [M] (f32, contiguous) if not NULL, as custom
// ops that only the CPU backend runs: [M, N, B2, B3]. The bias is added to
// the finished sums, as ggml_add would. The operands must satisfy
// pm_mul_mat_fits (and the bias pm_mul_mat_bias_fits).
struct ggml_tensor * pm_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
                                struct ggml_tensor * bias);
bool pm_mul_mat_fits(const struct ggml_tensor * a, const struct ggml_tensor * b);
bool pm_mul_mat_bias_fits(const struct ggml_tensor * a, const struct ggml_tensor * bias);
// pm_mul_mat_takes_int says whether pm_mul_mat multiplies weights of a
// quantized type in integers (compiled with AVX2: q4_0, q4_1, q5_0, q5_1,
// q8_0 and q2_K to q6_K), pm_mul_mat_takes_bf16 bf16 ones
// (unless compiled with AVX512-BF16, for ggml's), and pm_mul_mat_q8_levels
// to how many levels each side of zero it rounds the activations of q8_0
// weights per 32 values: 127 (8 bits, compiled with VNNI), 32767 (16 bits,
// AVX2), or 0 (f32).
bool pm_mul_mat_takes_int(enum ggml_type type);
bool pm_mul_mat_takes_bf16(void);
// pm_mul_mat_widen_min_n is the fewest activation rows (b's) that
// pm_mul_mat multiplies weights of other quantized types by, widening them
// to f32 as it packs them (x86 with AVX2), or 0 where it never does.
int pm_mul_mat_widen_min_n(void);
int pm_mul_mat_q8_levels(void);

// pm_quantize writes n values of x as q4_K, q5_K or q8_0 blocks to y, as
// ggml's reference quantizers do (cpu_quantizers.c), and returns true;
// false, writing nothing, for other types or n not whole blocks.
bool pm_quantize(enum ggml_type type, const float * x, void * y, int64_t n);
bool pm_fuses_multiply_add(void);

// pm_conv3x3 is a "same" 3×3 convolution of stride 1 (padding 1) of x
// [W, H, Cin, B] (f32, rows contiguous), or with up = 2 of its nearest 2×
// upsample, with a kernel by row [3, Cin, Cout, 3] (f32 or f16, contiguous,
// or a contiguous [3, 3, Cin, Cout] permuted (0, 3, 1, 2)), plus bias
// [Cout] if not NULL, by Winograd's F(m×m, 3×3), as
// custom ops that only the CPU backend runs: [up·W, up·H, Cout, B]. The
// operands must satisfy pm_conv3x3_fits. pm_conv3x3_tile is the m (2 or 4)
// it takes for Cin, Cout and up·W·up·H·B output pixels, pm_conv3x3_groups
// the groups of output channels it is made in (each a kernel transform
// and a convolution writing its channels: at most the floats of
// transformed kernel pm_set_wino_group_floats set, which returns the
// previous value).
struct ggml_tensor * pm_conv3x3(struct ggml_context * ctx, struct ggml_tensor * kernel, struct ggml_tensor * x,
                                struct ggml_tensor * bias, int up);
bool pm_conv3x3_fits(const struct ggml_tensor * kernel, const struct ggml_tensor * x);
int pm_conv3x3_tile(int64_t cin, int64_t cout, int64_t pixels);
int64_t pm_conv3x3_groups(int64_t cin, int64_t cout, int64_t pixels);
int64_t pm_set_wino_group_floats(int64_t n);

// pm_conv1x1 is a 1×1 convolution of x [W, H, Cin, B] (f32, each
// channel's plane contiguous) with w [Cin, Cout] (f32 or f16), plus bias [Cout]
// if not NULL, as a custom op that only the CPU backend runs: [W, H, Cout,
// B]. The operands must satisfy pm_conv1x1_fits.
struct ggml_tensor * pm_conv1x1(struct ggml_context * ctx, struct ggml_tensor * w, struct ggml_tensor * x,
                                struct ggml_tensor * bias);
bool pm_conv1x1_fits(const struct ggml_tensor * w, const struct ggml_tensor * x);

// pm_kernel_lanes is the floats per vector our kernels were compiled for:
// 16 with AVX-512, 8 with AVX, else 4.
int pm_kernel_lanes(void);

// pm_kernel_flops is the multiply-adds, twice, of a GGML_OP_CUSTOM node of
// ours (0 for those without products, and for others' custom ops).
int64_t pm_kernel_flops(const struct ggml_tensor * t);

// pm_kernel_target_built says whether this build has our kernels for
// target besides its own (cpu_targets.h: x86-64-v3 and x86-64-v4 with VNNI
// in a plain x86-64 build, v4 in an x86-64-v3 one; PM_KERNELS_OWN always).
// pm_use_kernel_target picks one (one not built: the own); graphs built
// after it take that target's kernels.
enum pm_kernel_target { PM_KERNELS_OWN, PM_KERNELS_X86_64_V3, PM_KERNELS_X86_64_V4 };
bool pm_kernel_target_built(enum pm_kernel_target target);
void pm_use_kernel_target(enum pm_kernel_target target);

#endif
