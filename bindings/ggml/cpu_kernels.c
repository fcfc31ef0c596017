// Our own CPU kernels for ops whose ggml CPU kernel is slow, run as ggml
// custom ops (which only the CPU backend runs; see Context.SetCPUKernels).
// They use GCC/Clang vector extensions, so they get the SIMD that the C
// flags allow (AVX2 with `make`'s -march, NEON on arm64) and stay portable.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

// Vectors as wide as the target's registers: 8 floats with AVX, else 4
// (SSE2, NEON); wider ones would change the calling convention.
#if defined(__AVX__)
#define PM_LANES 8
#else
#define PM_LANES 4
#endif
typedef float vf __attribute__((vector_size(PM_LANES * 4)));
typedef int32_t vi __attribute__((vector_size(PM_LANES * 4)));

// splat fills a vector with x. (Not (vf){0} + x: 0 + x is not x for
// x = −0, so the compiler must keep the addition.)
#if PM_LANES == 8
static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x}; }
static inline vi splat_i(int32_t x) { return (vi){x, x, x, x, x, x, x, x}; }
#else
static inline vf splat(float x) { return (vf){x, x, x, x}; }
static inline vi splat_i(int32_t x) { return (vi){x, x, x, x}; }
#endif

// loadv and storev move a vector from and to memory of any alignment.
static inline vf loadv(const float * p) {
	vf v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline void storev(float * p, vf v) { memcpy(p, &v, sizeof v); }

// thread_rows is thread ith's share [*lo, *hi) of n rows (or tasks) split
// among nth threads in consecutive runs.
static inline void thread_rows(int64_t n, int ith, int nth, int64_t * lo, int64_t * hi) {
	const int64_t per = (n + nth - 1) / nth;
	*lo = per * ith < n ? per * ith : n;
	*hi = *lo + per < n ? *lo + per : n;
}

// kernel_alloc is malloc for a kernel's scratch memory, which a custom op
// cannot report as an error: it is at most about 20 MB a thread, so
// failing means the process is out of address space.
static void * kernel_alloc(size_t bytes, const char * kernel) {
	void * p = malloc(bytes);
	if (p == NULL) {
		fprintf(stderr, "photomaker: out of memory: the CPU %s kernel needs %zu bytes\n", kernel, bytes);
		abort();
	}
	return p;
}

// blend returns a where mask is set and b elsewhere.
static inline vf blend(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

// vexp is e^a for a ≤ 1: 2^k·e^r with k the nearest integer to a/ln 2 and
// |r| ≤ ln2/2, e^r by its Taylor series to r^7 (relative error below 1e-8
// before rounding). Arguments below −80 give e^−80, which keeps every
// result normal (denormals are slow on x86); the callers multiply it by
// values below one, where it stands for zero.
static inline vf vexp(vf a) {
	const vf magic = splat(12582912.0f); // 1.5·2^23: adding it rounds to an integer held in the low bits
	a = blend(a > splat(-80.0f), a, splat(-80.0f));
	vf kf = a * splat(1.44269504f) + magic;
	vi k = (vi)kf - (vi)magic;
	kf -= magic;
	vf r = a - kf * splat(0.693145752f) - kf * splat(1.42860677e-6f); // ln 2 in two parts: kf·hi is exact
	vf p = splat(1.0f / 5040);
	p = p * r + splat(1.0f / 720);
	p = p * r + splat(1.0f / 120);
	p = p * r + splat(1.0f / 24);
	p = p * r + splat(1.0f / 6);
	p = p * r + splat(0.5f);
	p = p * r + splat(1.0f);
	p = p * r + splat(1.0f);
	return (vf)((vi)p + (k << 23)); // times 2^k through the exponent bits
}

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
				ggml_cpu_fp32_to_fp16(buf, (ggml_fp16_t *)dst->data + at, m * K);
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

// Attention: softmax(q·kᵀ·scale)·v per head, for heads of D values (a
// multiple of 8, at most 1024) and at most ATTN_KEYS keys. ggml's CPU runs
// q·kᵀ as dot products of D = 64 values, whose sums across the vector lanes
// cost as much as the products (about 30 GFLOP/s on the dev VM), and 77
// text keys, not a multiple of 8, go to its plain kernel (under 20). Here
// a thread takes a block of up to ATTN_QMAX queries of one head, transposed
// so that a vector holds one value of ATTN_QV queries, and both products
// are outer products: a tile of 4 keys (q·kᵀ) or 4 dimensions (p·v) times
// ATTN_QV queries, summed in registers. Keys and values are read in the
// projections' own layout, row by row, once per block. A block's scores
// take at most ATTN_SCORES floats (1 MB; more queries a block means fewer
// passes over K and V: 4096 keys 117 → 129 GFLOP/s), and ATTN_KEYS bounds
// the buffer each thread allocates: at most 6.5 MB.
enum { ATTN_KEYS = 1 << 16, ATTN_SCORES = 1 << 18, ATTN_QV = 3 * PM_LANES, ATTN_QMAX = 9 * PM_LANES, ATTN_JB = 64 };

bool pm_attention_fits(int64_t d, int64_t keys) { return d > 0 && d <= 1024 && d % 8 == 0 && keys > 0 && keys <= ATTN_KEYS; }

// in_register keeps a loaded vector in a register: GCC would otherwise fold
// the load into each of the four multiply-adds that use it, and the tiles'
// inner loops would wait on loads rather than on arithmetic.
#if defined(__GNUC__) && defined(__x86_64__)
#define in_register(v) __asm__("" : "+x"(v))
#else
#define in_register(v) (void)0
#endif

// scores_tile writes s[j][i] = scale·Σ_d q[i][d]·k_j[d] for 4 keys j0 …
// j0+3 (rows kr, the last repeated past the keys) and ATTN_QV queries
// i0 … of the block, from qt [D][qb] (the block's queries transposed).
static inline void scores_tile(float * s, int64_t qb, const float * qt, const float * const kr[4], int64_t D,
                               int64_t i0, int64_t keys, float scale) {
	vf a00 = splat(0.0f), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
	vf a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
	for (int64_t d = 0; d < D; d++) {
		const float * qd = qt + d * qb + i0;
		vf q0 = loadv(qd), q1 = loadv(qd + PM_LANES), q2 = loadv(qd + 2 * PM_LANES);
		in_register(q0);
		in_register(q1);
		in_register(q2);
		vf x = splat(kr[0][d]);
		a00 += x * q0, a01 += x * q1, a02 += x * q2;
		x = splat(kr[1][d]);
		a10 += x * q0, a11 += x * q1, a12 += x * q2;
		x = splat(kr[2][d]);
		a20 += x * q0, a21 += x * q1, a22 += x * q2;
		x = splat(kr[3][d]);
		a30 += x * q0, a31 += x * q1, a32 += x * q2;
	}
	const vf acc[4][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}, {a30, a31, a32}};
	for (int64_t t = 0; t < keys; t++) {
		for (int v = 0; v < 3; v++) {
			storev(s + t * qb + i0 + v * PM_LANES, acc[t][v] * splat(scale));
		}
	}
}

// values_tile adds Σ_j p[j][i]·v_j[d] over keys j of one chunk (rows vr)
// to o[d][i] for 4 dimensions d0 … d0+3 and ATTN_QV queries i0 ….
static inline void values_tile(float * o, int64_t qb, const float * p, const float * const * vr, int64_t keys,
                               int64_t d0, int64_t i0) {
	float * o0 = o + d0 * qb + i0, * o1 = o0 + qb, * o2 = o1 + qb, * o3 = o2 + qb;
	const int L = PM_LANES;
	vf a00 = loadv(o0), a01 = loadv(o0 + L), a02 = loadv(o0 + 2 * L), a10 = loadv(o1), a11 = loadv(o1 + L), a12 = loadv(o1 + 2 * L);
	vf a20 = loadv(o2), a21 = loadv(o2 + L), a22 = loadv(o2 + 2 * L), a30 = loadv(o3), a31 = loadv(o3 + L), a32 = loadv(o3 + 2 * L);
	for (int64_t j = 0; j < keys; j++) {
		const float * pj = p + j * qb + i0;
		vf p0 = loadv(pj), p1 = loadv(pj + L), p2 = loadv(pj + 2 * L);
		in_register(p0);
		in_register(p1);
		in_register(p2);
		const float * v = vr[j] + d0;
		vf x = splat(v[0]);
		a00 += x * p0, a01 += x * p1, a02 += x * p2;
		x = splat(v[1]);
		a10 += x * p0, a11 += x * p1, a12 += x * p2;
		x = splat(v[2]);
		a20 += x * p0, a21 += x * p1, a22 += x * p2;
		x = splat(v[3]);
		a30 += x * p0, a31 += x * p1, a32 += x * p2;
	}
	storev(o0, a00), storev(o0 + L, a01), storev(o0 + 2 * L, a02), storev(o1, a10), storev(o1 + L, a11), storev(o1 + 2 * L, a12);
	storev(o2, a20), storev(o2 + L, a21), storev(o2 + 2 * L, a22), storev(o3, a30), storev(o3 + L, a31), storev(o3 + 2 * L, a32);
}

// attention_heads is the custom op: dst [C, Nq, B] = attention of q to k
// and v, all three viewed as [D, H, N, B] (rows contiguous, any strides
// above; k and v may have one image for all).
static void attention_heads(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct ggml_tensor * q = dst->src[0], * k = dst->src[1], * v = dst->src[2];
	float scale;
	const uint32_t bits = (uint32_t)(uintptr_t)userdata;
	memcpy(&scale, &bits, sizeof scale);
	const int64_t D = q->ne[0], H = q->ne[1], Nq = q->ne[2], B = q->ne[3], Nk = k->ne[2];
	// Queries per block: what ATTN_SCORES floats of scores hold, in whole
	// vectors, at most ATTN_QMAX.
	int64_t qb = ATTN_SCORES / Nk > ATTN_QMAX ? ATTN_QMAX : ATTN_SCORES / Nk;
	qb = qb < ATTN_QV ? ATTN_QV : qb - qb % ATTN_QV;
	const int64_t blocks = (Nq + qb - 1) / qb;
	int64_t t0, t1;
	thread_rows(B * H * blocks, ith, nth, &t0, &t1);
	if (t0 >= t1) {
		return;
	}
	// Per thread: the block's queries transposed [D][qb], its scores and
	// then probabilities [Nk][qb], and its outputs transposed [D][qb].
	const size_t floats = (size_t)(qb * (2 * D + Nk));
	float * buf = kernel_alloc(floats * sizeof(float), "attention");
	float * qt = buf, * s = qt + qb * D, * o = s + qb * Nk;
	for (int64_t task = t0; task < t1; task++) {
		const int64_t b = task / (H * blocks), h = task / blocks % H, q0 = task % blocks * qb;
		const int64_t n = Nq - q0 < qb ? Nq - q0 : qb;
		const int64_t bk = k->ne[3] == 1 ? 0 : b, bv = v->ne[3] == 1 ? 0 : b;
		const char * kh = (const char *)k->data + bk * k->nb[3] + h * k->nb[1];
		const char * vh = (const char *)v->data + bv * v->nb[3] + h * v->nb[1];
		for (int64_t i = 0; i < qb; i++) { // transpose the queries; zeros past n
			const float * qr = (const float *)((const char *)q->data + b * q->nb[3] + h * q->nb[1] + (q0 + i) * q->nb[2]);
			for (int64_t d = 0; d < D; d++) {
				qt[d * qb + i] = i < n ? qr[d] : 0.0f;
			}
		}
		for (int64_t j0 = 0; j0 < Nk; j0 += 4) {
			const int64_t keys = Nk - j0 < 4 ? Nk - j0 : 4;
			const float * kr[4];
			for (int t = 0; t < 4; t++) {
				kr[t] = (const float *)(kh + (j0 + (t < keys ? t : keys - 1)) * k->nb[2]);
			}
			for (int64_t i0 = 0; i0 < qb; i0 += ATTN_QV) {
				scores_tile(s + j0 * qb, qb, qt, kr, D, i0, keys, scale);
			}
		}
		// Softmax along the keys, ATTN_QV... queries per vector.
		vf mx[ATTN_QMAX / PM_LANES], sum[ATTN_QMAX / PM_LANES];
		const int64_t nv = qb / PM_LANES;
		for (int64_t c = 0; c < nv; c++) {
			mx[c] = splat(-INFINITY), sum[c] = splat(0.0f);
		}
		for (int64_t j = 0; j < Nk; j++) {
			for (int64_t c = 0; c < nv; c++) {
				const vf x = loadv(s + j * qb + c * PM_LANES);
				mx[c] = blend(x > mx[c], x, mx[c]);
			}
		}
		for (int64_t j = 0; j < Nk; j++) {
			for (int64_t c = 0; c < nv; c++) {
				const vf e = vexp(loadv(s + j * qb + c * PM_LANES) - mx[c]);
				storev(s + j * qb + c * PM_LANES, e);
				sum[c] += e;
			}
		}
		memset(o, 0, (size_t)(qb * D) * sizeof(float));
		const float * vr[ATTN_JB];
		for (int64_t j0 = 0; j0 < Nk; j0 += ATTN_JB) { // a chunk of values for every query and dimension
			const int64_t keys = Nk - j0 < ATTN_JB ? Nk - j0 : ATTN_JB;
			for (int64_t j = 0; j < keys; j++) {
				vr[j] = (const float *)(vh + (j0 + j) * v->nb[2]);
			}
			for (int64_t d0 = 0; d0 < D; d0 += 4) {
				for (int64_t i0 = 0; i0 < qb; i0 += ATTN_QV) {
					values_tile(o, qb, s + j0 * qb, vr, keys, d0, i0);
				}
			}
		}
		float inv[ATTN_QMAX];
		for (int64_t c = 0; c < nv; c++) {
			storev(inv + c * PM_LANES, splat(1.0f) / sum[c]);
		}
		for (int64_t i = 0; i < n; i++) {
			float * out = (float *)((char *)dst->data + b * dst->nb[2] + (q0 + i) * dst->nb[1]) + h * D;
			for (int64_t d = 0; d < D; d++) {
				out[d] = o[d * qb + i] * inv[i];
			}
		}
	}
	free(buf);
}

struct ggml_tensor * pm_attention(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
                                  struct ggml_tensor * v, float scale) {
	uint32_t bits;
	memcpy(&bits, &scale, sizeof bits);
	struct ggml_tensor * args[3] = {q, k, v};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], q->ne[3], 1, args, 3,
	                                        attention_heads, GGML_N_TASKS_MAX, (void *)(uintptr_t)bits);
	return ggml_set_name(t, "ATTENTION (ours)");
}

