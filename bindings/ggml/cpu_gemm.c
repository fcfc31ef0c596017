// Our CPU matrix products and 1×1 convolutions (see cpu_kernels.c).
#include "cpu_internal.h"

// gemm_tile adds (or stores, when first) Σ_k ap[k][i]·b_j[k] for MM_MR rows
// i of the packed panel ap and MM_NR rows b_j into c[j·ldc + i], of which
// only rows i < rows are written, then adds bias[i] if bias is not NULL.
static inline void gemm_tile(int64_t kc, const float * ap, const float * const br[MM_NR], float * c, int64_t ldc,
                             bool first, int64_t rows, const float * bias) {
	vf acc[MM_NR][3];
	for (int j = 0; j < MM_NR; j++) {
		acc[j][0] = acc[j][1] = acc[j][2] = splat(0.0f);
	}
	outer_tile(acc, ap, MM_MR, br, kc);
	if (rows < MM_MR) { // the last rows
		float t[MM_NR * MM_MR];
		memcpy(t, acc, sizeof t);
		add_tile(c, ldc, t, MM_MR, rows, MM_NR, first, bias);
		return;
	}
	for (int j = 0; j < MM_NR; j++) {
		float * cj = c + j * ldc;
		for (int v = 0; v < 3; v++) {
			vf y = first ? acc[j][v] : acc[j][v] + loadv(cj + v * PM_LANES);
			storev(cj + v * PM_LANES, bias != NULL ? y + loadv(bias + v * PM_LANES) : y);
		}
	}
}

// widen_row writes k [k0, k0+kc) of a raw row (g->raw_type) as floats:
// for a quantized type, k0 and kc are whole blocks.
static void widen_row(const struct gemm_operands * g, const char * row, int64_t k0, int64_t kc, float * w) {
	switch (g->raw_type) {
	case GGML_TYPE_F16:
		f16_to_f32((const ggml_fp16_t *)row + k0, w, kc);
		return;
	case GGML_TYPE_BF16:
		bf16_to_f32((const ggml_bf16_t *)row + k0, w, kc);
		return;
	default: // PM_WIDENS_ANY: ggml's decoder
		ggml_get_type_traits(g->raw_type)
		    ->to_float(row + k0 / ggml_blck_size(g->raw_type) * (int64_t)ggml_type_size(g->raw_type), w, kc);
		return;
	case GGML_TYPE_Q8_0: {
		const struct block_q8_0 * blk = (const struct block_q8_0 *)row + k0 / 32;
		ggml_fp16_t h[MM_KC / 32];
		float scale[MM_KC / 32];
		for (int64_t j = 0; j < kc / 32; j++) {
			h[j] = blk[j].d;
		}
		f16_to_f32(h, scale, kc / 32);
		for (int64_t k = 0; k < kc; k++) {
			w[k] = scale[k / 32] * (float)blk[k / 32].q[k % 32];
		}
	}
	}
}

