// Our own CPU kernels for ops whose ggml CPU kernel is slow, run as ggml
// custom ops (which only the CPU backend runs; see Context.SetCPUKernels).
// They use GCC/Clang vector extensions, so they get the SIMD that the C
// flags allow (AVX2 with `make`'s -march, NEON on arm64) and stay portable.
// This file: GEGLU, group and layer norms, im2col and the kernels' FLOP
// counts;
// cpu_attention.c, cpu_gemm.c (products, 1×1 convolutions) and
// cpu_winograd.c (3×3 convolutions) the others; cpu_internal.h what they
// share.
#include <math.h>

#include "cpu_internal.h"

// vgeglu is h·x·Φ(x) with Φ the standard normal CDF, which is GELU(x)·h as
// PyTorch's exact (erf) GELU defines it. Φ(x) = erfc(−x/√2)/2; erfc(z) for
// z ≥ 0 is t·exp(−z² + P(t)), t = 1/(1 + z/2), with the Chebyshev-fitted
// polynomial P of Numerical Recipes (fractional error below 1.2e-7 for
// every z). For x ≥ 0, Φ(x) = 1 − erfc(x/√2)/2. Taking the tail from erfc
// keeps negative inputs accurate where 1 + erf(x) would cancel.
static inline vf vgeglu(vf x, vf h) {
	vf z = (vf)((vi)x & splat_i(0x7fffffff)) * splat(0.707106781f); // |x|/√2
	vf t = splat(1.0f) / (splat(1.0f) + splat(0.5f) * z);
	vf p = splat(0.17087277f);
	p = p * t + splat(-0.82215223f);
	p = p * t + splat(1.48851587f);
	p = p * t + splat(-1.13520398f);
	p = p * t + splat(0.27886807f);
	p = p * t + splat(-0.18628806f);
	p = p * t + splat(0.09678418f);
	p = p * t + splat(0.37409196f);
	p = p * t + splat(1.00002368f);
	p = p * t + splat(-1.26551223f);
	vf tail = splat(0.5f) * t * vexp(p - z * z); // Φ(−|x|)
	vf phi = blend(x < splat(0.0f), tail, splat(1.0f) - tail);
	return h * x * phi;
}

// geglu_row writes n values of h·GELU(g) to y.
static void geglu_row(float * y, const float * h, const float * g, int64_t n) {
	int64_t i = 0;
	for (; i + PM_LANES <= n; i += PM_LANES) {
		storev(y + i, vgeglu(loadv(g + i), loadv(h + i)));
	}
	if (i < n) { // the tail, through zero-padded vectors
		vf x = splat(0.0f), hv = splat(0.0f), v;
		memcpy(&x, g + i, (size_t)(n - i) * sizeof(float));
		memcpy(&hv, h + i, (size_t)(n - i) * sizeof(float));
		v = vgeglu(x, hv);
		memcpy(y + i, &v, (size_t)(n - i) * sizeof(float));
	}
}

// pm_geglu_erf_rows is the custom op: dst = h·GELU(g) for f32 tensors of
// one shape whose rows (dimension 0) are contiguous.
static void pm_geglu_erf_rows(struct ggml_tensor * dst, const struct ggml_tensor * h, const struct ggml_tensor * g,
                              int ith, int nth, void * userdata) {
	(void)userdata;
	const int64_t n = dst->ne[0];
	int64_t r0, r1;
	thread_rows(dst->ne[1] * dst->ne[2] * dst->ne[3], ith, nth, &r0, &r1);
	for (int64_t r = r0; r < r1; r++) {
		const int64_t i1 = r % dst->ne[1], i2 = r / dst->ne[1] % dst->ne[2], i3 = r / (dst->ne[1] * dst->ne[2]);
#define PM_ROW(t) ((char *)(t)->data + i1 * (t)->nb[1] + i2 * (t)->nb[2] + i3 * (t)->nb[3])
		geglu_row((float *)PM_ROW(dst), (const float *)PM_ROW(h), (const float *)PM_ROW(g), n);
#undef PM_ROW
	}
}