// Matrix products of f32 operands: dst [M, N…] = a [K, M] · b [K, N…], the
// dot products of a's rows with b's. ggml's CPU takes them to llamafile's
// tinyBLAS, which streams whole rows of K through each register tile and
// reaches 110–128 GFLOP/s on the dev VM for the VAE's convolutions (its
// f16 products reach 180). Here, as in BLAS libraries, a thread copies a
// block of a's rows (MM_PANEL floats) and MM_KC of K into panels of MM_MR
// rows stored k by k (a transpose that stays in L2); a register tile of
// MM_MR rows (three vectors along M, which is dst's contiguous dimension)
// times MM_NR rows of b sums over the block's k with one vector load per
// vector and one broadcast per b row, and adds into dst. K longer than
// MM_KC is split into even blocks; each adds its sum into dst. On the dev
// VM: 160–180 GFLOP/s (BenchmarkMulMatVAE).
enum { MM_MR = 3 * PM_LANES, MM_NR = 4, MM_KC = 384, MM_PANEL = 46080 /* floats of a's block: 180 KB */ };

// gemm_tile adds (or stores, when first) Σ_k ap[k][i]·b_j[k] for MM_MR rows
// i of the packed panel ap and MM_NR rows b_j into c[j·ldc + i], of which
// only rows i < rows are written.
static inline void gemm_tile(int64_t kc, const float * ap, const float * const br[MM_NR], float * c, int64_t ldc,
                             bool first, int64_t rows) {
	vf c00 = splat(0.0f), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
	vf c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
	const float * b0 = br[0], * b1 = br[1], * b2 = br[2], * b3 = br[3];
	for (int64_t k = 0; k < kc; k++, ap += MM_MR) {
		vf a0 = loadv(ap), a1 = loadv(ap + PM_LANES), a2 = loadv(ap + 2 * PM_LANES);
		in_register(a0);
		in_register(a1);
		in_register(a2);
		vf x = splat(b0[k]);
		c00 += x * a0, c01 += x * a1, c02 += x * a2;
		x = splat(b1[k]);
		c10 += x * a0, c11 += x * a1, c12 += x * a2;
		x = splat(b2[k]);
		c20 += x * a0, c21 += x * a1, c22 += x * a2;
		x = splat(b3[k]);
		c30 += x * a0, c31 += x * a1, c32 += x * a2;
	}
	const vf acc[MM_NR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
	for (int j = 0; j < MM_NR; j++) {
		float * cj = c + j * ldc;
		if (rows == MM_MR) {
			for (int v = 0; v < 3; v++) {
				storev(cj + v * PM_LANES, first ? acc[j][v] : acc[j][v] + loadv(cj + v * PM_LANES));
			}
			continue;
		}
		float t[MM_MR];
		memcpy(t, acc[j], sizeof t);
		for (int64_t i = 0; i < rows; i++) {
			cj[i] = first ? t[i] : cj[i] + t[i];
		}
	}
}

// gemm_operands are a product's operands as raw rows: row m of a (k
// contiguous; with by_k, row k of a holding m contiguous, as the Winograd
// transforms write it), row n of b (k contiguous) and row n of c (m
// contiguous), ld* apart in floats. Or a's rows are q8_0 blocks, a8
// (lda8 bytes apart), dequantized as they are packed: the products then
// multiply f32 activations, where ggml's CPU quantizes them to q8_0 too.
struct gemm_operands {
	const float * a, * b;
	float * c;
	int64_t lda, ldb, ldc;
	bool by_k;
	const char * a8;
	int64_t lda8;
};

// block_q8_0 is ggml's q8_0 block: 32 values q·d.
struct block_q8_0 {
	ggml_fp16_t d;
	int8_t q[32];
};
_Static_assert(sizeof(struct block_q8_0) == 34, "q8_0 blocks are 34 bytes");

// gemm_pack copies rows [m0, m0+mc) and k [k0, k0+kc) of a into panels of
// MM_MR rows, k by k; rows past mc are zeros.
static void gemm_pack(float * ap, const struct gemm_operands * g, int64_t m0, int64_t mc, int64_t k0, int64_t kc) {
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
		for (int64_t i = 0; i < MM_MR; i++) {
			if (i < rows && g->a8 != NULL) { // k0 and kc are whole blocks
				const struct block_q8_0 * blk = (const struct block_q8_0 *)(g->a8 + (m0 + ir + i) * g->lda8) + k0 / 32;
				ggml_fp16_t h[MM_KC / 32];
				float scale[MM_KC / 32];
				for (int64_t j = 0; j < kc / 32; j++) {
					h[j] = blk[j].d;
				}
				ggml_cpu_fp16_to_fp32(h, scale, kc / 32);
				for (int64_t k = 0; k < kc; k++) {
					d[k * MM_MR + i] = scale[k / 32] * (float)blk[k / 32].q[k % 32];
				}
				continue;
			}
			const float * s = g->a + (m0 + ir + i) * g->lda + k0;
			for (int64_t k = 0; k < kc; k++) {
				d[k * MM_MR + i] = i < rows ? s[k] : 0.0f;
			}
		}
	}
}