// gemm_pack copies rows [m0, m0+mc) and k [k0, k0+kc) of a into panels of
// MM_MR rows, k by k; rows past mc are zeros. Eight rows at a time (f32
// rows in place, narrower ones widened first) go in by 8×8 transposes: at
// a few hundred tokens, packing row by row took as long as the product.
static void gemm_pack(float * ap, const struct gemm_operands * g, int64_t m0, int64_t mc, int64_t k0, int64_t kc) {
	float w[8][MM_KC];
	for (int64_t ir = 0; ir < mc; ir += MM_MR) {
		float * d = ap + ir * kc;
		const int64_t rows = mc - ir < MM_MR ? mc - ir : MM_MR;
		if (g->by_k) { // a panel's k-th line is a run of a's row k
			for (int64_t k = 0; k < kc; k++, d += MM_MR) {
				memcpy(d, g->a + (k0 + k) * g->lda + m0 + ir, (size_t)rows * sizeof(float));
				memset(d + rows, 0, (size_t)(MM_MR - rows) * sizeof(float));
			}
			continue;
		}
		for (int64_t i0 = 0; i0 < MM_MR; i0 += 8) {
			const int64_t n = MM_MR - i0 < 8 ? MM_MR - i0 : 8; // rows of this group (MM_MR 12: 8, then 4)
			if (i0 >= rows) {
				for (int64_t k = 0; k < kc; k++) {
					memset(d + k * MM_MR + i0, 0, (size_t)n * sizeof(float));
				}
				continue;
			}
			const float * s = NULL; // row i0+r at s + r·ls floats
			int64_t ls = MM_KC;
			if (g->raw != NULL) {
				for (int64_t r = 0; r < n && i0 + r < rows; r++) {
					widen_row(g, g->raw + (m0 + ir + i0 + r) * g->lda_raw, k0, kc, w[r]);
				}
				s = w[0];
			} else {
				s = g->a + (m0 + ir + i0) * g->lda + k0, ls = g->lda;
			}
			int64_t k = 0;
			if (n == 8 && i0 + 8 <= rows) {
				for (; k + 8 <= kc; k += 8) {
					transpose_8x8((const char *)(s + k), (size_t)ls * sizeof(float), (char *)(d + k * MM_MR + i0),
					              MM_MR * sizeof(float), NULL);
				}
			}
			for (; k < kc; k++) {
				for (int64_t r = 0; r < n; r++) {
					d[k * MM_MR + i0 + r] = i0 + r < rows ? s[r * ls + k] : 0.0f;
				}
			}
		}
	}
}

// add_tile: see cpu_internal.h.
void add_tile(float * c, int64_t ldc, const float * t, int64_t ldt, int64_t rows, int64_t cols, bool first,
              const float * bias) {
	for (int64_t j = 0; j < cols; j++) {
		for (int64_t i = 0; i < rows; i++) {
			float y = first ? t[j * ldt + i] : c[j * ldc + i] + t[j * ldt + i];
			c[j * ldc + i] = bias != NULL ? y + bias[i] : y;
		}
	}
}

// pm_gemm_block computes rows [m0, m1) and columns [n0, n1) of c = a·bᵀ over
// K, packing a into ap (gemm_m_block(kc)·kc floats, kc = gemm_k_block(K,
// q8_0 rows)) unless it is packed (then m0 is a multiple of MM_MR).
void pm_gemm_block(const struct gemm_operands * g, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float * ap) {
	const int64_t kcmax = gemm_k_block(K, g->raw != NULL ? g->raw_type : GGML_TYPE_F32), mc = gemm_m_block(kcmax);
	for (int64_t k0 = 0; k0 < K; k0 += kcmax) {
		const int64_t kc = K - k0 < kcmax ? K - k0 : kcmax;
		for (int64_t i0 = m0; i0 < m1; i0 += mc) {
			const int64_t rows = m1 - i0 < mc ? m1 - i0 : mc;
			if (!g->packed) {
				gemm_pack(ap, g, i0, rows, k0, kc);
			}
			for (int64_t j0 = n0; j0 < n1; j0 += MM_NR) {
				const int64_t cols = n1 - j0 < MM_NR ? n1 - j0 : MM_NR;
				const float * br[MM_NR];
				for (int t = 0; t < MM_NR; t++) {
					br[t] = g->b + (j0 + (t < cols ? t : cols - 1)) * g->ldb + k0;
				}
				for (int64_t ir = 0; ir < rows; ir += MM_MR) {
					const int64_t n = rows - ir < MM_MR ? rows - ir : MM_MR;
					float * c = g->c + j0 * g->ldc + i0 + ir;
					// the bias once the last block of K is summed
					const float * bias = g->bias != NULL && k0 + kc == K ? g->bias + i0 + ir : NULL;
					const float * panel = g->packed ? g->a + ((i0 + ir) / MM_MR * g->lda + k0) * MM_MR : ap + ir * kc;
					if (cols == MM_NR) {
						gemm_tile(kc, panel, br, c, g->ldc, k0 == 0, n, bias);
						continue;
					}
					float t[MM_NR * MM_MR]; // the last columns: through a whole tile
					gemm_tile(kc, panel, br, t, MM_MR, true, MM_MR, NULL);
					add_tile(c, g->ldc, t, MM_MR, n, cols, k0 == 0, bias);
				}
			}
		}
	}
}

