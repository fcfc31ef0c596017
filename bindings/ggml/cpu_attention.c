// Our CPU attention kernel (see cpu_kernels.c).
#include <math.h>

#include "cpu_internal.h"

// Attention: softmax(q·kᵀ·scale)·v per head, for heads of D values (a
// multiple of 8, at most 1024). ggml's CPU runs q·kᵀ as dot products of
// D = 64 values, whose sums across the vector lanes cost as much as the
// products (about 30 GFLOP/s on the dev VM), and 77 text keys, not a
// multiple of 8, go to its plain kernel (under 20). Here a thread takes a
// block of up to ATTN_QMAX queries of one head, transposed so that a
// vector holds one value of ATTN_QV queries, and both products are outer
// products: a tile of ATTN_NR keys (q·kᵀ) or dimensions (p·v) times
// ATTN_QV queries, summed in registers. Keys and values are read in the
// projections' own layout, row by row, once per block, in chunks of
// ATTN_KC keys with an online softmax (the outputs rescaled when the
// running maximum grows), so a thread's scratch memory is at most 0.7 MB
// whatever the key count.
enum { ATTN_KC = 256, ATTN_QV = 3 * PM_LANES, ATTN_QMAX = 9 * PM_LANES, ATTN_JB = 64 };

bool pm_attention_fits(int64_t d, int64_t keys) { return d > 0 && d <= 1024 && d % 8 == 0 && keys > 0; }

// ATTN_NR is a register tile's keys (q·kᵀ) or dimensions (p·v): the f32
// product's tile (outer_tile), 8 with AVX-512's 32 registers, else 4 (D is
// a multiple of 8).
enum { ATTN_NR = MM_NR };

// scores_tile writes s[j][i] = scale·Σ_d q[i][d]·k_j[d] for ATTN_NR keys j0
// … (rows kr, the last repeated past the keys; keys of them are written)
// and ATTN_QV queries i0 … of the block, from qt [D][qb] (the block's
// queries transposed).
static inline void scores_tile(float * s, int64_t qb, const float * qt, const float * const kr[ATTN_NR], int64_t D,
                               int64_t i0, int64_t keys, float scale) {
	vf acc[ATTN_NR][3];
	for (int t = 0; t < ATTN_NR; t++) {
		acc[t][0] = acc[t][1] = acc[t][2] = splat(0.0f);
	}
	outer_tile(acc, qt + i0, qb, kr, D);
	for (int64_t t = 0; t < keys; t++) {
		for (int v = 0; v < 3; v++) {
			storev(s + t * qb + i0 + v * PM_LANES, acc[t][v] * splat(scale));
		}
	}
}

// values_tile adds Σ_j p[j][i]·v_j[d] over keys j of one chunk (rows vr)
// to o[d][i] for ATTN_NR dimensions d0 … and ATTN_QV queries i0 ….
static inline void values_tile(float * o, int64_t qb, const float * p, const float * const * vr, int64_t keys,
                               int64_t d0, int64_t i0) {
	vf acc[ATTN_NR][3];
	for (int t = 0; t < ATTN_NR; t++) {
		for (int v = 0; v < 3; v++) {
			acc[t][v] = loadv(o + (d0 + t) * qb + i0 + v * PM_LANES);
		}
	}
	for (int64_t j = 0; j < keys; j++) {
		const float * pj = p + j * qb + i0;
		vf p0 = loadv(pj), p1 = loadv(pj + PM_LANES), p2 = loadv(pj + 2 * PM_LANES);
		in_register(p0);
		in_register(p1);
		in_register(p2);
		const float * v = vr[j] + d0;
#pragma GCC unroll 8
		for (int t = 0; t < ATTN_NR; t++) {
			const vf x = splat(v[t]);
			acc[t][0] += x * p0, acc[t][1] += x * p1, acc[t][2] += x * p2;
		}
	}
	for (int t = 0; t < ATTN_NR; t++) {
		for (int v = 0; v < 3; v++) {
			storev(o + (d0 + t) * qb + i0 + v * PM_LANES, acc[t][v]);
		}
	}
}