// gemm_k_block is the length of the blocks K is split into (whole q8_0
// blocks for a8), and gemm_m_block the rows of a packed at once: ap must
// hold their product.
static inline int64_t gemm_k_block(int64_t K, bool q8) {
	const int64_t blocks = (K + MM_KC - 1) / MM_KC, kc = (K + blocks - 1) / blocks;
	return q8 ? (kc + 31) / 32 * 32 : kc;
}

static inline int64_t gemm_m_block(int64_t kc) { return (MM_PANEL / kc / MM_MR > 0 ? MM_PANEL / kc / MM_MR : 1) * MM_MR; }

// gemm_block computes rows [m0, m1) and columns [n0, n1) of c = a·bᵀ over
// K, packing a into ap (gemm_m_block(kc)·kc floats, kc = gemm_k_block(K,
// a8 != NULL)).
static void gemm_block(const struct gemm_operands * g, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float * ap) {
	const int64_t kcmax = gemm_k_block(K, g->a8 != NULL), mc = gemm_m_block(kcmax);
	for (int64_t k0 = 0; k0 < K; k0 += kcmax) {
		const int64_t kc = K - k0 < kcmax ? K - k0 : kcmax;
		for (int64_t i0 = m0; i0 < m1; i0 += mc) {
			const int64_t rows = m1 - i0 < mc ? m1 - i0 : mc;
			gemm_pack(ap, g, i0, rows, k0, kc);
			for (int64_t j0 = n0; j0 < n1; j0 += MM_NR) {
				const int64_t cols = n1 - j0 < MM_NR ? n1 - j0 : MM_NR;
				const float * br[MM_NR];
				for (int t = 0; t < MM_NR; t++) {
					br[t] = g->b + (j0 + (t < cols ? t : cols - 1)) * g->ldb + k0;
				}
				for (int64_t ir = 0; ir < rows; ir += MM_MR) {
					const int64_t n = rows - ir < MM_MR ? rows - ir : MM_MR;
					float * c = g->c + j0 * g->ldc + i0 + ir;
					if (cols == MM_NR) {
						gemm_tile(kc, ap + ir * kc, br, c, g->ldc, k0 == 0, n);
						continue;
					}
					float t[MM_NR * MM_MR]; // the last columns: through a whole tile
					gemm_tile(kc, ap + ir * kc, br, t, MM_MR, true, MM_MR);
					for (int64_t j = 0; j < cols; j++) {
						for (int64_t i = 0; i < n; i++) {
							c[j * g->ldc + i] = k0 == 0 ? t[j * MM_MR + i] : c[j * g->ldc + i] + t[j * MM_MR + i];
						}
					}
				}
			}
		}
	}
}