// pm_gemm_op is the custom op of pm_mul_mat: src[2], if any, is the bias.
void pm_gemm_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	const struct ggml_tensor * a = dst->src[0], * b = dst->src[1], * bias = dst->src[2];
	const int64_t K = a->ne[0], M = a->ne[1], N = b->ne[1] * b->ne[2] * b->ne[3];
	const bool raw = a->type != GGML_TYPE_F32;
	const struct gemm_operands g = {.a = raw ? NULL : (const float *)a->data,
	                                .b = (const float *)b->data,
	                                .c = (float *)dst->data,
	                                .lda = raw ? 0 : a->nb[1] / (int64_t)sizeof(float),
	                                .ldb = b->nb[1] / (int64_t)sizeof(float),
	                                .ldc = M,
	                                .raw = raw ? (const char *)a->data : NULL,
	                                .lda_raw = a->nb[1],
	                                .raw_type = a->type,
	                                .bias = bias != NULL ? (const float *)bias->data : NULL};
	int64_t m0, m1, n0, n1;
	if (!product_split(M, N, MM_MR, MM_NR, ith, nth, &m0, &m1, &n0, &n1)) {
		return;
	}
	float * ap = gemm_pack_alloc(K, a->type);
	pm_gemm_block(&g, K, m0, m1, n0, n1, ap);
	free(ap);
}

// pm_conv1x1_op is a 1×1 convolution: dst [W, H, Cout, B] from src[0] x [W,
// H, Cin, B] (each channel's plane contiguous), src[1] w [Cin, Cout] (f32
// or f16) and src[2] bias [Cout] or none. Per image it is one product whose
// a is x read by channel (by_k: row k is channel k's plane), so neither x
// nor the result is transposed, as a matrix product in ggml's layouts
// needs. A thread widens its output channels' f16 weights to f32 first.
void pm_conv1x1_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	const struct ggml_tensor * x = dst->src[0], * w = dst->src[1], * bias = dst->src[2];
	const int64_t P = x->ne[0] * x->ne[1], cin = x->ne[2], cout = w->ne[1];
	int64_t m0, m1, n0, n1;
	if (!product_split(P, cout, MM_MR, MM_NR, ith, nth, &m0, &m1, &n0, &n1)) {
		return;
	}
	// The weights of output channels [n0, n1): w's own rows, or widened.
	const float * wf = (const float *)((const char *)w->data + n0 * w->nb[1]);
	int64_t ldw = w->nb[1] / (int64_t)sizeof(float);
	float * widened = NULL;
	if (w->type == GGML_TYPE_F16) {
		widened = kernel_alloc((size_t)(cin * (n1 - n0)) * sizeof(float), "1×1 convolution");
		for (int64_t co = n0; co < n1; co++) {
			f16_to_f32((const ggml_fp16_t *)((const char *)w->data + co * w->nb[1]), widened + (co - n0) * cin, cin);
		}
		wf = widened, ldw = cin;
	}
	float * ap = gemm_pack_alloc(cin, GGML_TYPE_F32);
	for (int64_t b = 0; b < x->ne[3]; b++) {
		float * C = (float *)dst->data + b * cout * P;
		const struct gemm_operands g = {.a = (const float *)((const char *)x->data + b * x->nb[3]),
		                                .b = wf,
		                                .c = C + n0 * P,
		                                .lda = x->nb[2] / (int64_t)sizeof(float),
		                                .ldb = ldw,
		                                .ldc = P,
		                                .by_k = true};
		pm_gemm_block(&g, cin, m0, m1, 0, n1 - n0, ap);
		for (int64_t co = n0; bias != NULL && co < n1; co++) {
			const float v = ((const float *)bias->data)[co];
			for (int64_t m = m0; m < m1; m++) {
				C[co * P + m] += v;
			}
		}
	}
	free(ap);
	free(widened);
}