struct ggml_tensor * pm_geglu_erf(struct ggml_context * ctx, struct ggml_tensor * h, struct ggml_tensor * g) {
	// The name is what op profiles show for it (see pmEval).
	return ggml_set_name(ggml_map_custom2(ctx, h, g, pm_geglu_erf_rows, GGML_N_TASKS_MAX, NULL), "GEGLU_ERF (ours)");
}

// Group norm with its affine transform, and optionally SiLU, in one op:
// ggml runs GROUP_NORM, MUL, ADD and SILU, each a pass over the image
// (and its GROUP_NORM two more); here a thread takes whole groups of one
// image: the mean and then the variance (each row summed in float
// vectors, rows added in double, as ggml sums in double), then y =
// x·(rstd·w) + (b − mean·rstd·w), times sigmoid(y) with SiLU, written once.
_Static_assert(sizeof(uintptr_t) >= 8, "the group norm's parameters need a 64-bit userdata");

// row_sum is Σ (x[i] − mean)^power over n values, power 1 or 2.
static double row_sum(const float * x, int64_t n, float mean, int power) {
	vf acc = splat(0.0f);
	int64_t i = 0;
	for (; i + PM_LANES <= n; i += PM_LANES) {
		const vf d = loadv(x + i) - splat(mean);
		acc += power == 1 ? d : d * d;
	}
	double sum = 0;
	for (; i < n; i++) {
		const double d = (double)x[i] - mean;
		sum += power == 1 ? d : d * d;
	}
	float lanes[PM_LANES];
	memcpy(lanes, &acc, sizeof lanes);
	for (int l = 0; l < PM_LANES; l++) {
		sum += lanes[l];
	}
	return sum;
}

// vsilu is y·sigmoid(y), the sigmoid from e^−|y| (vexp's range).
static inline vf vsilu(vf y) {
	const vf e = vexp(-(vf)((vi)y & splat_i(0x7fffffff)));
	const vf sig = blend(y < splat(0.0f), e, splat(1.0f)) / (splat(1.0f) + e);
	return y * sig;
}

static void group_norm_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct ggml_tensor * x = dst->src[0], * w = dst->src[1], * bias = dst->src[2];
	const uint64_t prm = (uint64_t)(uintptr_t)userdata;
	const uint32_t eps_bits = (uint32_t)prm;
	float eps;
	memcpy(&eps, &eps_bits, sizeof eps);
	const int groups = (int)((prm >> 32) & 0x7fffffff), silu = (int)(prm >> 63);
	const int64_t W = x->ne[0], H = x->ne[1], C = x->ne[2], B = x->ne[3], cg = C / groups;
	int64_t t0, t1;
	thread_rows(B * groups, ith, nth, &t0, &t1);
	for (int64_t task = t0; task < t1; task++) {
		const int64_t b = task / groups, c0 = task % groups * cg;
#define PM_XROW(c, y) ((const float *)((const char *)x->data + b * x->nb[3] + (c) * x->nb[2] + (y) * x->nb[1]))
		double sum = 0;
		for (int64_t c = c0; c < c0 + cg; c++) {
			for (int64_t y = 0; y < H; y++) {
				sum += row_sum(PM_XROW(c, y), W, 0.0f, 1);
			}
		}
		const double n = (double)(W * H * cg);
		const float mean = (float)(sum / n);
		double sum2 = 0;
		for (int64_t c = c0; c < c0 + cg; c++) {
			for (int64_t y = 0; y < H; y++) {
				sum2 += row_sum(PM_XROW(c, y), W, mean, 2);
			}
		}
		const float rstd = 1.0f / sqrtf((float)(sum2 / n) + eps);
		for (int64_t c = c0; c < c0 + cg; c++) {
			const float scale = rstd * ((const float *)w->data)[c];
			const vf vs = splat(scale), vt = splat(((const float *)bias->data)[c] - mean * scale);
			for (int64_t y = 0; y < H; y++) {
				const float * in = PM_XROW(c, y);
				float * out = (float *)dst->data + ((b * C + c) * H + y) * W;
				int64_t i = 0;
				for (; i + PM_LANES <= W; i += PM_LANES) {
					const vf v = loadv(in + i) * vs + vt;
					storev(out + i, silu ? vsilu(v) : v);
				}
				if (i < W) { // the tail, through a zero-padded vector
					vf v = splat(0.0f);
					memcpy(&v, in + i, (size_t)(W - i) * sizeof(float));
					v = v * vs + vt;
					if (silu) {
						v = vsilu(v);
					}
					memcpy(out + i, &v, (size_t)(W - i) * sizeof(float));
				}
			}
		}
#undef PM_XROW
	}
}