// gemm_split is thread ith's share of an M×N product: whole tiles of M
// when there are enough of them, else of N. False when it has none.
static bool gemm_split(int64_t M, int64_t N, int ith, int nth, int64_t * m0, int64_t * m1, int64_t * n0, int64_t * n1) {
	const int64_t tiles = (M + MM_MR - 1) / MM_MR;
	*m0 = 0, *m1 = M, *n0 = 0, *n1 = N;
	if (tiles >= 2 * nth) {
		thread_rows(tiles, ith, nth, m0, m1);
		*m0 *= MM_MR, *m1 = *m1 * MM_MR < M ? *m1 * MM_MR : M;
	} else {
		thread_rows((N + MM_NR - 1) / MM_NR, ith, nth, n0, n1);
		*n0 *= MM_NR, *n1 = *n1 * MM_NR < N ? *n1 * MM_NR : N;
	}
	return *m0 < *m1 && *n0 < *n1;
}

// gemm_pack_alloc allocates the packing buffer of a product over K.
static float * gemm_pack_alloc(int64_t K, bool q8) {
	const int64_t kc = gemm_k_block(K, q8);
	return kernel_alloc((size_t)(gemm_m_block(kc) * kc) * sizeof(float), "matrix product");
}

// gemm_rows is the custom op of pm_mul_mat.
static void gemm_rows(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	const struct ggml_tensor * a = dst->src[0], * b = dst->src[1];
	const int64_t K = a->ne[0], M = a->ne[1], N = b->ne[1] * b->ne[2] * b->ne[3];
	const bool q8 = a->type == GGML_TYPE_Q8_0;
	const struct gemm_operands g = {q8 ? NULL : (const float *)a->data, (const float *)b->data, (float *)dst->data,
	                                a->nb[1] / (int64_t)sizeof(float), b->nb[1] / (int64_t)sizeof(float), M, false,
	                                q8 ? (const char *)a->data : NULL, a->nb[1]};
	int64_t m0, m1, n0, n1;
	if (!gemm_split(M, N, ith, nth, &m0, &m1, &n0, &n1)) {
		return;
	}
	float * ap = gemm_pack_alloc(K, q8);
	gemm_block(&g, K, m0, m1, n0, n1, ap);
	free(ap);
}