bool pm_conv1x1_fits(const struct ggml_tensor * w, const struct ggml_tensor * x) {
	const size_t elem = w->type == GGML_TYPE_F16 ? 2 : 4; // f32 rows must also be whole floats apart
	return (w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16) && x->type == GGML_TYPE_F32 && w->ne[2] == 1 &&
	       w->ne[3] == 1 && w->nb[0] == elem && w->nb[1] % elem == 0 && w->ne[0] == x->ne[2] &&
	       x->nb[0] == sizeof(float) && x->nb[1] == (size_t)x->ne[0] * sizeof(float) && x->nb[2] % sizeof(float) == 0 &&
	       x->ne[0] * x->ne[1] >= 24 && x->ne[0] * x->ne[1] * x->ne[2] * w->ne[1] >= (1 << 21);
}

struct ggml_tensor * pm_conv1x1(struct ggml_context * ctx, struct ggml_tensor * w, struct ggml_tensor * x,
                                struct ggml_tensor * bias) {
	struct ggml_tensor * args[3] = {x, w, bias};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], w->ne[1], x->ne[3], args,
	                                        bias != NULL ? 3 : 2, pm_conv1x1_op, GGML_N_TASKS_MAX, NULL);
	return ggml_set_name(t, "CONV_1X1 (ours)");
}

// PM_TAKES_BF16: bf16 weights are ours unless ggml's products have
// AVX512-BF16's dot products (vdpbf16ps), 1.6× ours on the Zen 5 VM, which
// round the activations to bf16 as ggml's f16 products round them to f16.
// f16 weights are always ours: as fast as ggml's on AVX2 and AVX-512, and
// summed in f32 where ggml's sum in f16 (ARM with fp16 arithmetic).
#if defined(__AVX512BF16__)
#define PM_TAKES_BF16 0
#else
#define PM_TAKES_BF16 1
#endif

// PM_HALF_MIN_N: f16 and bf16 weights against fewer activation rows stay
// ggml's, faster there (CLIP's 77 tokens: the text encoders took 0.56–0.64
// s through ours against 0.48 s), except where ggml would sum them in f16.
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#define PM_HALF_MIN_N 0
#else
#define PM_HALF_MIN_N 128
#endif

// PM_WIDENS_ANY: in our kernels for x86 with AVX2, the rows of quantized
// types without integer products of ours (none that photomaker writes;
// iq4_nl and the like, which files of other tools may hold) are widened
// into our f32 product by ggml's decoders as they are packed. Until
// session 31 the older types and q2_K and q3_K did so too (one core of the
// Zen 3 dev VM, BenchmarkMulMat 1280 × 1280 × 1024, ggml's AVX2 products
// → widened: q5_0 29–30 → 50–63 GFLOP/s, q5_1 21–22 → 63, q4_1 28–30 →
// 49–67, q3_K 27–30 → 49–57, q2_K 38–43 → 52–64; against a plain build's
// SSE2 ones 6–20 times). ggml's scalar decoders (1.4–4 ns a value) take a
// third of the time at 128 activation rows, so the product takes such
// weights from 128 rows on in builds with AVX2 (ggml's own products have it
// too) and from a few otherwise: PM_WIDEN_MIN_N. ggml's x86 dot products
// of these types have no AVX-512 code, so builds for it widen too.
#if defined(__x86_64__) && defined(__AVX2__)
#define PM_WIDENS_ANY 1
#else
#define PM_WIDENS_ANY 0
#endif
#if PM_OWN_LEVEL >= 3
#define PM_WIDEN_MIN_N 128
#else
#define PM_WIDEN_MIN_N MM_NR
#endif

