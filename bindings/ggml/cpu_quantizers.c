// Our quantizers for q4_K, q5_K, q6_K and q8_0 weights, ggml's reference
// quantizers (quantize_row_q4_K_ref, quantize_row_q5_K_ref,
// quantize_row_q6_K_ref, quantize_row_q8_0_ref) in vectors: 6–11 times
// faster for q4_K and q5_K, 9 for q6_K (AVX2), 3–7 times for q8_0, with
// AVX2 and AVX-512 (BenchmarkQuantize).
//
// ggml fits each sub-block of 32 values with a 4-bit (q5_K: 5-bit) grid
// scale·q − min by trying 21 (16) candidate scales, each a pass over the
// values to round them and a weighted least-squares fit and another to
// measure its error: about 50 ns a value in scalar code, so quantizing
// SDXL at load took a minute and a half on two cores. Here each lane of a
// vector fits its own sub-block with the scalar code's arithmetic in its
// order, so the bytes are ggml's where ggml is compiled without fused
// multiply-adds (cgo's default flags on x86-64). Compiled with them, ggml
// rounds some sums once instead of twice, which flips near-ties between
// candidates in a few blocks of q4_K and a third of q5_K's, as often for
// the better as for the worse; we never fuse, so that a conversion gives
// the same file on every machine. TestQuantizeMatchesGGML checks both.
// q8_0 has no sums to round: its bytes are ggml's for any finite weights.
#include <math.h>

#include "cpu_internal.h"
#if defined(__SSE2__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

// pm_fuses_multiply_add says whether this build rounds a·b + c once, as
// GCC and clang do by default where the CPU has fused multiply-adds
// (x86-64-v3 and later, arm64), and so whether ggml's quantizers do.
bool pm_fuses_multiply_add(void) {
	volatile float a = 1 + 0x1p-12f, c = -(1 + 0x1p-11f);
	return a * a + c != 0; // a² = 1 + 2^-11 + 2^-24, which one rounding keeps
}

// The rest of this file rounds each product and sum on its own, whatever
// the build: our quantizers give the same bytes on every machine.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// KQ_SUB is the values of a sub-block, KQ_SUBS the sub-blocks a super-block.
enum { KQ_SUB = 32, KQ_SUBS = 8 };

// kq_nearest is the integer nearest to v (ties to even) for |v| < 2^22:
// adding 1.5·2^23 leaves it in the low mantissa bits. ggml's nearest_int.
static inline int kq_nearest(float fval) {
	float val = fval + 12582912.f;
	int32_t i;
	memcpy(&i, &val, sizeof i);
	return (i & 0x007fffff) - 0x00400000;
}