bool pm_group_norm_fits(const struct ggml_tensor * x, const struct ggml_tensor * w, const struct ggml_tensor * b, int groups) {
	const int64_t C = x->ne[2];
	return x->type == GGML_TYPE_F32 && x->nb[0] == sizeof(float) && groups > 0 && C % groups == 0 &&
	       w->type == GGML_TYPE_F32 && b->type == GGML_TYPE_F32 && ggml_is_contiguous(w) && ggml_is_contiguous(b) &&
	       ggml_nelements(w) == C && ggml_nelements(b) == C;
}

struct ggml_tensor * pm_group_norm(struct ggml_context * ctx, struct ggml_tensor * x, struct ggml_tensor * w,
                                   struct ggml_tensor * b, int groups, float eps, bool silu) {
	uint32_t eps_bits;
	memcpy(&eps_bits, &eps, sizeof eps_bits);
	const uint64_t prm = (uint64_t)eps_bits | (uint64_t)groups << 32 | (uint64_t)(silu ? 1 : 0) << 63;
	struct ggml_tensor * args[3] = {x, w, b};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, 3,
	                                        group_norm_op, GGML_N_TASKS_MAX, (void *)(uintptr_t)prm);
	return ggml_set_name(t, silu ? "GROUP_NORM_SILU (ours)" : "GROUP_NORM (ours)");
}

// Layer norm with its affine transform in one op (ggml: NORM, MUL, ADD):
// each row's mean and variance as the group norm's, then one pass writing
// (x − mean)·rstd·w + b. src[1] w and src[2] b (or none) are f32 [C].
static void layer_norm_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct ggml_tensor * x = dst->src[0], * w = dst->src[1], * bias = dst->src[2];
	const uint32_t eps_bits = (uint32_t)(uintptr_t)userdata;
	float eps;
	memcpy(&eps, &eps_bits, sizeof eps);
	const int64_t C = x->ne[0], rows = x->ne[1] * x->ne[2] * x->ne[3];
	const float * wv = (const float *)w->data, * bv = bias != NULL ? (const float *)bias->data : NULL;
	int64_t r0, r1;
	thread_rows(rows, ith, nth, &r0, &r1);
	for (int64_t r = r0; r < r1; r++) {
		const int64_t i1 = r % x->ne[1], i2 = r / x->ne[1] % x->ne[2], i3 = r / (x->ne[1] * x->ne[2]);
		const float * in = (const float *)((const char *)x->data + i1 * x->nb[1] + i2 * x->nb[2] + i3 * x->nb[3]);
		float * out = (float *)dst->data + r * C;
		const float mean = (float)(row_sum(in, C, 0.0f, 1) / (double)C);
		const float rstd = 1.0f / sqrtf((float)(row_sum(in, C, mean, 2) / (double)C) + eps);
		int64_t i = 0;
		for (; i + PM_LANES <= C; i += PM_LANES) {
			vf v = (loadv(in + i) - splat(mean)) * splat(rstd) * loadv(wv + i);
			storev(out + i, bv != NULL ? v + loadv(bv + i) : v);
		}
		for (; i < C; i++) {
			out[i] = (in[i] - mean) * rstd * wv[i] + (bv != NULL ? bv[i] : 0.0f);
		}
	}
}