// widens says whether a's rows are whole blocks of a quantized type that
// only PM_WIDENS_ANY takes, times enough of b's rows.
static bool widens(const struct ggml_tensor * a, const struct ggml_tensor * b) {
	if (!PM_WIDENS_ANY || a->type == GGML_TYPE_F32 || a->type == GGML_TYPE_F16 || a->type == GGML_TYPE_BF16 ||
	    a->type == GGML_TYPE_Q8_0 || pm_mul_mat_int_fits(a, b) || b->ne[1] * b->ne[2] * b->ne[3] < PM_WIDEN_MIN_N) {
		return false;
	}
	const struct ggml_type_traits * tr = ggml_get_type_traits(a->type);
	return tr->is_quantized && tr->to_float != NULL && a->ne[0] % tr->blck_size == 0 && a->nb[0] == tr->type_size;
}

int pm_mul_mat_widen_min_n(void) { return PM_WIDENS_ANY ? PM_WIDEN_MIN_N : 0; }

bool pm_mul_mat_fits(const struct ggml_tensor * a, const struct ggml_tensor * b) {
	const bool q8 = a->type == GGML_TYPE_Q8_0 && a->ne[0] % 32 == 0, integer = pm_mul_mat_int_fits(a, b);
	const bool half = (a->type == GGML_TYPE_F16 || (PM_TAKES_BF16 && a->type == GGML_TYPE_BF16)) && a->nb[0] == 2;
	if ((a->type != GGML_TYPE_F32 && !q8 && !half && !integer && !widens(a, b)) || b->type != GGML_TYPE_F32 ||
	    a->ne[2] != 1 || a->ne[3] != 1 ||
	    (a->type == GGML_TYPE_F32 && (a->nb[0] != sizeof(float) || a->nb[1] % sizeof(float) != 0)) ||
	    b->nb[0] != sizeof(float) || a->ne[0] != b->ne[0] || b->nb[1] % sizeof(float) != 0) {
		return false;
	}
	// b's rows one stride apart across its outer dimensions
	if ((b->ne[2] > 1 && b->nb[2] != b->ne[1] * b->nb[1]) || (b->ne[3] > 1 && b->nb[3] != b->ne[2] * b->nb[2])) {
		return false;
	}
	const int64_t K = a->ne[0], M = a->ne[1], N = b->ne[1] * b->ne[2] * b->ne[3];
	if (half && N < PM_HALF_MIN_N) {
		return false;
	}
	// Narrow products are ggml's (matrix-vector kernels); below a few
	// million multiply-adds the op's start-up would show.
	return (integer || (M >= 24 && N >= MM_NR && K >= 8)) && K * M * N >= (1 << 21);
}

struct ggml_tensor * pm_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
                                struct ggml_tensor * bias) {
	if (pm_mul_mat_int_fits(a, b)) {
		return pm_mul_mat_int(ctx, a, b, bias);
	}
	struct ggml_tensor * args[3] = {a, b, bias};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, a->ne[1], b->ne[1], b->ne[2], b->ne[3], args,
	                                        bias != NULL ? 3 : 2, pm_gemm_op, GGML_N_TASKS_MAX, NULL);
	return ggml_set_name(t, "MUL_MAT (ours)");
}

bool pm_mul_mat_takes_bf16(void) { return PM_TAKES_BF16; }

bool pm_mul_mat_bias_fits(const struct ggml_tensor * a, const struct ggml_tensor * bias) {
	return bias->type == GGML_TYPE_F32 && bias->ne[0] == a->ne[1] && ggml_nelements(bias) == bias->ne[0] &&
	       bias->nb[0] == sizeof(float);
}