// conv1x1_op is a 1×1 convolution: dst [W, H, Cout, B] from src[0] x [W,
// H, Cin, B] (each channel's plane contiguous), src[1] w [Cin, Cout] and
// src[2] bias [Cout] or none. Per image it is one product whose a is x
// read by channel (by_k: row k is channel k's plane), so neither x nor the
// result is transposed, as a matrix product in ggml's layouts needs.
static void conv1x1_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	const struct ggml_tensor * x = dst->src[0], * w = dst->src[1], * bias = dst->src[2];
	const int64_t P = x->ne[0] * x->ne[1], cin = x->ne[2], cout = w->ne[1];
	int64_t m0, m1, n0, n1;
	if (!gemm_split(P, cout, ith, nth, &m0, &m1, &n0, &n1)) {
		return;
	}
	float * ap = gemm_pack_alloc(cin, false);
	for (int64_t b = 0; b < x->ne[3]; b++) {
		float * C = (float *)dst->data + b * cout * P;
		const struct gemm_operands g = {(const float *)((const char *)x->data + b * x->nb[3]), (const float *)w->data, C,
		                                x->nb[2] / (int64_t)sizeof(float), w->nb[1] / (int64_t)sizeof(float), P, true, NULL, 0};
		gemm_block(&g, cin, m0, m1, n0, n1, ap);
		for (int64_t co = n0; bias != NULL && co < n1; co++) {
			const float v = ((const float *)bias->data)[co];
			for (int64_t m = m0; m < m1; m++) {
				C[co * P + m] += v;
			}
		}
	}
	free(ap);
}

bool pm_conv1x1_fits(const struct ggml_tensor * w, const struct ggml_tensor * x) {
	return w->type == GGML_TYPE_F32 && x->type == GGML_TYPE_F32 && w->ne[2] == 1 && w->ne[3] == 1 &&
	       w->nb[0] == sizeof(float) && w->nb[1] % sizeof(float) == 0 && w->ne[0] == x->ne[2] &&
	       x->nb[0] == sizeof(float) && x->nb[1] == x->ne[0] * (int64_t)sizeof(float) && x->nb[2] % sizeof(float) == 0 &&
	       x->ne[0] * x->ne[1] >= MM_MR && x->ne[0] * x->ne[1] * x->ne[2] * w->ne[1] >= (1 << 21);
}

struct ggml_tensor * pm_conv1x1(struct ggml_context * ctx, struct ggml_tensor * w, struct ggml_tensor * x,
                                struct ggml_tensor * bias) {
	struct ggml_tensor * args[3] = {x, w, bias};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], w->ne[1], x->ne[3], args,
	                                        bias != NULL ? 3 : 2, conv1x1_op, GGML_N_TASKS_MAX, NULL);
	return ggml_set_name(t, "CONV_1X1 (ours)");
}

bool pm_mul_mat_fits(const struct ggml_tensor * a, const struct ggml_tensor * b) {
	const bool q8 = a->type == GGML_TYPE_Q8_0 && a->ne[0] % 32 == 0;
	if ((a->type != GGML_TYPE_F32 && !q8) || b->type != GGML_TYPE_F32 || a->ne[2] != 1 || a->ne[3] != 1 ||
	    (!q8 && (a->nb[0] != sizeof(float) || a->nb[1] % sizeof(float) != 0)) || b->nb[0] != sizeof(float) ||
	    a->ne[0] != b->ne[0] || b->nb[1] % sizeof(float) != 0) {
		return false;
	}
	// b's rows one stride apart across its outer dimensions
	if ((b->ne[2] > 1 && b->nb[2] != b->ne[1] * b->nb[1]) || (b->ne[3] > 1 && b->nb[3] != b->ne[2] * b->nb[2])) {
		return false;
	}
	const int64_t K = a->ne[0], M = a->ne[1], N = b->ne[1] * b->ne[2] * b->ne[3];
	// Narrow products are ggml's (matrix-vector kernels); below a few
	// million multiply-adds the op's start-up would show.
	return M >= MM_MR && N >= MM_NR && K >= 8 && K * M * N >= (1 << 21);
}

struct ggml_tensor * pm_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b) {
	struct ggml_tensor * args[2] = {a, b};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, a->ne[1], b->ne[1], b->ne[2], b->ne[3], args, 2, gemm_rows,
	                                        GGML_N_TASKS_MAX, NULL);
	return ggml_set_name(t, "MUL_MAT (ours)");
}

// Winograd F(2×2, 3×3) (Lavin and Gray, 2016) for "same" 3×3
// convolutions of stride 1: each 2×2 block of outputs (a tile) is
// Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A, d the tile's 4×4 input patch and g the 3×3
// kernel, so the products over channels are 16 matrix products of
// (tiles × Cin) by (Cin × Cout): 16 multiply-adds per tile and channel
// pair against 36 by im2col. The transforms only add, subtract and halve.
// Two ops:
//   wino_kernel_op  g by row [3, Cin, Cout, 3] → U [Cin, Cout, 16] = G·g·Gᵀ
//   wino_conv_op    x [W, H, Cin, B], U (+ bias) → y [W, H, Cout, B]
//                   (or, upsampling, y [2W, 2H, Cout, B] of x's nearest 2×
//                   upsample, which is never made)
// The second takes bands of rows of tiles, each thread its own: it
// transforms a band's input (V = Bᵀ·d·B, [tiles, Cin] for each of the 16
// ξ = 4·row + column), multiplies (M_ξ = V_ξ·U_ξ) and transforms back
// (Aᵀ·M·A) into y, in scratch memory of its own (at most WINO_SCRATCH
// floats): no columns or partial products in the graph, and no bands
// there. V and M keep tiles contiguous, so the transforms work on vectors
// of PM_LANES tiles and the product packs V by plain copies. On the dev VM,
// a 512² UNet step's 3×3 convolutions took 2.5 s instead of 4.8 s of
// ggml's f16 products over by-row columns, and the VAE decode 9.8 s
// instead of 18.2 s with our f32 products over them.