bool pm_layer_norm_fits(const struct ggml_tensor * x, const struct ggml_tensor * w, const struct ggml_tensor * b) {
	return x->type == GGML_TYPE_F32 && x->nb[0] == sizeof(float) && w->type == GGML_TYPE_F32 && ggml_is_contiguous(w) &&
	       ggml_nelements(w) == x->ne[0] &&
	       (b == NULL || (b->type == GGML_TYPE_F32 && ggml_is_contiguous(b) && ggml_nelements(b) == x->ne[0]));
}

struct ggml_tensor * pm_layer_norm(struct ggml_context * ctx, struct ggml_tensor * x, struct ggml_tensor * w,
                                   struct ggml_tensor * b, float eps) {
	uint32_t eps_bits;
	memcpy(&eps_bits, &eps, sizeof eps_bits);
	struct ggml_tensor * args[3] = {x, w, b};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, b != NULL ? 3 : 2,
	                                        layer_norm_op, GGML_N_TASKS_MAX, (void *)(uintptr_t)eps_bits);
	return ggml_set_name(t, "LAYER_NORM (ours)");
}

// im2col's parameters travel in the op's userdata pointer (ggml never
// dereferences it), four bits each: kernel width and height, strides,
// paddings. pm_im2col_fits says which parameters fit. IM2COL_BUF is the
// floats of f16 columns built at once (64 KB, on the stack).
enum { IM2COL_BITS = 4, IM2COL_MAX = (1 << IM2COL_BITS) - 1, IM2COL_BUF = 16384 };

bool pm_im2col_fits(int kw, int kh, int s0, int s1, int p0, int p1, int64_t channels, enum ggml_type type) {
	const int v[6] = {kw, kh, s0, s1, p0, p1};
	for (int i = 0; i < 6; i++) {
		if (v[i] < 0 || v[i] > IM2COL_MAX) {
			return false;
		}
	}
	return kw > 0 && kh > 0 && s0 > 0 && s1 > 0 &&
	       (type == GGML_TYPE_F32 || (type == GGML_TYPE_F16 && channels * kh * kw <= IM2COL_BUF));
}

// im2col_rows is ggml's 2-D im2col (dilation 1) of an f32 image src
// [IW, IH, IC, N] (rows contiguous, any strides above) into dst [IC·KH·KW,
// OW, OH, N] (f32 or f16, contiguous). ggml's CPU kernel hands threads
// alternate channels of each output pixel, so both threads write the same
// cache lines, and converts values to f16 one at a time. Here each thread
// takes whole output rows, reading each input row forward, and f16 columns
// are converted a chunk at a time.
static void im2col_rows(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct ggml_tensor * src = dst->src[0];
	const uintptr_t pk = (uintptr_t)userdata;
	int prm[6];
	for (int i = 0; i < 6; i++) {
		prm[i] = (int)(pk >> (IM2COL_BITS * i)) & IM2COL_MAX;
	}
	const int kw = prm[0], kh = prm[1], s0 = prm[2], s1 = prm[3], p0 = prm[4], p1 = prm[5];
	const int64_t K = dst->ne[0], OW = dst->ne[1], OH = dst->ne[2], N = dst->ne[3];
	const int64_t IW = src->ne[0], IH = src->ne[1], IC = src->ne[2];
	const bool f16 = dst->type == GGML_TYPE_F16;
	int64_t r0, r1;
	thread_rows(OH * N, ith, nth, &r0, &r1);
	// Output pixels per chunk: f16 columns are built in an f32 buffer that
	// stays in L2; f32 ones are written in place, a whole row at once
	// (fastest on the dev VM).
	const int64_t chunk = f16 ? IM2COL_BUF / K : OW;
	float buf[IM2COL_BUF];
	for (int64_t r = r0; r < r1; r++) {
		const int64_t n = r / OH, oh = r % OH;
		for (int64_t ow0 = 0; ow0 < OW; ow0 += chunk) {
			const int64_t m = OW - ow0 < chunk ? OW - ow0 : chunk;
			const int64_t at = (r * OW + ow0) * K; // dst is contiguous: row r of OW columns of K
			float * out = f16 ? buf : (float *)dst->data + at;
			for (int64_t ic = 0; ic < IC; ic++) {
				for (int ky = 0; ky < kh; ky++) {
					const int64_t ih = oh * s1 + ky - p1;
					const float * in = ih < 0 || ih >= IH ? NULL
						: (const float *)((const char *)src->data + n * src->nb[3] + ic * src->nb[2] + ih * src->nb[1]);
					float * o = out + (ic * kh + ky) * kw;
					for (int64_t j = 0; j < m; j++, o += K) {
						const int64_t iw0 = (ow0 + j) * s0 - p0;
						if (in != NULL && iw0 >= 0 && iw0 + kw <= IW) { // inside the row: no checks
							if (kw == 3) { // the convolutions by kernel row: a constant the compiler unrolls
								o[0] = in[iw0], o[1] = in[iw0 + 1], o[2] = in[iw0 + 2];
								continue;
							}
							for (int kx = 0; kx < kw; kx++) {
								o[kx] = in[iw0 + kx];
							}
							continue;
						}
						for (int kx = 0; kx < kw; kx++) {
							const int64_t iw = iw0 + kx;
							o[kx] = in != NULL && iw >= 0 && iw < IW ? in[iw] : 0.0f;
						}
					}
				}
			}
			if (f16) {
				f32_to_f16(buf, (ggml_fp16_t *)dst->data + at, m * K);
			}
		}
	}
}