// pm_attention_op is the custom op: dst [C, Nq, B] = attention of q to k
// and v, all three viewed as [D, H, N, B] (rows contiguous, any strides
// above; k and v may have one image for all).
void pm_attention_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct ggml_tensor * q = dst->src[0], * k = dst->src[1], * v = dst->src[2];
	float scale;
	const uint32_t bits = (uint32_t)(uintptr_t)userdata;
	memcpy(&scale, &bits, sizeof scale);
	const int64_t D = q->ne[0], H = q->ne[1], Nq = q->ne[2], B = q->ne[3], Nk = k->ne[2];
	// Queries per block: ATTN_QMAX, or all of them in whole tiles.
	const int64_t qb = Nq < ATTN_QMAX ? (Nq + ATTN_QV - 1) / ATTN_QV * ATTN_QV : ATTN_QMAX;
	const int64_t blocks = (Nq + qb - 1) / qb;
	int64_t t0, t1;
	thread_rows(B * H * blocks, ith, nth, &t0, &t1);
	if (t0 >= t1) {
		return;
	}
	// Per thread: the block's queries transposed [D][qb], a chunk's scores
	// and then probabilities [ATTN_KC][qb], and its outputs transposed
	// [D][qb].
	const size_t floats = (size_t)(qb * (2 * D + ATTN_KC));
	float * buf = kernel_alloc(floats * sizeof(float), "attention");
	float * qt = buf, * s = qt + qb * D, * o = s + qb * ATTN_KC;
	const int64_t nv = qb / PM_LANES;
	for (int64_t task = t0; task < t1; task++) {
		const int64_t b = task / (H * blocks), h = task / blocks % H, q0 = task % blocks * qb;
		const int64_t n = Nq - q0 < qb ? Nq - q0 : qb;
		const int64_t bk = k->ne[3] == 1 ? 0 : b, bv = v->ne[3] == 1 ? 0 : b;
		const char * kh = (const char *)k->data + bk * k->nb[3] + h * k->nb[1];
		const char * vh = (const char *)v->data + bv * v->nb[3] + h * v->nb[1];
		const char * qh = (const char *)q->data + b * q->nb[3] + h * q->nb[1] + q0 * q->nb[2];
		for (int64_t i0 = 0; i0 < qb; i0 += 8) { // transpose the queries; zeros past n
			if (i0 + 8 <= n) {
				for (int64_t d0 = 0; d0 < D; d0 += 8) {
					transpose_8x8(qh + i0 * q->nb[2] + d0 * sizeof(float), q->nb[2], (char *)(qt + d0 * qb + i0),
					              qb * sizeof(float), NULL);
				}
				continue;
			}
			for (int64_t i = i0; i < i0 + 8 && i < qb; i++) { // (without AVX qb may end mid-block)
				const float * qr = (const float *)(qh + i * q->nb[2]);
				for (int64_t d = 0; d < D; d++) {
					qt[d * qb + i] = i < n ? qr[d] : 0.0f;
				}
			}
		}
		// Online softmax over chunks of keys: the running maximum mx and
		// sum of exponentials sum, ATTN_QV... queries per vector; the
		// outputs so far are rescaled when the maximum grows.
		vf mx[ATTN_QMAX / PM_LANES], sum[ATTN_QMAX / PM_LANES];
		for (int64_t c = 0; c < nv; c++) {
			mx[c] = splat(-INFINITY), sum[c] = splat(0.0f);
		}
		memset(o, 0, (size_t)(qb * D) * sizeof(float));
		for (int64_t c0 = 0; c0 < Nk; c0 += ATTN_KC) {
			const int64_t kn = Nk - c0 < ATTN_KC ? Nk - c0 : ATTN_KC;
			for (int64_t j0 = 0; j0 < kn; j0 += ATTN_NR) {
				const int64_t keys = kn - j0 < ATTN_NR ? kn - j0 : ATTN_NR;
				const float * kr[ATTN_NR];
				for (int t = 0; t < ATTN_NR; t++) {
					kr[t] = (const float *)(kh + (c0 + j0 + (t < keys ? t : keys - 1)) * k->nb[2]);
				}
				for (int64_t i0 = 0; i0 < qb; i0 += ATTN_QV) {
					scores_tile(s + j0 * qb, qb, qt, kr, D, i0, keys, scale);
				}
			}
			for (int64_t c = 0; c < nv; c++) {
				// four running maxima: one would wait on each compare-and-blend
				vf m4[4] = {mx[c], mx[c], mx[c], mx[c]};
				for (int64_t j = 0; j < kn; j++) {
					const vf x = loadv(s + j * qb + c * PM_LANES);
					m4[j % 4] = blend(x > m4[j % 4], x, m4[j % 4]);
				}
				const vf m01 = blend(m4[1] > m4[0], m4[1], m4[0]), m23 = blend(m4[3] > m4[2], m4[3], m4[2]);
				const vf m = blend(m23 > m01, m23, m01);
				const vf alpha = vexp(mx[c] - m); // e^−80 for the first chunk: o and sum are zero
				vf e_sum = splat(0.0f);
				for (int64_t j = 0; j < kn; j++) {
					const vf e = vexp(loadv(s + j * qb + c * PM_LANES) - m);
					storev(s + j * qb + c * PM_LANES, e);
					e_sum += e;
				}
				sum[c] = sum[c] * alpha + e_sum;
				mx[c] = m;
				for (int64_t d = 0; d < D; d++) {
					storev(o + d * qb + c * PM_LANES, loadv(o + d * qb + c * PM_LANES) * alpha);
				}
			}
			const float * vr[ATTN_JB];
			for (int64_t j0 = 0; j0 < kn; j0 += ATTN_JB) { // a run of values for every query and dimension
				const int64_t keys = kn - j0 < ATTN_JB ? kn - j0 : ATTN_JB;
				for (int64_t j = 0; j < keys; j++) {
					vr[j] = (const float *)(vh + (c0 + j0 + j) * v->nb[2]);
				}
				for (int64_t d0 = 0; d0 < D; d0 += ATTN_NR) {
					for (int64_t i0 = 0; i0 < qb; i0 += ATTN_QV) {
						values_tile(o, qb, s + j0 * qb, vr, keys, d0, i0);
					}
				}
			}
		}
		float inv[ATTN_QMAX];
		for (int64_t c = 0; c < nv; c++) {
			storev(inv + c * PM_LANES, splat(1.0f) / sum[c]);
		}
		char * out = (char *)dst->data + b * dst->nb[2] + q0 * dst->nb[1] + h * D * sizeof(float);
		for (int64_t i0 = 0; i0 < n; i0 += 8) { // the outputs back by query, divided by their sums
			if (i0 + 8 <= n) {
				for (int64_t d0 = 0; d0 < D; d0 += 8) {
					transpose_8x8((const char *)(o + d0 * qb + i0), qb * sizeof(float),
					              out + i0 * dst->nb[1] + d0 * sizeof(float), dst->nb[1], inv + i0);
				}
				continue;
			}
			for (int64_t i = i0; i < n; i++) {
				float * row = (float *)(out + i * dst->nb[1]);
				for (int64_t d = 0; d < D; d++) {
					row[d] = o[d * qb + i] * inv[i];
				}
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
	                                        pm_attention_op, GGML_N_TASKS_MAX, (void *)(uintptr_t)bits);
	return ggml_set_name(t, "ATTENTION (ours)");
}