// SHUFFLE picks lanes of two vectors: clang's builtin, or GCC's, which
// has it only from GCC 12 on (GCC 11 is still common) and has had
// __builtin_shuffle, with the lanes as a vector, since 4.7.
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif
#if PM_LANES == 8
#define EVEN(a, b) SHUFFLE(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD(a, b) SHUFFLE(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#define ZIP_LO(a, b) SHUFFLE(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define ZIP_HI(a, b) SHUFFLE(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define EVEN(a, b) SHUFFLE(a, b, 0, 2, 4, 6)
#define ODD(a, b) SHUFFLE(a, b, 1, 3, 5, 7)
#define ZIP_LO(a, b) SHUFFLE(a, b, 0, 4, 1, 5)
#define ZIP_HI(a, b) SHUFFLE(a, b, 2, 6, 3, 7)
#endif

// WINO_TILES is the tiles a band aims at (a few of the product's register
// tiles), WINO_SCRATCH the most floats of V and M a band takes (16 MB:
// large bands read U fewer times, which matters for 1280 channels).
enum { WINO_TILES = 8 * MM_MR, WINO_SCRATCH = 1 << 22 };

// wino_kernel_op writes U [Cin, Cout, 16] from a kernel by row [3, Cin,
// Cout, 3] (f32 or f16). Threads split the output channels; each channel's
// kernel is first laid out as nine planes of Cin taps, so that vectors of
// PM_LANES input channels are transformed at once.
static void wino_kernel_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	const struct ggml_tensor * w = dst->src[0];
	const int64_t cin = w->ne[1], cout = w->ne[2];
	const int64_t cpad = (cin + PM_LANES - 1) / PM_LANES * PM_LANES;
	int64_t o0, o1;
	thread_rows(cout, ith, nth, &o0, &o1);
	if (o0 >= o1) {
		return;
	}
	// One output channel's kernel: as stored ([3, Cin] per kernel row),
	// then as planes [ky·3 + kx][Cin] (zeros past Cin).
	const size_t floats = (size_t)(9 * cin + 9 * cpad);
	float * g = kernel_alloc(floats * sizeof(float), "Winograd kernel transform");
	memset(g, 0, floats * sizeof(float));
	float * planes = g + 9 * cin, * U = (float *)dst->data;
	for (int64_t co = o0; co < o1; co++) {
		for (int ky = 0; ky < 3; ky++) {
			const char * row = (const char *)w->data + co * w->nb[2] + ky * w->nb[3]; // [3, Cin] contiguous
			if (w->type == GGML_TYPE_F16) {
				ggml_cpu_fp16_to_fp32((const ggml_fp16_t *)row, g + ky * 3 * cin, 3 * cin);
			} else {
				memcpy(g + ky * 3 * cin, row, (size_t)(3 * cin) * sizeof(float));
			}
			for (int64_t ci = 0; ci < cin; ci++) {
				for (int kx = 0; kx < 3; kx++) {
					planes[(ky * 3 + kx) * cpad + ci] = g[ky * 3 * cin + 3 * ci + kx];
				}
			}
		}
		for (int64_t c0 = 0; c0 < cin; c0 += PM_LANES) {
			vf t[4][3], u[16];
			for (int kx = 0; kx < 3; kx++) { // G·g down each kernel column
				const vf g0 = loadv(planes + kx * cpad + c0), g1 = loadv(planes + (3 + kx) * cpad + c0);
				const vf g2 = loadv(planes + (6 + kx) * cpad + c0);
				t[0][kx] = g0, t[1][kx] = splat(0.5f) * (g0 + g1 + g2), t[2][kx] = splat(0.5f) * (g0 - g1 + g2), t[3][kx] = g2;
			}
			for (int r = 0; r < 4; r++) { // then ·Gᵀ along each row
				u[4 * r + 0] = t[r][0], u[4 * r + 1] = splat(0.5f) * (t[r][0] + t[r][1] + t[r][2]);
				u[4 * r + 2] = splat(0.5f) * (t[r][0] - t[r][1] + t[r][2]), u[4 * r + 3] = t[r][2];
			}
			const int64_t n = cin - c0 < PM_LANES ? cin - c0 : PM_LANES;
			for (int x = 0; x < 16; x++) {
				float * o = U + (x * cout + co) * cin + c0;
				if (n == PM_LANES) {
					storev(o, u[x]);
				} else {
					memcpy(o, &u[x], (size_t)n * sizeof(float));
				}
			}
		}
	}
	free(g);
}