struct ggml_tensor * pm_im2col(struct ggml_context * ctx, struct ggml_tensor * src, int kw, int kh, int s0, int s1,
                               int p0, int p1, enum ggml_type type) {
	const int64_t ow = (src->ne[0] + 2 * p0 - kw) / s0 + 1, oh = (src->ne[1] + 2 * p1 - kh) / s1 + 1;
	uintptr_t pk = 0;
	const int prm[6] = {kw, kh, s0, s1, p0, p1};
	for (int i = 0; i < 6; i++) {
		pk |= (uintptr_t)prm[i] << (IM2COL_BITS * i);
	}
	struct ggml_tensor * args[1] = {src};
	struct ggml_tensor * t = ggml_custom_4d(ctx, type, src->ne[2] * kh * kw, ow, oh, src->ne[3], args, 1, im2col_rows,
	                                        GGML_N_TASKS_MAX, (void *)pk);
	return ggml_set_name(t, "IM2COL (ours)");
}

int pm_kernel_lanes(void) { return PM_LANES; }

// The parameters ggml keeps in a GGML_OP_CUSTOM node's op_params.
struct custom_params {
	ggml_custom_op_t fun;
	int n_tasks;
	void * userdata;
};

int64_t pm_kernel_flops(const struct ggml_tensor * t) {
	struct custom_params p;
	memcpy(&p, t->op_params, sizeof p);
	if (p.fun == pm_gemm_op || p.fun == pm_int_product_op) { // a multiply-add per value of a and row of b
		return 2 * ggml_nelements(t->src[0]) * t->src[1]->ne[1] * t->src[1]->ne[2] * t->src[1]->ne[3];
	}
	if (p.fun == pm_conv1x1_op) { // a multiply-add per value of x and output channel
		return 2 * ggml_nelements(t->src[0]) * t->src[1]->ne[1];
	}
	if (p.fun == pm_wino_conv_op) { // (m+2)² multiply-adds per m×m output tile, input and output channel
		const struct ggml_tensor * x, * u, * bias;
		pm_wino_operands(t, p.userdata, &x, &u, &bias);
		const int64_t xi = u->ne[2], m = xi == 16 ? 2 : 4;
		return 2 * xi * ((t->ne[0] + m - 1) / m) * ((t->ne[1] + m - 1) / m) * x->ne[3] * x->ne[2] * u->ne[1];
	}
	if (p.fun != pm_attention_op) {
		return 0;
	}
	// q·kᵀ and p·v: 2 multiply-adds per query value and key.
	const struct ggml_tensor * q = t->src[0], * k = t->src[1];
	return 4 * q->ne[0] * q->ne[1] * q->ne[2] * q->ne[3] * k->ne[2];
}