// kq_clamp limits each lane of v to [lo, hi] (a NaN to lo).
static inline vf kq_clamp(vf v, float lo, float hi) {
#if defined(__AVX512F__)
	return (vf)_mm512_min_ps(_mm512_max_ps((__m512)v, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
#elif defined(__AVX__)
	return (vf)_mm256_min_ps(_mm256_max_ps((__m256)v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
#elif defined(__SSE2__)
	return (vf)_mm_min_ps(_mm_max_ps((__m128)v, _mm_set1_ps(lo)), _mm_set1_ps(hi));
#elif defined(__ARM_NEON) && PM_LANES == 4
	return (vf)vminq_f32(vmaxq_f32((float32x4_t)v, vdupq_n_f32(lo)), vdupq_n_f32(hi));
#else
	v = blend(v > splat(lo), v, splat(lo));
	return blend(v < splat(hi), v, splat(hi));
#endif
}

// kq_round rounds each lane of v (|v| < 2^22) to the nearest integer, ties
// to even: adding 1.5·2^23 and taking it away leaves one.
static inline vf kq_round(vf v) {
	const vf magic = splat(12582912.f);
	return (v + magic) - magic;
}

// kq_level is ggml's level for v in each lane: the nearest integer (ties
// to even), limited to [0, hi], as a float. Clamping first (the same for
// any v but NaN) leaves the rounding nothing to clamp, and 1.5·2^23 added
// and taken away leaves an integer: half the instructions of kq_nearest
// on integers, clamping them and converting back, in the fit's innermost
// loops.
static inline vf kq_level(vf v, float hi) { return kq_round(kq_clamp(v, 0.0f, hi)); }

// kq_fit fits lane s's sub-block, the values x[i][s], as ggml's
// make_qkx2_quants does with the weights of quantize_row_q4_K_ref and
// quantize_row_q5_K_ref: the scale, the negated min, and the levels L (as
// floats) of the best candidate.
static void kq_fit(const vf x[KQ_SUB], int nmax, float rmin, float rdelta, int nstep, vf * scale_out, vf * min_out,
                   vf L[KQ_SUB]) {
	// The weights: the root mean square of the sub-block plus |x|.
	vf sum_x2 = splat(0.0f);
	for (int l = 0; l < KQ_SUB; ++l) {
		sum_x2 += x[l] * x[l];
	}
	float ms[PM_LANES];
	storev(ms, sum_x2);
	for (int s = 0; s < PM_LANES; s++) {
		ms[s] = sqrtf(ms[s] / 32);
	}
	const vf av_x = loadv(ms);
	vf weights[KQ_SUB];
	for (int l = 0; l < KQ_SUB; ++l) {
		weights[l] = av_x + (vf)((vi)x[l] & splat_i(0x7fffffff));
	}

	vf min = x[0];
	vf max = x[0];
	vf sum_w = weights[0];
	vf sum_x = sum_w * x[0];
	for (int i = 1; i < KQ_SUB; ++i) {
		min = blend(x[i] < min, x[i], min);
		max = blend(x[i] > max, x[i], max);
		vf w = weights[i];
		sum_w += w;
		sum_x += w * x[i];
	}
	min = blend(min > splat(0.0f), splat(0.0f), min);
	const vi flat = max == min; // all levels 0, scale 0

	vf iscale = (float)nmax / (max - min);
	vf scale = 1.0f / iscale;
	vf best_error = splat(0.0f);
	for (int i = 0; i < KQ_SUB; ++i) {
		L[i] = kq_level(iscale * (x[i] - min), nmax);
		vf diff = scale * L[i] + min - x[i];
		diff = diff * diff;
		vf w = weights[i];
		best_error += w * diff;
	}
	// Candidates: the range spread over nmax + rmin + rdelta·is levels,
	// each level then refitted by weighted least squares.
	for (int is = 0; is <= nstep; ++is) {
		iscale = (rmin + rdelta * is + nmax) / (max - min);
		vf sum_l = splat(0.0f), sum_l2 = splat(0.0f), sum_xl = splat(0.0f);
		vf Laux[KQ_SUB];
		for (int i = 0; i < KQ_SUB; ++i) {
			vf l = kq_level(iscale * (x[i] - min), nmax);
			Laux[i] = l;
			vf w = weights[i];
			sum_l += w * l;
			sum_l2 += w * l * l;
			sum_xl += w * l * x[i];
		}
		vf D = sum_w * sum_l2 - sum_l * sum_l;
		vf this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
		vf this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
		const vi positive = this_min > splat(0.0f);
		this_min = blend(positive, splat(0.0f), this_min);
		this_scale = blend(positive, sum_xl / sum_l2, this_scale);
		vf cur_error = splat(0.0f);
		for (int i = 0; i < KQ_SUB; ++i) {
			vf diff = this_scale * Laux[i] + this_min - x[i];
			diff = diff * diff;
			vf w = weights[i];
			cur_error += w * diff;
		}
		const vi better = (D > splat(0.0f)) & (cur_error < best_error) & ~flat;
		for (int i = 0; i < KQ_SUB; ++i) {
			L[i] = blend(better, Laux[i], L[i]);
		}
		best_error = blend(better, cur_error, best_error);
		scale = blend(better, this_scale, scale);
		min = blend(better, this_min, min);
	}
	for (int i = 0; i < KQ_SUB; ++i) {
		L[i] = blend(flat, splat(0.0f), L[i]);
	}
	*scale_out = blend(flat, splat(0.0f), scale);
	*min_out = -min;
}

// KQ_GROUP is the super-blocks fitted together: 32 sub-blocks, whole
// vectors for any PM_LANES.
enum { KQ_GROUP = 4, KQ_VECS = KQ_GROUP * KQ_SUBS / PM_LANES };

// kq_group is a group's fit: per sub-block its scale and min, and its
// levels, value i of sub-block v·PM_LANES + s in lane s of levels[v][i].
struct kq_group {
	float scales[KQ_GROUP * KQ_SUBS], mins[KQ_GROUP * KQ_SUBS];
	vf levels[KQ_VECS][KQ_SUB];
};

// kq_group_fit fits the sub-blocks of the n ≤ KQ_GROUP super-blocks at x.
static void kq_group_fit(const float * x, int64_t n, int nmax, float rmin, float rdelta, int nstep,
                         struct kq_group * g) {
	const int subs = (int)n * KQ_SUBS;
	for (int v = 0; v * PM_LANES < subs; v++) {
		const int s0 = v * PM_LANES;
		// Transposed: lane s of t[i] is value i of sub-block s0+s (zeros
		// past the last sub-block).
		float t[KQ_SUB][PM_LANES];
		if (PM_LANES % 8 == 0 && s0 + PM_LANES <= subs) {
			for (int r = 0; r < PM_LANES; r += 8) {
				for (int c = 0; c < KQ_SUB; c += 8) {
					transpose_8x8((const char *)(x + (s0 + r) * KQ_SUB + c), KQ_SUB * sizeof(float),
					              (char *)&t[c][r], sizeof t[0], NULL);
				}
			}
		} else {
			for (int s = 0; s < PM_LANES; s++) {
				for (int i = 0; i < KQ_SUB; i++) {
					t[i][s] = s0 + s < subs ? x[(s0 + s) * KQ_SUB + i] : 0.0f;
				}
			}
		}
		vf xv[KQ_SUB], scale, min;
		for (int i = 0; i < KQ_SUB; i++) {
			xv[i] = loadv(t[i]);
		}
		kq_fit(xv, nmax, rmin, rdelta, nstep, &scale, &min, g->levels[v]);
		storev(t[0], scale);
		storev(t[1], min);
		for (int s = 0; s < PM_LANES && s0 + s < subs; s++) {
			g->scales[s0 + s] = t[0][s];
			g->mins[s0 + s] = t[1][s];
		}
	}
}

// kq_scales stores a super-block's sub-block scales and mins as ggml does:
// each as 6 bits of the largest (d, dmin: f16), packed into 12 bytes (the
// first four sub-blocks' in the low 6 bits of bytes 0–3 and 4–7, the last
// four's low nibbles in bytes 8–11 and top two bits in the spare bits of
// bytes 0–7). Returns each sub-block's level step d·s_j and offset
// dmin·m_j.
static void kq_scales(const float scales[KQ_SUBS], const float mins[KQ_SUBS], ggml_fp16_t * d_out,
                      ggml_fp16_t * dmin_out, uint8_t packed[12], float step[KQ_SUBS], float offset[KQ_SUBS]) {
	float max_scale = 0;
	float max_min = 0;
	for (int j = 0; j < KQ_SUBS; ++j) {
		if (scales[j] > max_scale) {
			max_scale = scales[j];
		}
		if (mins[j] > max_min) {
			max_min = mins[j];
		}
	}
	float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
	float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	uint8_t ls[KQ_SUBS], lm[KQ_SUBS];
	for (int j = 0; j < KQ_SUBS; ++j) {
		uint8_t s = kq_nearest(inv_scale * scales[j]);
		uint8_t m = kq_nearest(inv_min * mins[j]);
		ls[j] = s < 63 ? s : 63;
		lm[j] = m < 63 ? m : 63;
	}
	for (int j = 0; j < 4; ++j) {
		packed[j] = ls[j] | (ls[j + 4] >> 4) << 6;
		packed[j + 4] = lm[j] | (lm[j + 4] >> 4) << 6;
		packed[j + 8] = (ls[j + 4] & 0xF) | (lm[j + 4] & 0xF) << 4;
	}
	*d_out = ggml_fp32_to_fp16(max_scale / 63.f);
	*dmin_out = ggml_fp32_to_fp16(max_min / 63.f);
	for (int j = 0; j < KQ_SUBS; ++j) {
		step[j] = ggml_fp16_to_fp32(*d_out) * ls[j];
		offset[j] = ggml_fp16_to_fp32(*dmin_out) * lm[j];
	}
}

// vu8 is PM_LANES bytes.
typedef uint8_t vu8 __attribute__((vector_size(PM_LANES)));

// kq_levels rounds sub-block j of group g, the values at x, to the levels
// of its stored step and offset, (x + offset)/step, within [0, nmax]. A
// zero step keeps the fit's levels, as ggml's quantizers do.
static void kq_levels(const float * x, const struct kq_group * g, int j, float step, float offset, int nmax,
                      uint8_t L[KQ_SUB]) {
	if (!step) {
		for (int i = 0; i < KQ_SUB; i++) {
			L[i] = (uint8_t)g->levels[j / PM_LANES][i][j % PM_LANES];
		}
		return;
	}
	for (int i = 0; i < KQ_SUB; i += PM_LANES) {
		const vu8 l = __builtin_convertvector(kq_level((loadv(x + i) + splat(offset)) / splat(step), nmax), vu8);
		memcpy(L + i, &l, sizeof l);
	}
}

// quantize_kq writes n values (whole super-blocks) as q4_K or q5_K.
static void quantize_kq(enum ggml_type type, const float * x, void * y, int64_t n) {
	const bool q5 = type == GGML_TYPE_Q5_K;
	const int nmax = q5 ? 31 : 15;
	const int64_t blocks = n / (KQ_SUBS * KQ_SUB);
	struct kq_group g;
	uint8_t L[KQ_SUBS * KQ_SUB];
	for (int64_t b0 = 0; b0 < blocks; b0 += KQ_GROUP) {
		const int64_t nb = blocks - b0 < KQ_GROUP ? blocks - b0 : KQ_GROUP;
		const float * xb = x + b0 * KQ_SUBS * KQ_SUB;
		if (q5) {
			kq_group_fit(xb, nb, nmax, -0.5f, 0.1f, 15, &g);
		} else {
			kq_group_fit(xb, nb, nmax, -1.f, 0.1f, 20, &g);
		}
		for (int64_t b = 0; b < nb; b++) {
			const float * xs = xb + b * KQ_SUBS * KQ_SUB;
			float step[KQ_SUBS], offset[KQ_SUBS];
			uint8_t * qs;
			if (q5) {
				struct block_q5_K * blk = (struct block_q5_K *)y + b0 + b;
				kq_scales(g.scales + b * KQ_SUBS, g.mins + b * KQ_SUBS, &blk->d, &blk->dmin, blk->scales, step, offset);
				qs = blk->qs;
				memset(blk->qh, 0, sizeof blk->qh);
				for (int j = 0; j < KQ_SUBS; ++j) {
					kq_levels(xs + j * KQ_SUB, &g, b * KQ_SUBS + j, step[j], offset[j], nmax, L + j * KQ_SUB);
					for (int i = 0; i < KQ_SUB; i++) { // bit j of qh[i]: the fifth bit of value i of sub-block j
						blk->qh[i] |= (L[j * KQ_SUB + i] >> 4) << j;
					}
				}
			} else {
				struct block_q4_K * blk = (struct block_q4_K *)y + b0 + b;
				kq_scales(g.scales + b * KQ_SUBS, g.mins + b * KQ_SUBS, &blk->d, &blk->dmin, blk->scales, step, offset);
				qs = blk->qs;
				for (int j = 0; j < KQ_SUBS; ++j) {
					kq_levels(xs + j * KQ_SUB, &g, b * KQ_SUBS + j, step[j], offset[j], nmax, L + j * KQ_SUB);
				}
			}
			// Two sub-blocks a 32-byte run: 2c in the low nibbles, 2c+1 in the high.
			for (int c = 0; c < KQ_SUBS / 2; c++) {
				for (int i = 0; i < KQ_SUB; i++) {
					qs[c * KQ_SUB + i] = (L[2 * c * KQ_SUB + i] & 0xF) | (L[(2 * c + 1) * KQ_SUB + i] & 0xF) << 4;
				}
			}
		}
	}
}

// quantize_q8_0 writes n values (whole blocks) as q8_0: per 32 values the
// largest magnitude maps to ±127, and each value to the integer nearest
// to it in those units, halves away from zero (roundf's rounding).
static void quantize_q8_0(const float * x, struct block_q8_0 * y, int64_t n) {
	typedef int8_t vi8 __attribute__((vector_size(PM_LANES)));
	for (int64_t b = 0; b < n / 32; b++, x += 32) {
		vf amax = splat(0.0f);
		for (int i = 0; i < 32; i += PM_LANES) {
			const vf a = (vf)((vi)loadv(x + i) & splat_i(0x7fffffff));
			amax = blend(a > amax, a, amax);
		}
		float m[PM_LANES], d = 0.0f;
		storev(m, amax);
		for (int s = 0; s < PM_LANES; s++) {
			d = m[s] > d ? m[s] : d;
		}
		d = d / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		y[b].d = ggml_fp32_to_fp16(d);
		for (int i = 0; i < 32; i += PM_LANES) {
			const vf v = loadv(x + i) * splat(id);
			const vi sign = (vi)v & splat_i((int32_t)0x80000000);
			const vf a = (vf)((vi)v ^ sign);               // |v| ≤ 127 and a bit
			const vi whole = __builtin_convertvector(a, vi); // truncated
			const vi up = (a - __builtin_convertvector(whole, vf)) >= splat(0.5f); // exact fraction
			const vi neg = sign != splat_i(0);
			const vi q = ((whole - up) ^ neg) - neg;         // up and neg are −1 where set
			const vi8 qb = __builtin_convertvector(q, vi8);
			memcpy(y[b].q + i, &qb, sizeof qb);
		}
	}
}

// Q6_SUB is the values of a q6_K sub-block, Q6_SUBS the sub-blocks a
// super-block; Q6_EPS ggml's GROUP_MAX_EPS (a smaller largest magnitude
// makes zeros).
enum { Q6_SUB = 16, Q6_SUBS = 16 };
#define Q6_EPS 1e-15f

// q6_nearest is kq_nearest in each lane, then limited to [lo, hi]: ggml's
// nearest_int and clamp, bit for bit for any v.
static inline vi q6_nearest(vf v, int lo, int hi) {
	vi i = ((vi)(v + splat(12582912.f)) & splat_i(0x007fffff)) - splat_i(0x00400000);
	const vi below = i < splat_i(lo), above = i > splat_i(hi);
	i = (below & splat_i(lo)) | (~below & i);
	return (above & splat_i(hi)) | (~above & i);
}

// Q6_VECS is the vectors of a super-block's sub-blocks, one per lane.
enum { Q6_VECS = Q6_SUBS / PM_LANES };

// q6_level is ggml's level for v in each lane: the nearest integer (ties
// to even) within [−32, 31], as a float; as kq_level, clamped first (the
// same for any v but NaN, which finite weights never make here).
static inline vf q6_level(vf v) { return kq_round(kq_clamp(v, -32.0f, 31.0f)); }

// q6_fit fits lane s of vector v's sub-block, the values x[v][i][s], as
// ggml's make_qx_quants(16, 32, x, L, 1, NULL) does for
// quantize_row_q6_K_ref: the levels of 19 candidate scales, each refitted
// by least squares weighted by x², the best kept. Writes the scales, and
// the levels plus 32 (0 to 63) in L.
static void q6_fit(const vf x[Q6_VECS][Q6_SUB], vf scale[Q6_VECS], vi L[Q6_VECS][Q6_SUB]) {
	vf max[Q6_VECS], best[Q6_VECS], best_iscale[Q6_VECS], w[Q6_VECS][Q6_SUB], wx[Q6_VECS][Q6_SUB];
	vi zero[Q6_VECS];
	for (int v = 0; v < Q6_VECS; v++) {
		vf amax = splat(0.0f); // max: the (first) value of largest magnitude
		max[v] = splat(0.0f);
		for (int i = 0; i < Q6_SUB; i++) {
			const vf ax = (vf)((vi)x[v][i] & splat_i(0x7fffffff));
			const vi larger = ax > amax;
			amax = blend(larger, ax, amax);
			max[v] = blend(larger, x[v][i], max[v]);
			w[v][i] = x[v][i] * x[v][i];
			wx[v][i] = w[v][i] * x[v][i]; // ggml's w·x·l is (w·x)·l
		}
		zero[v] = amax < splat(Q6_EPS);
	}
	for (int c = 0; c < 19; c++) {
		const int is = c == 0 ? 0 : c - 10 + (c >= 10); // 0, then −9 … −1, 1 … 9
		const float num = is == 0 ? -32.0f : -(32 + 0.1f * (float)is);
		for (int v = 0; v < Q6_VECS; v++) {
			const vf iscale = splat(num) / max[v];
			vf sumlx = splat(0.0f), suml2 = splat(0.0f);
			for (int i = 0; i < Q6_SUB; i++) {
				const vf l = q6_level(iscale * x[v][i]);
				sumlx += wx[v][i] * l;
				suml2 += w[v][i] * l * l;
			}
			if (c == 0) { // the first candidate is taken as it is
				scale[v] = blend(suml2 != splat(0.0f), sumlx / suml2, splat(0.0f));
				best[v] = scale[v] * sumlx;
				best_iscale[v] = iscale;
				continue;
			}
			const vi better = (suml2 > splat(0.0f)) & (sumlx * sumlx > best[v] * suml2);
			const vf sc = sumlx / suml2;
			scale[v] = blend(better, sc, scale[v]);
			best[v] = blend(better, sc * sumlx, best[v]);
			best_iscale[v] = blend(better, iscale, best_iscale[v]);
		}
	}
	for (int v = 0; v < Q6_VECS; v++) { // the kept candidate's levels, as ggml rounds them again
		for (int i = 0; i < Q6_SUB; i++) {
			L[v][i] = (__builtin_convertvector(q6_level(best_iscale[v] * x[v][i]), vi) + splat_i(32)) & ~zero[v];
		}
		scale[v] = blend(zero[v], splat(0.0f), scale[v]);
	}
}

// quantize_q6_K writes n values (whole super-blocks) as q6_K, as ggml's
// quantize_row_q6_K_ref: each sub-block fitted (q6_fit), the scales stored
// as 8 bits of the largest's (d: f16), then each value rounded to its
// stored scale unless that is zero.
static void quantize_q6_K(const float * x, struct block_q6_K * y, int64_t n) {
	for (int64_t b = 0; b < n / 256; b++, x += 256) {
		struct block_q6_K * blk = y + b;
		vf xv[Q6_VECS][Q6_SUB], sv[Q6_VECS];
		vi lv[Q6_VECS][Q6_SUB];
		for (int v = 0; v < Q6_VECS; v++) {
			float t[Q6_SUB][PM_LANES]; // lane s of t[i]: value i of sub-block v·PM_LANES + s
			for (int s = 0; s < PM_LANES; s++) {
				for (int i = 0; i < Q6_SUB; i++) {
					t[i][s] = x[(v * PM_LANES + s) * Q6_SUB + i];
				}
			}
			for (int i = 0; i < Q6_SUB; i++) {
				xv[v][i] = loadv(t[i]);
			}
		}
		q6_fit(xv, sv, lv);
		float scales[Q6_SUBS];
		int32_t L[256];
		for (int v = 0; v < Q6_VECS; v++) {
			storev(scales + v * PM_LANES, sv[v]);
			for (int i = 0; i < Q6_SUB; i++) {
				int32_t l[PM_LANES];
				memcpy(l, &lv[v][i], sizeof l);
				for (int s = 0; s < PM_LANES; s++) {
					L[(v * PM_LANES + s) * Q6_SUB + i] = l[s];
				}
			}
		}
		float max_scale = 0.0f, max_abs = 0.0f;
		for (int j = 0; j < Q6_SUBS; j++) {
			if (fabsf(scales[j]) > max_abs) {
				max_abs = fabsf(scales[j]);
				max_scale = scales[j];
			}
		}
		if (max_abs < Q6_EPS) {
			memset(blk, 0, sizeof *blk);
			blk->d = ggml_fp32_to_fp16(0.0f);
			continue;
		}
		const float iscale = -128.0f / max_scale;
		blk->d = ggml_fp32_to_fp16(1 / iscale);
		const float d = ggml_fp16_to_fp32(blk->d);
		for (int j = 0; j < Q6_SUBS; j++) {
			const int q = kq_nearest(iscale * scales[j]);
			blk->scales[j] = (int8_t)(q < 127 ? q : 127);
		}
		for (int j = 0; j < Q6_SUBS; j++) {
			const float dj = d * blk->scales[j];
			if (dj == 0) { // keeps the fit's levels
				continue;
			}
			for (int i = 0; i < Q6_SUB; i += PM_LANES) {
				const vi l = q6_nearest(loadv(x + j * Q6_SUB + i) / splat(dj), -32, 31) + splat_i(32);
				memcpy(L + j * Q6_SUB + i, &l, sizeof l);
			}
		}
		// value 128h + 32r + l: its low nibble in ql[64h + 32(r%2) + l] (the high
		// one for r ≥ 2), its top two bits at bits 2r of qh[32h + l]
		for (int h = 0; h < 2; h++) {
			const int32_t * Lh = L + 128 * h;
			for (int l = 0; l < 32; l++) {
				blk->ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | (Lh[l + 64] & 0xF) << 4);
				blk->ql[64 * h + 32 + l] = (uint8_t)((Lh[l + 32] & 0xF) | (Lh[l + 96] & 0xF) << 4);
				blk->qh[32 * h + l] =
				    (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
			}
		}
	}
}

bool pm_quantize(enum ggml_type type, const float * x, void * y, int64_t n) {
	switch (type) {
	case GGML_TYPE_Q4_K:
	case GGML_TYPE_Q5_K:
		if (n % (KQ_SUBS * KQ_SUB) != 0) {
			return false;
		}
		quantize_kq(type, x, y, n);
		return true;
	case GGML_TYPE_Q8_0:
		if (n % 32 != 0) {
			return false;
		}
		quantize_q8_0(x, y, n);
		return true;
	case GGML_TYPE_Q6_K:
		if (n % 256 != 0) {
			return false;
		}
		quantize_q6_K(x, y, n);
		return true;
	default:
		return false;
	}
}