// wino_input_band writes V [16][Cin][nt] (nt = tiles of the band, ldv
// apart) for tile rows [r0, r0+rows) (counted across images) of a W×H
// image: x [W/up, H/up, Cin, B] upsampled up times (1 or 2, nearest). For
// each channel and tile row, the four input rows are copied (each value up
// times), zero-padded, into buf (4 rows of len floats; columns outside the
// image stay zero), from which vectors of PM_LANES tiles' columns are read
// (even and odd lanes of two loads).
static void wino_input_band(float * V, int64_t ldv, const struct ggml_tensor * x, int64_t W, int64_t H, int up,
                            int64_t r0, int64_t rows, float * buf, int64_t len) {
	const int64_t cin = x->ne[2], tw = (W + 1) / 2, th = (H + 1) / 2;
	for (int64_t c = 0; c < cin; c++) {
		for (int64_t r = 0; r < rows; r++) {
			const int64_t ty = (r0 + r) % th, b = (r0 + r) / th;
			for (int i = 0; i < 4; i++) {
				const int64_t y = 2 * ty - 1 + i;
				float * row = buf + i * len + 1; // buffer column q is image column q-1
				if (y < 0 || y >= H) {
					memset(row, 0, (size_t)W * sizeof(float));
					continue;
				}
				const float * in = (const float *)((const char *)x->data + b * x->nb[3] + c * x->nb[2] + y / up * x->nb[1]);
				if (up == 1) {
					memcpy(row, in, (size_t)W * sizeof(float));
					continue;
				}
				for (int64_t q = 0; q < W / 2; q++) {
					row[2 * q] = row[2 * q + 1] = in[q];
				}
			}
			float * out = V + c * ldv + r * tw; // + ξ·Cin·ldv, + the tile
			for (int64_t tx0 = 0; tx0 < tw; tx0 += PM_LANES) {
				vf d[4][4];
				for (int i = 0; i < 4; i++) {
					const float * p = buf + i * len + 2 * tx0;
					const vf v0 = loadv(p), v1 = loadv(p + PM_LANES), w0 = loadv(p + 2), w1 = loadv(p + 2 + PM_LANES);
					d[i][0] = EVEN(v0, v1), d[i][1] = ODD(v0, v1), d[i][2] = EVEN(w0, w1), d[i][3] = ODD(w0, w1);
				}
				vf t[4][4], v[16];
				for (int j = 0; j < 4; j++) { // Bᵀ·d down each column
					t[0][j] = d[0][j] - d[2][j], t[1][j] = d[1][j] + d[2][j];
					t[2][j] = d[2][j] - d[1][j], t[3][j] = d[1][j] - d[3][j];
				}
				for (int q = 0; q < 4; q++) { // then ·B along each row
					v[4 * q + 0] = t[q][0] - t[q][2], v[4 * q + 1] = t[q][1] + t[q][2];
					v[4 * q + 2] = t[q][2] - t[q][1], v[4 * q + 3] = t[q][1] - t[q][3];
				}
				const int64_t n = tw - tx0 < PM_LANES ? tw - tx0 : PM_LANES;
				for (int xi = 0; xi < 16; xi++) {
					float * o = out + xi * cin * ldv + tx0;
					if (n == PM_LANES) {
						storev(o, v[xi]);
					} else {
						memcpy(o, &v[xi], (size_t)n * sizeof(float));
					}
				}
			}
		}
	}
}

// wino_output_band writes output channels [c0, c1) of tile rows [r0,
// r0+rows) of y [W, H, Cout, B] (contiguous) from M [16][Cout][nt] (ldm
// apart), adding bias (Cout floats) when not NULL.
static void wino_output_band(struct ggml_tensor * y, const float * M, int64_t ldm, const float * bias, int64_t c0,
                             int64_t c1, int64_t r0, int64_t rows) {
	const int64_t W = y->ne[0], H = y->ne[1], cout = y->ne[2], tw = (W + 1) / 2, th = (H + 1) / 2;
	for (int64_t co = c0; co < c1; co++) {
		const vf bv = splat(bias != NULL ? bias[co] : 0.0f);
		for (int64_t r = 0; r < rows; r++) {
			const int64_t ty = (r0 + r) % th, b = (r0 + r) / th;
			const float * in = M + co * ldm + r * tw; // + ξ·Cout·ldm, + the tile
			float * out[2];
			for (int q = 0; q < 2; q++) {
				out[q] = 2 * ty + q < H ? (float *)y->data + ((b * cout + co) * H + 2 * ty + q) * W : NULL;
			}
			for (int64_t tx0 = 0; tx0 < tw; tx0 += PM_LANES) {
				const int64_t n = tw - tx0 < PM_LANES ? tw - tx0 : PM_LANES;
				vf m[16];
				for (int xi = 0; xi < 16; xi++) {
					const float * p = in + xi * cout * ldm + tx0;
					if (n == PM_LANES) {
						m[xi] = loadv(p);
					} else {
						m[xi] = splat(0.0f);
						memcpy(&m[xi], p, (size_t)n * sizeof(float));
					}
				}
				vf s[2][4];
				for (int j = 0; j < 4; j++) { // Aᵀ·M down each column
					s[0][j] = m[j] + m[4 + j] + m[8 + j];
					s[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
				}
				for (int q = 0; q < 2; q++) { // then ·A along each row, the two columns interleaved
					if (out[q] == NULL) {
						continue;
					}
					const vf y0 = s[q][0] + s[q][1] + s[q][2] + bv, y1 = s[q][1] - s[q][2] - s[q][3] + bv;
					const vf pair[2] = {ZIP_LO(y0, y1), ZIP_HI(y0, y1)};
					const int64_t cols = W - 2 * tx0 < 2 * PM_LANES ? W - 2 * tx0 : 2 * PM_LANES;
					if (cols == 2 * PM_LANES) {
						storev(out[q] + 2 * tx0, pair[0]);
						storev(out[q] + 2 * tx0 + PM_LANES, pair[1]);
					} else {
						memcpy(out[q] + 2 * tx0, pair, (size_t)cols * sizeof(float));
					}
				}
			}
		}
	}
}

// wino_band_rows is the tile rows of a band: about WINO_TILES tiles, V and
// M within WINO_SCRATCH floats.
static int64_t wino_band_rows(int64_t tw, int64_t cin, int64_t cout) {
	int64_t tiles = WINO_SCRATCH / (16 * (cin + cout));
	tiles = tiles < WINO_TILES ? tiles : WINO_TILES;
	return tiles / tw > 0 ? tiles / tw : 1;
}

// wino_split is thread ith's share of a convolution: rows of tiles [*r0,
// *r1) and output channels [*c0, *c1). Threads split the rows while each
// gets WINO_TILES tiles or more; with fewer (small images, many threads)
// they also split the output channels, so that the product's tiles stay
// full and each thread reads only its part of U (for 1280 channels,
// 105 MB). False when the thread has nothing to do.
static bool wino_split(int64_t rows, int64_t tw, int64_t cout, int ith, int nth, int64_t * r0, int64_t * r1,
                       int64_t * c0, int64_t * c1) {
	int q = 1; // groups of output channels: a divisor of nth, each of 32 channels or more
	for (int d = 2; d <= nth && rows * tw * q < (int64_t)nth * WINO_TILES && cout >= d * 8 * MM_NR; d++) {
		if (nth % d == 0) {
			q = d;
		}
	}
	const int groups = nth / q; // of rows
	thread_rows(rows, ith / q, groups, r0, r1);
	thread_rows((cout + MM_NR - 1) / MM_NR, ith % q, q, c0, c1);
	*c0 *= MM_NR, *c1 = *c1 * MM_NR < cout ? *c1 * MM_NR : cout;
	return *r0 < *r1 && *c0 < *c1;
}

// wino_conv_op is the convolution: src[0] x [W, H, Cin, B] (upsampled by
// the userdata's factor, 1 or 2), src[1] U [Cin, Cout, 16], src[2] bias
// [Cout] or none. Threads split the rows of tiles, and for few tiles the
// output channels (wino_split).
static void wino_conv_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const int up = (int)(uintptr_t)userdata;
	const struct ggml_tensor * x = dst->src[0], * u = dst->src[1], * bias = dst->src[2];
	const int64_t W = dst->ne[0], H = dst->ne[1], cin = x->ne[2], cout = u->ne[1];
	const int64_t tw = (W + 1) / 2, th = (H + 1) / 2;
	int64_t r0, r1, c0, c1;
	if (!wino_split(x->ne[3] * th, tw, cout, ith, nth, &r0, &r1, &c0, &c1)) {
		return;
	}
	const int64_t band = wino_band_rows(tw, cin, cout), ld = band * tw; // V and M rows: a band's tiles
	const int64_t len = 2 * ((tw + PM_LANES - 1) / PM_LANES) * PM_LANES + 2 + PM_LANES; // input rows, padded
	const int64_t kc = gemm_k_block(cin, false), pack = gemm_m_block(kc) * kc;
	const size_t floats = (size_t)(16 * ld * (cin + cout) + 4 * len + pack);
	float * V = kernel_alloc(floats * sizeof(float), "Winograd convolution");
	float * M = V + 16 * ld * cin, * buf = M + 16 * ld * cout, * ap = buf + 4 * len;
	memset(buf, 0, (size_t)(4 * len) * sizeof(float));
	for (int64_t b0 = r0; b0 < r1; b0 += band) {
		const int64_t rows = r1 - b0 < band ? r1 - b0 : band, tiles = rows * tw;
		wino_input_band(V, ld, x, W, H, up, b0, rows, buf, len);
		for (int xi = 0; xi < 16; xi++) {
			const struct gemm_operands g = {V + xi * cin * ld, (const float *)u->data + xi * cout * cin, M + xi * cout * ld,
			                                ld, cin, ld, true, NULL, 0};
			gemm_block(&g, cin, 0, tiles, c0, c1, ap);
		}
		wino_output_band(dst, M, ld, bias != NULL ? (const float *)bias->data : NULL, c0, c1, b0, rows);
	}
	free(V);
}

bool pm_conv3x3_fits(const struct ggml_tensor * kernel, const struct ggml_tensor * x) {
	return (kernel->type == GGML_TYPE_F32 || kernel->type == GGML_TYPE_F16) && x->type == GGML_TYPE_F32 &&
	       kernel->ne[0] == 3 && kernel->ne[3] == 3 && kernel->ne[1] == x->ne[2] && ggml_is_contiguous(kernel) &&
	       x->nb[0] == sizeof(float);
}

struct ggml_tensor * pm_conv3x3(struct ggml_context * ctx, struct ggml_tensor * kernel, struct ggml_tensor * x,
                                struct ggml_tensor * bias, int up) {
	struct ggml_tensor * args[3] = {kernel, NULL, NULL};
	struct ggml_tensor * u = ggml_custom_4d(ctx, GGML_TYPE_F32, kernel->ne[1], kernel->ne[2], 16, 1, args, 1, wino_kernel_op,
	                                        GGML_N_TASKS_MAX, NULL);
	ggml_set_name(u, "WINOGRAD_KERNEL (ours)");
	args[0] = x, args[1] = u, args[2] = bias;
	struct ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, up * x->ne[0], up * x->ne[1], kernel->ne[2], x->ne[3], args,
	                                        bias != NULL ? 3 : 2, wino_conv_op, GGML_N_TASKS_MAX, (void *)(uintptr_t)up);
	return ggml_set_name(y, "CONV_3X3 (ours)");
}

// The parameters ggml keeps in a GGML_OP_CUSTOM node's op_params.
struct custom_params {
	ggml_custom_op_t fun;
	int n_tasks;
	void * userdata;
};

int64_t pm_kernel_flops(const struct ggml_tensor * t) {
	struct custom_params p;
	memcpy(&p, t->op_params, sizeof p);
	if (p.fun == gemm_rows) { // a multiply-add per value of a and row of b
		return 2 * ggml_nelements(t->src[0]) * t->src[1]->ne[1] * t->src[1]->ne[2] * t->src[1]->ne[3];
	}
	if (p.fun == conv1x1_op) { // a multiply-add per value of x and output channel
		return 2 * ggml_nelements(t->src[0]) * t->src[1]->ne[1];
	}
	if (p.fun == wino_conv_op) { // 16 multiply-adds per output tile, input and output channel
		const struct ggml_tensor * x = t->src[0];
		return 2 * 16 * ((t->ne[0] + 1) / 2) * ((t->ne[1] + 1) / 2) * x->ne[3] * x->ne[2] * t->src[1]->ne[1];
	}
	if (p.fun != attention_heads) {
		return 0;
	}
	// q·kᵀ and p·v: 2 multiply-adds per query value and key.
	const struct ggml_tensor * q = t->src[0], * k = t->src[1];
	return 4 * q->ne[0] * q->ne[1] * q->ne[2] * q->ne[3] * k->ne[2];
}
