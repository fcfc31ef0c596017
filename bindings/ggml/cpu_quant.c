// Our CPU products of quantized weights with f32 activations in integers
// (x86 with AVX2 or AVX-512): q2_K, q3_K, q4_K, q5_K, q6_K, q4_0, q4_1,
// q5_0 and q5_1 in 8 bits, q8_0 in 8 with VNNI and in 16 without (below).
// See pm_mul_mat (cpu_gemm.c) for where they are taken. All quantize the
// activations in an op of their own, pack blocks of weight rows for
// register tiles, and share the loops around the tiles (int_product).
//
// A q4_K weight is d·s_j·q − dmin·m_j over super-blocks of 256 values: 4-bit
// q, and per sub-block j of 32 values a 6-bit scale s_j and min m_j. ggml's
// CPU quantizes the activations to 8 bits per 256 (q8_K) and sums q·x in
// integers, row by row (with GGML_USE_CPU_REPACK eight weight rows at
// once). Here, as in our f32 product, a register tile of weight rows ×
// activation rows shares its loads: the weights are unpacked to one byte
// per value, stored so that each 32-bit lane of a vector holds four
// consecutive k of one row, and multiplied (vpmaddubsw) by four k of one
// activation row broadcast to all lanes. The 16-bit sums of a sub-block's
// eight such products cannot overflow (8 · 2 · 15 · 127 < 2^15), so the
// sub-block's scale is applied once (vpmaddwd), and floats appear only once
// per super-block. BenchmarkMulMat (1280 × 1280 × 1024) on the Zen 5 dev VM:
// ggml's repacked product 221 GFLOP/s with AVX2, 397 with AVX-512; ours 337–416
// and 901–917. (With VNNI's vpdpbusd, 32-bit sums scaled per sub-block were
// slower: 762.)
#include <math.h>

#include "cpu_internal.h"

#if defined(__AVX2__)
#include <immintrin.h>

// The tile's vectors: 16 lanes with AVX-512 (twice the sums per
// instruction, and 32 registers for a tile of 32 × 6), else 8 (16 × 3).
// Each lane is one weight row's four bytes.
#if defined(__AVX512BW__)
enum { QK_G = 16, QK_NR = 6 };
typedef __m512i vq;
typedef __m512 vqf;
static inline vq q_zero(void) { return _mm512_setzero_si512(); }
static inline vq q_load(const void * p) { return _mm512_loadu_si512(p); }
static inline vq q_set1(int32_t v) { return _mm512_set1_epi32(v); }
static inline vq q_add32(vq a, vq b) { return _mm512_add_epi32(a, b); }
static inline vq q_madd(vq a, vq b) { return _mm512_madd_epi16(a, b); }
static inline vq q_dot4(vq h, vq w, vq b) { return _mm512_add_epi16(h, _mm512_maddubs_epi16(w, b)); }
static inline vq q_maddubs(vq u, vq s) { return _mm512_maddubs_epi16(u, s); }
static inline vq q_add16(vq a, vq b) { return _mm512_add_epi16(a, b); }
static inline vqf qf_load(const float * p) { return _mm512_loadu_ps(p); }
static inline void qf_store(float * p, vqf v) { _mm512_storeu_ps(p, v); }
static inline vqf qf_cvt(vq v) { return _mm512_cvtepi32_ps(v); }
static inline vqf qf_set1(float v) { return _mm512_set1_ps(v); }
static inline vqf qf_mul(vqf a, vqf b) { return _mm512_mul_ps(a, b); }
static inline vqf qf_sub(vqf a, vqf b) { return _mm512_sub_ps(a, b); }
static inline vqf qf_add(vqf a, vqf b) { return _mm512_add_ps(a, b); }
static inline vqf qf_fma(vqf a, vqf b, vqf c) { return _mm512_fmadd_ps(a, b, c); }
#else
enum { QK_G = 8, QK_NR = 3 };
typedef __m256i vq;
typedef __m256 vqf;
static inline vq q_zero(void) { return _mm256_setzero_si256(); }
static inline vq q_load(const void * p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline vq q_set1(int32_t v) { return _mm256_set1_epi32(v); }
static inline vq q_add32(vq a, vq b) { return _mm256_add_epi32(a, b); }
static inline vq q_madd(vq a, vq b) { return _mm256_madd_epi16(a, b); }
static inline vq q_dot4(vq h, vq w, vq b) { return _mm256_add_epi16(h, _mm256_maddubs_epi16(w, b)); }
static inline vq q_maddubs(vq u, vq s) { return _mm256_maddubs_epi16(u, s); }
static inline vq q_add16(vq a, vq b) { return _mm256_add_epi16(a, b); }
static inline vqf qf_load(const float * p) { return _mm256_loadu_ps(p); }
static inline void qf_store(float * p, vqf v) { _mm256_storeu_ps(p, v); }
static inline vqf qf_cvt(vq v) { return _mm256_cvtepi32_ps(v); }
static inline vqf qf_set1(float v) { return _mm256_set1_ps(v); }
static inline vqf qf_mul(vqf a, vqf b) { return _mm256_mul_ps(a, b); }
static inline vqf qf_sub(vqf a, vqf b) { return _mm256_sub_ps(a, b); }
static inline vqf qf_add(vqf a, vqf b) { return _mm256_add_ps(a, b); }
static inline vqf qf_fma(vqf a, vqf b, vqf c) { return _mm256_fmadd_ps(a, b, c); }
#endif

// act_block is 256 activations quantized: x ≈ d·q, |q| ≤ 127, with the sum
// of q per sub-block of 32 (for the mins).
struct act_block {
	float d;
	int32_t pad[3];
	int16_t bsums[8];
	int8_t q[256];
};
_Static_assert(sizeof(struct act_block) == 288, "activation blocks are 288 bytes");

// act_block16 is act_block with the sums per 16 values (q2_K's mins).
struct act_block16 {
	float d;
	int32_t pad[3];
	int16_t bsums[16];
	int8_t q[256];
};
_Static_assert(sizeof(struct act_block16) == 304, "activation blocks of 16-value sums are 304 bytes");

// tile_sb is one super-block of a tile's QK_MR weight rows, two groups of
// QK_G (the vector lanes), packed for the product: q[k/4][g] holds k..k+3
// of each row of group g; sc[j][g] the 16-bit pair (s_j, s_j) of each row,
// mn[i][g] the pair (m_2i, m_2i+1).
struct tile_sb {
	uint8_t q[64][2][4 * QK_G];
	int16_t sc[8][2][2 * QK_G];
	int16_t mn[4][2][2 * QK_G];
	float d[2][QK_G], dmin[2][QK_G];
};

// tile_sb16 is tile_sb for sub-blocks of 16 values (q2_K): 16 scales, 8
// pairs of mins.
struct tile_sb16 {
	uint8_t q[64][2][4 * QK_G];
	int16_t sc[16][2][2 * QK_G];
	int16_t mn[8][2][2 * QK_G];
	float d[2][QK_G], dmin[2][QK_G];
};

// SB_FIELD and ACT_FIELD are field f of the tile or activation block at p
// for sub-blocks of sub values (32: tile_sb and act_block, 16: tile_sb16
// and act_block16).
#define SB_FIELD(p, sub, f) ((sub) == 32 ? ((const struct tile_sb *)(p))->f : ((const struct tile_sb16 *)(p))->f)
#define ACT_FIELD(p, sub, f) ((sub) == 32 ? ((const struct act_block *)(p))->f : ((const struct act_block16 *)(p))->f)

enum {
	QK_MR = 2 * QK_G, // weight rows in a register tile (QK_NR activation rows)
	QK_KC = 4,        // super-blocks of K packed at once: a tile's panel is 20 or 40 KB (L1)
	QK_MC = 128,      // weight rows packed at once: 160 KB (L2)
	QK_NC = 96,       // activation rows multiplied by the packed rows in turn: 108 KB (L2)
	QK_MIN_N = 16,    // narrower products stay ggml's (matrix-vector kernels)
};

// abs_max is max |x| over n floats (a multiple of 8), or NaN if one is
// NaN, so that a NaN activation makes its block's scale NaN and the
// products show it as ggml's f32 ones would, instead of summing garbage
// quietly (an infinity makes the scale infinite).
static float abs_max(const float * x, int n) {
	const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 amax = _mm256_setzero_ps(), nan = amax;
	for (int i = 0; i < n; i += 8) {
		const __m256 v = _mm256_loadu_ps(x + i);
		amax = _mm256_max_ps(amax, _mm256_and_ps(v, abs_mask));
		nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
	}
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm256_movemask_ps(nan) != 0 ? NAN : _mm_cvtss_f32(m);
}

// QUANT_TINY is the largest |x| of a block of activations quantized as
// zeros: 32767/max|x| must stay finite (it overflows below about 1e-34),
// and the products of such blocks, under 1e-27 per unit of weight, are
// zero for every network here.
#define QUANT_TINY 1e-30f

// round32 rounds 32 floats times iscale to integers (to nearest, ties to
// even), 8 per vector.
static inline void round32(const float * x, __m256 iscale, __m256i q[4]) {
	for (int i = 0; i < 4; i++) {
		q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), iscale));
	}
}

// bytes32 is 32 integers of 8 bits (in 32-bit lanes) as bytes, in order.
static inline __m256i bytes32(const __m256i q[4]) {
	// packs interleave the 128-bit halves; the permutation puts the 4-byte runs back
	const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
	return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// hsum32 is the sum of v's eight 32-bit integers.
static inline int32_t hsum32(__m256i v) {
	__m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
	return _mm_cvtsi128_si32(h);
}

// quantize_levels rounds 32 floats to q = round(x·levels/max|x|) and
// returns the scale max/levels (0 for zeros or blocks too small to scale,
// then q = 0; NaN if one is NaN).
static float quantize_levels(const float * x, float levels, __m256i q[4]) {
	const float max = abs_max(x, 32);
	if (!(max > QUANT_TINY)) {
		q[0] = q[1] = q[2] = q[3] = _mm256_setzero_si256();
		return isnan(max) ? max : 0.0f;
	}
	round32(x, _mm256_set1_ps(levels / max), q);
	return max / levels;
}

// quantize_sums quantizes 256 floats: q = round(x·127/max|x|) into *d
// and q, with the sum of q per sub-block of sub values (16 or 32) in bsums.
static inline __attribute__((always_inline)) void quantize_sums(const float * x, float * d, int16_t * bsums, int8_t * q,
                                                                const int sub) {
	const float max = abs_max(x, 256);
	if (!(max > QUANT_TINY)) { // zeros (or too small to scale), or NaN
		memset(bsums, 0, 256 / sub * sizeof *bsums);
		memset(q, 0, 256);
		*d = isnan(max) ? max : 0.0f;
		return;
	}
	*d = max / 127.0f;
	const __m256 iscale = _mm256_set1_ps(127.0f / max);
	for (int j = 0; j < 8; j++) {
		__m256i v[4];
		round32(x + 32 * j, iscale, v);
		const __m256i lo = _mm256_add_epi32(v[0], v[1]), hi = _mm256_add_epi32(v[2], v[3]);
		if (sub == 16) {
			bsums[2 * j] = (int16_t)hsum32(lo);
			bsums[2 * j + 1] = (int16_t)hsum32(hi);
		} else {
			bsums[j] = (int16_t)hsum32(_mm256_add_epi32(lo, hi));
		}
		_mm256_storeu_si256((__m256i *)(q + 32 * j), bytes32(v));
	}
}

// quantize_block quantizes 256 floats into an act_block.
static void quantize_block(const float * x, void * out) {
	struct act_block * y = out;
	quantize_sums(x, &y->d, y->bsums, y->q, 32);
}

// quantize_block16 quantizes 256 floats into an act_block16.
static void quantize_block16(const float * x, void * out) {
	struct act_block16 * y = out;
	quantize_sums(x, &y->d, y->bsums, y->q, 16);
}

// int_product is one kind of our integer products: a weight type's packed
// tile blocks (K per block, bytes), the activations' blocks (bytes), and
// the functions that quantize an activation block, pack a tile's rows and
// multiply a tile (see quantize_block, pack_q4k, tile_q4k).
struct int_product {
	int64_t k_block, tile_bytes, act_bytes;
	int64_t kc; // blocks packed at once
	void (*quantize)(const float * x, void * y);
	void (*pack)(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t b0, int64_t nb);
	void (*tile)(const void * panel, int64_t nb, const void * const x[QK_NR], float * c, int64_t ldc, bool first,
	             const float * bias);
};

// pm_quantize_rows_op quantizes the rows of src[0] (f32, K a multiple of
// the kind's block, rows nb[1] apart) into dst's rows of blocks.
static void pm_quantize_rows_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct int_product * kind = userdata;
	const struct ggml_tensor * b = dst->src[0];
	const int64_t nb = b->ne[0] / kind->k_block, rows = b->ne[1] * b->ne[2] * b->ne[3];
	int64_t lo, hi;
	thread_rows(rows, ith, nth, &lo, &hi);
	for (int64_t n = lo; n < hi; n++) {
		const float * x = (const float *)((const char *)b->data + n * b->nb[1]);
		char * y = (char *)dst->data + n * dst->nb[1];
		for (int64_t i = 0; i < nb; i++) {
			kind->quantize(x + i * kind->k_block, y + i * kind->act_bytes);
		}
	}
}

// scale_min is sub-block j's 6-bit scale and min from a q4_K block's 12
// bytes: j < 4 in the low 6 bits of bytes j and j+4, the others in the
// nibbles of bytes j+4 with their top bits in the spare 2 bits above.
static inline void scale_min(const uint8_t * s, int j, int16_t * sc, int16_t * mn) {
	if (j < 4) {
		*sc = s[j] & 63;
		*mn = s[j + 4] & 63;
	} else {
		*sc = (int16_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
		*mn = (int16_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
	}
}

// transpose8 turns 8 vectors of 8 int32 (a row's 8 runs of 4 bytes each)
// into 8 vectors of run i of each row.
static inline void transpose8(__m256i r[8]) {
	__m256i t[8], u[8];
	for (int i = 0; i < 8; i += 2) {
		t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
	}
	for (int i = 0; i < 8; i += 4) {
		u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
		u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
		u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
		u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
	}
	for (int i = 0; i < 4; i++) {
		r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
		r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
	}
}

// store_runs stores 32 bytes of each of eight weight rows (v, one row a
// vector) for the tiles: run i (bytes 4i..4i+3 of every row) at at + i·8·QK_G,
// the layout of the packed q[k/4][2][4·QK_G] arrays, at is &q[k/4][g][4·l0].
static inline void store_runs(void * at, __m256i v[8]) {
	transpose8(v);
	for (int i = 0; i < 8; i++) {
		_mm256_storeu_si256((__m256i *)((char *)at + i * 8 * QK_G), v[i]);
	}
}

// pack_k packs q4_K (or with q5, q5_K) super-blocks [sb0, sb0+nsb) of
// weight rows [r0, r0+rows) (rows ≤ QK_MR; the others are zeros) of a (rows
// lda bytes apart), eight rows (32 bytes of a group's vectors) at a time.
static inline void pack_k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb,
                          bool q5) {
	const __m256i low = _mm256_set1_epi8(0x0F), fifth = _mm256_set1_epi8(0x10);
	const int64_t block_bytes = q5 ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
	struct tile_sb * dst = panel;
	for (int64_t s = 0; s < nsb; s++, dst++) {
		for (int r8 = 0; r8 < QK_MR; r8 += 8) {
			const int g = r8 / QK_G, l0 = r8 % QK_G; // group, and its first lane
			const uint8_t * blk[8];                  // the rows' super-blocks: d, dmin, scales as in q4_K
			const uint8_t * qs[8], * qh[8];
			ggml_fp16_t h[2][8]; // d and dmin
			for (int l = 0; l < 8; l++) {
				const int r = r8 + l, lane = l0 + l;
				blk[l] = r < rows ? (const uint8_t *)a + (r0 + r) * lda + (sb0 + s) * block_bytes : NULL;
				const struct block_q4_K * b4 = (const struct block_q4_K *)blk[l];
				const struct block_q5_K * b5 = (const struct block_q5_K *)blk[l];
				qs[l] = blk[l] == NULL ? NULL : q5 ? b5->qs : b4->qs;
				qh[l] = blk[l] == NULL || !q5 ? NULL : b5->qh;
				int16_t sc[8] = {0}, mn[8] = {0};
				h[0][l] = blk[l] != NULL ? b4->d : 0;
				h[1][l] = blk[l] != NULL ? b4->dmin : 0;
				for (int j = 0; blk[l] != NULL && j < 8; j++) {
					scale_min(b4->scales, j, &sc[j], &mn[j]);
				}
				for (int j = 0; j < 8; j++) {
					dst->sc[j][g][2 * lane] = dst->sc[j][g][2 * lane + 1] = sc[j];
				}
				for (int i = 0; i < 4; i++) {
					dst->mn[i][g][2 * lane] = mn[2 * i];
					dst->mn[i][g][2 * lane + 1] = mn[2 * i + 1];
				}
			}
			f16_to_f32(h[0], dst->d[g] + l0, 8);
			f16_to_f32(h[1], dst->dmin[g] + l0, 8);
			for (int c = 0; c < 4; c++) { // sub-blocks 2c and 2c+1
				const __m256i bit_lo = _mm256_set1_epi8((char)(1 << (2 * c))), bit_hi = _mm256_set1_epi8((char)(2 << (2 * c)));
				__m256i lo[8], hi[8];
				for (int l = 0; l < 8; l++) {
					const __m256i v = qs[l] != NULL ? _mm256_loadu_si256((const __m256i *)(qs[l] + 32 * c)) : _mm256_setzero_si256();
					lo[l] = _mm256_and_si256(v, low);
					hi[l] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
					if (qh[l] != NULL) { // 16 where the value's fifth bit is set
						const __m256i b = _mm256_loadu_si256((const __m256i *)qh[l]);
						lo[l] = _mm256_or_si256(lo[l], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit_lo), bit_lo), fifth));
						hi[l] = _mm256_or_si256(hi[l], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit_hi), bit_hi), fifth));
					}
				}
				store_runs(dst->q[16 * c][g] + 4 * l0, lo);
				store_runs(dst->q[16 * c + 8][g] + 4 * l0, hi);
			}
		}
	}
}

static void pack_q4k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb) {
	pack_k(panel, a, lda, r0, rows, sb0, nsb, false);
}

static void pack_q5k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb) {
	pack_k(panel, a, lda, r0, rows, sb0, nsb, true);
}

// bcast is the 4 bytes at p in every lane.
static inline vq bcast(const void * p) {
	int32_t v;
	memcpy(&v, p, 4);
	return q_set1(v);
}

// tile_k adds (or stores, when first) the products of the QK_MR packed
// rows w over nsb super-blocks with activation rows x[0..QK_NR) into
// c[j·ldc + i] (all the tile's rows and columns), for sub-blocks of sub
// values (q4_K and q5_K: 32, q2_K: 16). The 16-bit sums of span values'
// products (vpmaddubsw) cannot overflow, so the sub-block's scales are
// applied to them as 32-bit sums (vpmaddwd): q4_K's 4-bit values over a
// whole sub-block (8 · 2 · 15 · 127 < 2^15), q5_K's 5-bit ones over half
// (4 · 2 · 31 · 127 < 2^15), q2_K's 2-bit ones over its 16. With bias,
// bias[i] is added to row i at the end.
static inline __attribute__((always_inline)) void tile_k(const void * panel, int64_t nsb, const void * const xs[QK_NR],
                                                         float * c, int64_t ldc, bool first, const float * bias,
                                                         const int span, const int sub) {
	const int64_t tile_bytes = sub == 32 ? sizeof(struct tile_sb) : sizeof(struct tile_sb16);
	const int64_t act_bytes = sub == 32 ? sizeof(struct act_block) : sizeof(struct act_block16);
	for (int64_t s = 0; s < nsb; s++, first = false) {
		const char * w = (const char *)panel + s * tile_bytes;
		const char * xb[QK_NR]; // this super-block's activations
		const int8_t * xq[QK_NR];
		vq acc[2][QK_NR];
		for (int n = 0; n < QK_NR; n++) {
			xb[n] = (const char *)xs[n] + s * act_bytes;
			xq[n] = ACT_FIELD(xb[n], sub, q);
			acc[0][n] = acc[1][n] = q_zero();
		}
		for (int k0 = 0; k0 < 256; k0 += span) {
			vq h[2][QK_NR];
			for (int n = 0; n < QK_NR; n++) {
				h[0][n] = h[1][n] = q_zero();
			}
			// Unrolled (span is a constant here: always inlined), each sum
			// kept in its register: unrolled, GCC would otherwise regroup
			// the sums into trees of products that spill AVX2's 16
			// registers. BenchmarkMulMat on the Zen 3 dev VM (AVX2), ten
			// runs each: q4_K 140–163 GFLOP/s as a loop, 164–206 so; q5_K
			// 128–147, 167–191.
			const uint8_t(*wq)[2][4 * QK_G] = SB_FIELD(w, sub, q) + k0 / 4;
#pragma GCC unroll 8
			for (int i = 0; i < span / 4; i++) {
				const vq w0 = q_load(wq[i][0]), w1 = q_load(wq[i][1]);
#pragma GCC unroll 8
				for (int n = 0; n < QK_NR; n++) {
					const vq b = bcast(xq[n] + k0 + 4 * i);
					h[0][n] = q_dot4(h[0][n], w0, b);
					h[1][n] = q_dot4(h[1][n], w1, b);
					in_register(h[0][n]);
					in_register(h[1][n]);
				}
			}
			const int16_t(*sc)[2 * QK_G] = SB_FIELD(w, sub, sc)[k0 / sub];
			const vq s0 = q_load(sc[0]), s1 = q_load(sc[1]);
			for (int n = 0; n < QK_NR; n++) {
				acc[0][n] = q_add32(acc[0][n], q_madd(h[0][n], s0));
				acc[1][n] = q_add32(acc[1][n], q_madd(h[1][n], s1));
			}
		}
		for (int g = 0; g < 2; g++) {
			const vqf d = qf_load(SB_FIELD(w, sub, d)[g]), dmin = qf_load(SB_FIELD(w, sub, dmin)[g]);
			for (int n = 0; n < QK_NR; n++) {
				const int16_t * bsums = ACT_FIELD(xb[n], sub, bsums);
				vq m = q_zero(); // Σ_j m_j · (Σ q of sub-block j)
				for (int i = 0; i < 128 / sub; i++) {
					m = q_add32(m, q_madd(q_load(SB_FIELD(w, sub, mn)[i][g]), bcast(bsums + 2 * i)));
				}
				vqf r = qf_sub(qf_mul(d, qf_cvt(acc[g][n])), qf_mul(dmin, qf_cvt(m)));
				r = qf_mul(r, qf_set1(ACT_FIELD(xb[n], sub, d)));
				float * cn = c + n * ldc + QK_G * g;
				r = first ? r : qf_add(r, qf_load(cn));
				qf_store(cn, bias != NULL && s == nsb - 1 ? qf_add(r, qf_load(bias + QK_G * g)) : r);
			}
		}
	}
}

static void tile_q4k(const void * panel, int64_t nsb, const void * const xs[QK_NR], float * c, int64_t ldc, bool first,
                     const float * bias) {
	tile_k(panel, nsb, xs, c, ldc, first, bias, 32, 32);
}

static void tile_q5k(const void * panel, int64_t nsb, const void * const xs[QK_NR], float * c, int64_t ldc, bool first,
                     const float * bias) {
	tile_k(panel, nsb, xs, c, ldc, first, bias, 16, 32);
}

// q2_K super-blocks: d·s_j·q − dmin·m_j with 2-bit q and a 4-bit scale s_j
// and min m_j per sub-block j of 16 values (the low and high nibbles of
// scales[j]), in two halves of 128, each four runs of 32: value 128h + 32r
// + l (l < 32) at bits 2r of byte 32h + l of qs.
struct block_q2_K {
	uint8_t scales[16];
	uint8_t qs[64];
	ggml_fp16_t d, dmin;
};
_Static_assert(sizeof(struct block_q2_K) == 84, "q2_K blocks are 84 bytes");

// pack_q2k packs q2_K super-blocks [sb0, sb0+nsb) of weight rows [r0,
// r0+rows) (rows ≤ QK_MR; the others are zeros) of a (rows lda bytes
// apart) for tile_k, eight rows at a time.
static void pack_q2k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb) {
	const __m256i three = _mm256_set1_epi8(3);
	struct tile_sb16 * dst = panel;
	for (int64_t s = 0; s < nsb; s++, dst++) {
		for (int r8 = 0; r8 < QK_MR; r8 += 8) {
			const int g = r8 / QK_G, l0 = r8 % QK_G; // group, and its first lane
			const struct block_q2_K * blk[8];
			ggml_fp16_t h[2][8]; // d and dmin
			for (int l = 0; l < 8; l++) {
				const int lane = l0 + l;
				blk[l] = r8 + l < rows ? (const struct block_q2_K *)(a + (r0 + r8 + l) * lda) + sb0 + s : NULL;
				h[0][l] = blk[l] != NULL ? blk[l]->d : 0;
				h[1][l] = blk[l] != NULL ? blk[l]->dmin : 0;
				for (int j = 0; j < 16; j++) {
					const uint8_t sm = blk[l] != NULL ? blk[l]->scales[j] : 0;
					dst->sc[j][g][2 * lane] = dst->sc[j][g][2 * lane + 1] = sm & 15;
					dst->mn[j / 2][g][2 * lane + j % 2] = sm >> 4;
				}
			}
			f16_to_f32(h[0], dst->d[g] + l0, 8);
			f16_to_f32(h[1], dst->dmin[g] + l0, 8);
			for (int half = 0; half < 2; half++) {
				__m256i q[8];
				for (int l = 0; l < 8; l++) {
					q[l] = blk[l] != NULL ? _mm256_loadu_si256((const __m256i *)(blk[l]->qs + 32 * half)) : _mm256_setzero_si256();
				}
				for (int r = 0; r < 4; r++) { // run r: k = 128·half + 32r..
					__m256i v[8];
					for (int l = 0; l < 8; l++) {
						v[l] = _mm256_and_si256(_mm256_srli_epi16(q[l], 2 * r), three);
					}
					store_runs(dst->q[32 * half + 8 * r][g] + 4 * l0, v);
				}
			}
		}
	}
}

static void tile_q2k(const void * panel, int64_t nsb, const void * const xs[QK_NR], float * c, int64_t ldc, bool first,
                     const float * bias) {
	tile_k(panel, nsb, xs, c, ldc, first, bias, 16, 16);
}

// pm_int_product_op is the product dst [M, N] = a [K, M] · b of the kind
// userdata points to, plus src[2] (bias [M]) if any: src[1] holds b's rows
// quantized. A thread packs
// blocks of QK_MC rows of a over kind->kc blocks of K (L2), and multiplies
// each tile of them (L1) by QK_NC activation rows in turn (L2).
void pm_int_product_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const struct int_product * kind = userdata;
	const struct ggml_tensor * a = dst->src[0], * xq = dst->src[1];
	const float * bias = dst->src[2] != NULL ? (const float *)dst->src[2]->data : NULL;
	const int64_t nb = a->ne[0] / kind->k_block, M = a->ne[1], N = xq->ne[1], ldc = M;
	int64_t m0, m1, n0, n1;
	if (!product_split(M, N, QK_MR, QK_NR, ith, nth, &m0, &m1, &n0, &n1)) {
		return;
	}
	const int64_t tile_bytes = kind->kc * kind->tile_bytes;
	char * panel = kernel_alloc((size_t)(QK_MC / QK_MR * tile_bytes), "quantized product");
	float * c = (float *)dst->data;
	for (int64_t k0 = 0; k0 < nb; k0 += kind->kc) {
		const int64_t kc = nb - k0 < kind->kc ? nb - k0 : kind->kc;
		for (int64_t i0 = m0; i0 < m1; i0 += QK_MC) {
			const int64_t mc = m1 - i0 < QK_MC ? m1 - i0 : QK_MC, tiles = (mc + QK_MR - 1) / QK_MR;
			for (int64_t t = 0; t < tiles; t++) {
				const int64_t r = t * QK_MR;
				kind->pack(panel + t * tile_bytes, (const char *)a->data, a->nb[1], i0 + r,
				           mc - r < QK_MR ? (int)(mc - r) : QK_MR, k0, kc);
			}
			for (int64_t jc = n0; jc < n1; jc += QK_NC) {
				const int64_t jend = n1 - jc < QK_NC ? n1 : jc + QK_NC;
				for (int64_t t = 0; t < tiles; t++) {
					const int64_t rows = mc - t * QK_MR < QK_MR ? mc - t * QK_MR : QK_MR;
					for (int64_t j0 = jc; j0 < jend; j0 += QK_NR) {
						const int64_t cols = jend - j0 < QK_NR ? jend - j0 : QK_NR;
						const void * x[QK_NR];
						for (int n = 0; n < QK_NR; n++) {
							x[n] = (const char *)xq->data + (j0 + (n < cols ? n : cols - 1)) * xq->nb[1] + k0 * kind->act_bytes;
						}
						float * ct = c + j0 * ldc + i0 + t * QK_MR;
						// the bias once the last block of K is summed
						const float * bt = bias != NULL && k0 + kc == nb ? bias + i0 + t * QK_MR : NULL;
						if (rows == QK_MR && cols == QK_NR) {
							kind->tile(panel + t * tile_bytes, kc, x, ct, ldc, k0 == 0, bt);
							continue;
						}
						float tmp[QK_NR * QK_MR]; // the last rows or columns: through a whole tile
						kind->tile(panel + t * tile_bytes, kc, x, tmp, QK_MR, true, NULL);
						add_tile(ct, ldc, tmp, QK_MR, rows, cols, k0 == 0, bt);
					}
				}
			}
		}
	}
	free(panel);
}

static const struct int_product q4k_product = {256,      sizeof(struct tile_sb), sizeof(struct act_block), QK_KC,
                                                quantize_block, pack_q4k,          tile_q4k};
static const struct int_product q5k_product = {256,      sizeof(struct tile_sb), sizeof(struct act_block), QK_KC,
                                                quantize_block, pack_q5k,          tile_q5k};
static const struct int_product q2k_product = {256,        sizeof(struct tile_sb16), sizeof(struct act_block16), QK_KC,
                                                quantize_block16, pack_q2k,          tile_q2k};

// q6_K weights, d·s_j·w with w = q − 32 (−32 to 31) and an 8-bit s_j per
// sub-block j of 16 values, times activations quantized as q4_K's, offset
// to unsigned bytes u = a + 128 (vpmaddubsw multiplies unsigned bytes by
// signed ones: here the activations by the weights). Σ w·a = Σ w·u − 128·Σ w,
// and the second sum, scaled per sub-block, is the weights' alone: packed
// with them (off), it costs the tile nothing. Two steps' 16-bit sums
// cannot overflow (4 · 255 · 32 < 2^15), so each sub-block's scale is
// applied to its halves (vpmaddwd). BenchmarkMulMat (1280 × 1280 × 1024,
// one core of the Zen 3 dev VM): ggml's AVX2 product 23–24 GFLOP/s, ours
// widened to f32 54–56, so 81–116 (q4_K's 110–118 there).

// quantize_block_u quantizes 256 floats as quantize_block does, each q
// stored as the byte q + 128.
static void quantize_block_u(const float * x, void * out) {
	quantize_block(x, out);
	struct act_block * y = out;
	for (int i = 0; i < 256; i += 32) {
		const __m256i q = _mm256_loadu_si256((const __m256i *)(y->q + i));
		_mm256_storeu_si256((__m256i *)(y->q + i), _mm256_add_epi8(q, _mm256_set1_epi8((char)128)));
	}
}

// tile_q6 is one q6_K super-block of a tile's QK_MR weight rows, two groups
// of QK_G (the lanes): w[k/4][g] holds k..k+3 of each row of group g,
// sc[j][g] the 16-bit pair (s_j, s_j) of each row, off[g] −128·Σ_j s_j·Σ w
// of each row, d[g] its scale.
struct tile_q6 {
	int8_t w[64][2][4 * QK_G];
	int16_t sc[16][2][2 * QK_G];
	int32_t off[2][QK_G];
	float d[2][QK_G];
};

// block_q3_K is ggml's q3_K super-block: d·s_j·w with w = q − 4 (−4 to
// 3) and a 6-bit scale s_j − 32 per sub-block j of 16 values, in two halves
// of 128, each four runs of 32: value 128h + 32r + l (l < 32) has its low
// two bits at bits 2r of byte 32h + l of qs, its third (0: minus 4) at bit
// 4h + r of byte l of hmask.
struct block_q3_K {
	uint8_t hmask[32];
	uint8_t qs[64];
	uint8_t scales[12]; // the low four bits of s_j in byte j%8 (the low nibble for j < 8), the top two in byte 8 + j%4 at bits 2·(j/4)
	ggml_fp16_t d;
};
_Static_assert(sizeof(struct block_q3_K) == 110, "q3_K blocks are 110 bytes");

// q6k_runs is half h of a q6_K super-block's w (−32 to 31), run r in w[r].
static inline void q6k_runs(const struct block_q6_K * b, int h, __m256i w[4]) {
	const __m256i low = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30), offset = _mm256_set1_epi8(32);
	const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
	const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
	const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
	// each run's low four bits, then its top two (bits 2r of qh) at bits 4 and 5
	w[0] = _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), top));
	w[1] = _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), top));
	w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_and_si256(qh, top));
	w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), _mm256_and_si256(_mm256_srli_epi16(qh, 2), top));
	for (int r = 0; r < 4; r++) {
		w[r] = _mm256_sub_epi8(w[r], offset);
	}
}

// q3k_runs is half h of a q3_K super-block's w (−4 to 3), run r in w[r].
static inline void q3k_runs(const struct block_q3_K * b, int h, __m256i w[4]) {
	const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
	const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
	const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
	for (int r = 0; r < 4; r++) {
		const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * r), three);
		const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + r), _mm256_set1_epi8(1));
		w[r] = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 2)), four);
	}
}

// pack_sb16 packs super-blocks [sb0, sb0+nsb) of weight rows [r0, r0+rows)
// (rows ≤ QK_MR; the others are zeros) of a (rows lda bytes apart), q6_K
// or q3_K (t), eight rows at a time, as signed w with a scale per 16.
static inline __attribute__((always_inline)) void pack_sb16(void * panel, const char * a, int64_t lda, int64_t r0,
                                                            int rows, int64_t sb0, int64_t nsb, const enum ggml_type t) {
	const int64_t block_bytes = t == GGML_TYPE_Q6_K ? sizeof(struct block_q6_K) : sizeof(struct block_q3_K);
	struct tile_q6 * dst = panel;
	for (int64_t s = 0; s < nsb; s++, dst++) {
		for (int r8 = 0; r8 < QK_MR; r8 += 8) {
			const int g = r8 / QK_G, l0 = r8 % QK_G; // group, and its first lane
			const char * blk[8];
			ggml_fp16_t h[8];
			int16_t sc[8][16];
			int32_t off[8] = {0};
			for (int l = 0; l < 8; l++) {
				blk[l] = r8 + l < rows ? a + (r0 + r8 + l) * lda + (sb0 + s) * block_bytes : NULL;
				h[l] = 0;
				memset(sc[l], 0, sizeof sc[l]);
				if (blk[l] != NULL && t == GGML_TYPE_Q6_K) {
					const struct block_q6_K * b6 = (const struct block_q6_K *)blk[l];
					h[l] = b6->d;
					for (int j = 0; j < 16; j++) {
						sc[l][j] = b6->scales[j];
					}
				} else if (blk[l] != NULL) {
					const struct block_q3_K * b3 = (const struct block_q3_K *)blk[l];
					h[l] = b3->d;
					for (int j = 0; j < 16; j++) {
						const int low = j < 8 ? b3->scales[j] & 15 : b3->scales[j - 8] >> 4;
						sc[l][j] = (int16_t)((low | ((b3->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32);
					}
				}
				for (int j = 0; j < 16; j++) {
					dst->sc[j][g][2 * (l0 + l)] = dst->sc[j][g][2 * (l0 + l) + 1] = sc[l][j];
				}
			}
			f16_to_f32(h, dst->d[g] + l0, 8);
			for (int half = 0; half < 2; half++) {
				__m256i runs[8][4];
				for (int l = 0; l < 8; l++) {
					if (blk[l] == NULL) {
						runs[l][0] = runs[l][1] = runs[l][2] = runs[l][3] = _mm256_setzero_si256();
						continue;
					}
					if (t == GGML_TYPE_Q6_K) {
						q6k_runs((const struct block_q6_K *)blk[l], half, runs[l]);
					} else {
						q3k_runs((const struct block_q3_K *)blk[l], half, runs[l]);
					}
					for (int r = 0; r < 4; r++) { // Σ w of its two sub-blocks (bytes 0–15, 16–31), from Σ (w + 128)
						const __m256i sums =
						    _mm256_sad_epu8(_mm256_xor_si256(runs[l][r], _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256());
						const int j = 8 * half + 2 * r;
						off[l] -= 128 * sc[l][j] * (_mm256_extract_epi64(sums, 0) + _mm256_extract_epi64(sums, 1) - 2048);
						off[l] -= 128 * sc[l][j + 1] * (_mm256_extract_epi64(sums, 2) + _mm256_extract_epi64(sums, 3) - 2048);
					}
				}
				for (int r = 0; r < 4; r++) { // run r: k = 128·half + 32r..
					__m256i w[8];
					for (int l = 0; l < 8; l++) {
						w[l] = runs[l][r];
					}
					store_runs(dst->w[32 * half + 8 * r][g] + 4 * l0, w);
				}
			}
			memcpy(dst->off[g] + l0, off, sizeof off);
		}
	}
}

static void pack_q6k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb) {
	pack_sb16(panel, a, lda, r0, rows, sb0, nsb, GGML_TYPE_Q6_K);
}

static void pack_q3k(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t sb0, int64_t nsb) {
	pack_sb16(panel, a, lda, r0, rows, sb0, nsb, GGML_TYPE_Q3_K);
}

// tile_q6k adds (or stores, when first) the products of the QK_MR packed
// rows w over nsb q6_K super-blocks with activation rows x[0..QK_NR) (bytes
// q + 128) into c[j·ldc + i], then adds bias[i] if bias is not NULL. As
// tile_k, with the sub-blocks' scales applied every two steps.
static void tile_q6k(const void * panel, int64_t nsb, const void * const xs[QK_NR], float * c, int64_t ldc, bool first,
                     const float * bias) {
	const struct tile_q6 * w = panel;
	const struct act_block * const * x = (const struct act_block * const *)xs;
	for (int64_t s = 0; s < nsb; s++, w++, first = false) {
		const uint8_t * xu[QK_NR];
		vq acc[2][QK_NR];
		const vq off0 = q_load(w->off[0]), off1 = q_load(w->off[1]);
		for (int n = 0; n < QK_NR; n++) {
			xu[n] = (const uint8_t *)x[n][s].q;
			acc[0][n] = off0;
			acc[1][n] = off1;
		}
		for (int k0 = 0; k0 < 256; k0 += 8) {
			vq h[2][QK_NR];
#pragma GCC unroll 2
			for (int i = 0; i < 2; i++) {
				const vq w0 = q_load(w->w[k0 / 4 + i][0]), w1 = q_load(w->w[k0 / 4 + i][1]);
#pragma GCC unroll 8
				for (int n = 0; n < QK_NR; n++) {
					const vq u = bcast(xu[n] + k0 + 4 * i);
					h[0][n] = i == 0 ? q_maddubs(u, w0) : q_add16(h[0][n], q_maddubs(u, w0));
					h[1][n] = i == 0 ? q_maddubs(u, w1) : q_add16(h[1][n], q_maddubs(u, w1));
					in_register(h[0][n]);
					in_register(h[1][n]);
				}
			}
			const vq s0 = q_load(w->sc[k0 / 16][0]), s1 = q_load(w->sc[k0 / 16][1]);
			for (int n = 0; n < QK_NR; n++) {
				acc[0][n] = q_add32(acc[0][n], q_madd(h[0][n], s0));
				acc[1][n] = q_add32(acc[1][n], q_madd(h[1][n], s1));
			}
		}
		for (int g = 0; g < 2; g++) {
			const vqf d = qf_load(w->d[g]);
			for (int n = 0; n < QK_NR; n++) {
				vqf r = qf_mul(qf_mul(d, qf_cvt(acc[g][n])), qf_set1(x[n][s].d));
				in_register(r); // rounded before it is added: GCC would fuse the add into the multiply, on some paths only
				float * cn = c + n * ldc + QK_G * g;
				const vqf y = first ? r : qf_add(r, qf_load(cn));
				qf_store(cn, bias != NULL && s == nsb - 1 ? qf_add(y, qf_load(bias + QK_G * g)) : y);
			}
		}
	}
}

static const struct int_product q6k_product = {256,      sizeof(struct tile_q6), sizeof(struct act_block), QK_KC,
                                                quantize_block_u, pack_q6k,       tile_q6k};
// q3_K's values fit the same tiles: w = q − 4, scales of 6 bits minus 32.
static const struct int_product q3k_product = {256,      sizeof(struct tile_q6), sizeof(struct act_block), QK_KC,
                                                quantize_block_u, pack_q3k,       tile_q6k};

// The 32-value types q4_0, q4_1, q5_0 and q5_1: each value d·q + m, with
// q unsigned (4 or 5 bits), d an f16 scale per block and m −8d (q4_0),
// −16d (q5_0) or the block's own f16 (q4_1, q5_1). The activations are
// quantized per 32 as for q4_K (|a| ≤ 127) with s = d_a·Σa, and each
// block's sum is d·d_a·Σ q·a + m·s: the integer sums as q4_K's (vpmaddubsw,
// the weights unsigned), then per block to floats, as ggml's q4_0 × q8_0
// products do. The 16-bit sums of 4-bit weights cannot overflow over a
// block (8 · 2 · 15 · 127 < 2^15), those of 5-bit ones over half a block (4 ·
// 2 · 31 · 127 < 2^15), so q5's halves become floats apart. BenchmarkMulMat
// (1280 × 1280 × 1024, one core of the Zen 3 dev VM), ggml's AVX2 product →
// ours: q4_0 40–47 GFLOP/s (50–67 repacked, 57–58 widened to f32 by our
// product) → 103–134, q4_1 20–22 → 105–112, q5_0 26–34 → 88–119, q5_1
// 20–23 → 87–113 (q4_K 105–155 in the same runs).
struct block_q4_0 {
	ggml_fp16_t d;
	uint8_t qs[16]; // value j (< 16): low nibble of byte j, value j+16: its high nibble
};
struct block_q4_1 {
	ggml_fp16_t d, m;
	uint8_t qs[16];
};
struct block_q5_0 {
	ggml_fp16_t d;
	uint8_t qh[4];  // bit j: the fifth bit of value j
	uint8_t qs[16]; // the low four bits, as q4_0's
};
struct block_q5_1 {
	ggml_fp16_t d, m;
	uint8_t qh[4];
	uint8_t qs[16];
};
_Static_assert(sizeof(struct block_q4_0) == 18 && sizeof(struct block_q4_1) == 20 && sizeof(struct block_q5_0) == 22 &&
                   sizeof(struct block_q5_1) == 24,
               "ggml's block sizes");

// nibbles32 is a block's low nibbles (values 0–15), then its high ones.
static inline __m256i nibbles32(const uint8_t qs[16]) {
	const __m128i b = _mm_loadu_si128((const __m128i *)qs), low = _mm_set1_epi8(0x0F);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), low), _mm_and_si128(b, low));
}

// fifth_bits32 is 0x10 in byte j where bit j of the 32 bits at qh is set.
static inline __m256i fifth_bits32(const uint8_t qh[4]) {
	uint32_t bits;
	memcpy(&bits, qh, 4);
	// byte j gets byte j/8 of the bits, then keeps its bit j%8
	const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits),
	                                           _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
	                                                             0x0101010101010101, 0x0000000000000000));
	const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
	return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

// act32 is 32 activations x ≈ d·q, |q| ≤ 127, with s = d·Σq (for m).
struct act32 {
	float d, s;
	int8_t q[32];
};
_Static_assert(sizeof(struct act32) == 40, "32-value activation blocks are 40 bytes");

static void quantize_act32(const float * x, void * out) {
	struct act32 * y = out;
	__m256i q[4];
	y->d = quantize_levels(x, 127.0f, q);
	y->s = y->d * (float)hsum32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
	_mm256_storeu_si256((__m256i *)y->q, bytes32(q));
}

// tile_b32 is one block of a tile's QK_MR weight rows, two groups of QK_G
// (the lanes): q[k/4][g] holds k..k+3 of each row of group g, d[g] and
// m[g] each row's scale and offset.
struct tile_b32 {
	uint8_t q[8][2][4 * QK_G];
	float d[2][QK_G], m[2][QK_G];
};

// pack_b32 packs blocks [b0, b0+nb) of weight rows [r0, r0+rows) (rows ≤
// QK_MR; the others are zeros) of a (rows lda bytes apart) of type t,
// eight rows at a time.
static inline __attribute__((always_inline)) void pack_b32(void * panel, const char * a, int64_t lda, int64_t r0,
                                                           int rows, int64_t b0, int64_t nb, const enum ggml_type t) {
	const int64_t block_bytes = t == GGML_TYPE_Q4_0   ? sizeof(struct block_q4_0)
	                            : t == GGML_TYPE_Q4_1 ? sizeof(struct block_q4_1)
	                            : t == GGML_TYPE_Q5_0 ? sizeof(struct block_q5_0)
	                                                  : sizeof(struct block_q5_1);
	struct tile_b32 * dst = panel;
	for (int64_t b = 0; b < nb; b++, dst++) {
		for (int r8 = 0; r8 < QK_MR; r8 += 8) {
			const int g = r8 / QK_G, l0 = r8 % QK_G; // group, and its first lane
			__m256i q[8];
			ggml_fp16_t h[2][8]; // d, and m where the block has its own
			for (int l = 0; l < 8; l++) {
				const char * blk = r8 + l < rows ? a + (r0 + r8 + l) * lda + (b0 + b) * block_bytes : NULL;
				q[l] = _mm256_setzero_si256();
				h[0][l] = h[1][l] = 0;
				if (blk == NULL) {
					continue;
				}
				memcpy(h[0] + l, blk, sizeof h[0][l]);
				switch (t) {
				case GGML_TYPE_Q4_0:
					q[l] = nibbles32(((const struct block_q4_0 *)blk)->qs);
					break;
				case GGML_TYPE_Q4_1:
					h[1][l] = ((const struct block_q4_1 *)blk)->m;
					q[l] = nibbles32(((const struct block_q4_1 *)blk)->qs);
					break;
				case GGML_TYPE_Q5_0:
					q[l] = _mm256_or_si256(nibbles32(((const struct block_q5_0 *)blk)->qs),
					                       fifth_bits32(((const struct block_q5_0 *)blk)->qh));
					break;
				default:
					h[1][l] = ((const struct block_q5_1 *)blk)->m;
					q[l] = _mm256_or_si256(nibbles32(((const struct block_q5_1 *)blk)->qs),
					                       fifth_bits32(((const struct block_q5_1 *)blk)->qh));
				}
			}
			f16_to_f32(h[0], dst->d[g] + l0, 8);
			if (t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q5_0) { // m = −8d or −16d, exactly
				const __m256 d = _mm256_loadu_ps(dst->d[g] + l0);
				_mm256_storeu_ps(dst->m[g] + l0, _mm256_mul_ps(d, _mm256_set1_ps(t == GGML_TYPE_Q4_0 ? -8.0f : -16.0f)));
			} else {
				f16_to_f32(h[1], dst->m[g] + l0, 8);
			}
			store_runs(dst->q[0][g] + 4 * l0, q);
		}
	}
}

// store_tile stores (first) or adds a tile's float sums f into c[j·ldc +
// i], then adds bias[i] if bias is not NULL.
static inline void store_tile(vqf f[2][QK_NR], float * c, int64_t ldc, bool first, const float * bias) {
	for (int g = 0; g < 2; g++) {
		for (int n = 0; n < QK_NR; n++) {
			float * cn = c + n * ldc + QK_G * g;
			const vqf r = first ? f[g][n] : qf_add(f[g][n], qf_load(cn));
			qf_store(cn, bias != NULL ? qf_add(r, qf_load(bias + QK_G * g)) : r);
		}
	}
}

// tile_blocks32 adds (or stores, when first) the products of the QK_MR packed
// rows w over nb blocks with activation rows x[0..QK_NR) into c[j·ldc + i],
// then adds bias[i] if bias is not NULL; span is the values whose 16-bit
// sums are turned into floats at once (32 for 4-bit weights, 16 for 5-bit).
static inline __attribute__((always_inline)) void tile_blocks32(const void * panel, int64_t nb,
                                                                const void * const xs[QK_NR], float * c, int64_t ldc,
                                                                bool first, const float * bias, const int span) {
	const struct tile_b32 * w = panel;
	const struct act32 * const * x = (const struct act32 * const *)xs;
	const vq ones = q_set1(0x00010001);
	vqf f[2][QK_NR];
	for (int n = 0; n < QK_NR; n++) {
		f[0][n] = f[1][n] = qf_set1(0.0f);
	}
	for (int64_t b = 0; b < nb; b++, w++) {
		for (int k0 = 0; k0 < 32; k0 += span) {
			vq h[2][QK_NR];
			for (int n = 0; n < QK_NR; n++) {
				h[0][n] = h[1][n] = q_zero();
			}
			// as tile_k's steps
#pragma GCC unroll 8
			for (int i = 0; i < span / 4; i++) {
				vq w0 = q_load(w->q[k0 / 4 + i][0]), w1 = q_load(w->q[k0 / 4 + i][1]);
				in_register(w0);
				in_register(w1);
#pragma GCC unroll 8
				for (int n = 0; n < QK_NR; n++) {
					const vq v = bcast(x[n][b].q + k0 + 4 * i);
					h[0][n] = q_dot4(h[0][n], w0, v);
					h[1][n] = q_dot4(h[1][n], w1, v);
					in_register(h[0][n]);
					in_register(h[1][n]);
				}
			}
			const vqf d0 = qf_load(w->d[0]), d1 = qf_load(w->d[1]);
			for (int n = 0; n < QK_NR; n++) {
				const vqf da = qf_set1(x[n][b].d);
				f[0][n] = qf_fma(qf_cvt(q_madd(h[0][n], ones)), qf_mul(d0, da), f[0][n]);
				f[1][n] = qf_fma(qf_cvt(q_madd(h[1][n], ones)), qf_mul(d1, da), f[1][n]);
			}
		}
		const vqf m0 = qf_load(w->m[0]), m1 = qf_load(w->m[1]);
		for (int n = 0; n < QK_NR; n++) {
			const vqf s = qf_set1(x[n][b].s);
			f[0][n] = qf_fma(m0, s, f[0][n]);
			f[1][n] = qf_fma(m1, s, f[1][n]);
		}
	}
	store_tile(f, c, ldc, first, bias);
}

#define B32_PRODUCT(type, name, span)                                                                                \
	static void pack_##name(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t b0, int64_t nb) { \
		pack_b32(panel, a, lda, r0, rows, b0, nb, type);                                                             \
	}                                                                                                                \
	static void tile_##name(const void * panel, int64_t nb, const void * const xs[QK_NR], float * c, int64_t ldc,     \
	                        bool first, const float * bias) {                                                        \
		tile_blocks32(panel, nb, xs, c, ldc, first, bias, span);                                                        \
	}                                                                                                                \
	static const struct int_product name##_product = {32, sizeof(struct tile_b32), sizeof(struct act32), 16,         \
	                                                  quantize_act32, pack_##name, tile_##name};
B32_PRODUCT(GGML_TYPE_Q4_0, q4_0, 32)
B32_PRODUCT(GGML_TYPE_Q4_1, q4_1, 32)
B32_PRODUCT(GGML_TYPE_Q5_0, q5_0, 16)
B32_PRODUCT(GGML_TYPE_Q5_1, q5_1, 16)

// q8_0 weights (d·q per 32 values, 8-bit q) times activations quantized
// per 32 values, in 32-bit integer sums scaled by both blocks' scales.
// With VNNI (vpdpbusd: four byte products per lane and instruction) the
// activations are rounded to 8 bits, as ggml's q8_0 × q8_0 does: at most
// 2^-8 of a block's largest activation per value. Elsewhere they are
// rounded to 16 bits (2^-16) and multiplied in pairs (vpmaddwd): 8 bits
// would be no faster there, as the sums of 8-bit products either saturate
// (vpmaddubsw) or take a sign trick per product. BenchmarkMulMat (1280 ×
// 1280 × 1024, Zen 5 dev VM), 16 → 8 bits: AVX-512 VNNI 448–470 → 803–908
// GFLOP/s, AVX-VNNI 244–252 → 368–380; 16 bits with AVX2 (no VNNI)
// 224–276 (our f32 product 199–212).

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define Q8_BYTES 1
static inline vq q_dot4u(vq h, vq u, vq w) { return _mm512_dpbusd_epi32(h, u, w); }
#elif !defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define Q8_BYTES 1
static inline vq q_dot4u(vq h, vq u, vq w) { return _mm256_dpbusd_epi32(h, u, w); }
#elif !defined(__AVX512BW__) && defined(__AVXVNNI__)
#define Q8_BYTES 1
static inline vq q_dot4u(vq h, vq u, vq w) { return _mm256_dpbusd_avx_epi32(h, u, w); }
#else
#define Q8_BYTES 0
#endif

#if Q8_BYTES

// act8 is 32 activations x ≈ d·(u − 128): the 8-bit values offset to
// unsigned bytes, as vpdpbusd multiplies them.
struct act8 {
	float d;
	uint8_t u[32];
};
_Static_assert(sizeof(struct act8) == 36, "8-bit activation blocks are 36 bytes");

// quantize_q8 quantizes 32 floats: q = round(x·127/max|x|), as bytes q + 128.
static void quantize_q8(const float * x, void * out) {
	struct act8 * y = out;
	__m256i q[4];
	y->d = quantize_levels(x, 127.0f, q);
	_mm256_storeu_si256((__m256i *)y->u, _mm256_add_epi8(bytes32(q), _mm256_set1_epi8((char)128)));
}

// tile_b8 is one q8_0 block of a tile's QK_MR weight rows, two groups of
// QK_G (the lanes): q[k/4][g] holds k..k+3 of each row of group g, off[g]
// −128 times each row's sum of q (undoing the activations' offset), d[g]
// each row's scale.
struct tile_b8 {
	int8_t q[8][2][4 * QK_G];
	int32_t off[2][QK_G];
	float d[2][QK_G];
};

// q8_store_rows stores eight weight rows' q (a vector each) at lanes
// l0.. of group g of a packed block, with their offsets.
static inline void q8_store_rows(struct tile_b8 * dst, int g, int l0, __m256i q[8]) {
	for (int l = 0; l < 8; l++) {
		int8_t v[32];
		_mm256_storeu_si256((__m256i *)v, q[l]);
		int32_t sum = 0;
		for (int k = 0; k < 32; k++) {
			sum += v[k];
		}
		dst->off[g][l0 + l] = -128 * sum;
	}
	store_runs(dst->q[0][g] + 4 * l0, q);
}

// q8_start is the sums' start of group g of a tile's block: the rows'
// offsets, so that they end as Σ q·(u − 128).
static inline vq q8_start(const struct tile_b8 * w, int g) { return q_load(w->off[g]); }

// Q8_STEPS steps of 4 k per block: q8_bcast is step p's activations of a
// row in every lane, q8_dot adds their products with a weight vector.
enum { Q8_STEPS = 8 };
static inline vq q8_bcast(const struct act8 * x, int p) { return bcast(x->u + 4 * p); }
static inline vq q8_dot(vq h, vq w, vq x) { return q_dot4u(h, x, w); }
typedef struct act8 q8_act;
#else // 16-bit activations

struct act16 {
	float d;
	int16_t q[32];
};
_Static_assert(sizeof(struct act16) == 68, "16-bit activation blocks are 68 bytes");

// quantize_q8 quantizes 32 floats: q = round(x·32767/max|x|).
static void quantize_q8(const float * x, void * out) {
	struct act16 * y = out;
	__m256i q[4];
	y->d = quantize_levels(x, 32767.0f, q);
	for (int h = 0; h < 2; h++) {
		// packs interleave the 128-bit halves; the permutation puts them back
		const __m256i q16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2 * h], q[2 * h + 1]), 0xD8);
		_mm256_storeu_si256((__m256i *)(y->q + 16 * h), q16);
	}
}

// tile_b8 is one q8_0 block of a tile's QK_MR weight rows, two groups of
// QK_G (the lanes): q[p][g] holds k = 2p, 2p+1 of each row of group g as
// 16-bit values, d[g] each row's scale.
struct tile_b8 {
	int16_t q[16][2][2 * QK_G];
	float d[2][QK_G];
};

// q8_store_rows stores eight weight rows' q (a vector each) widened to 16
// bits at lanes l0.. of group g of a packed block.
static inline void q8_store_rows(struct tile_b8 * dst, int g, int l0, __m256i q[8]) {
	__m256i lo[8], hi[8]; // k 0..15 and 16..31, as pairs
	for (int l = 0; l < 8; l++) {
		lo[l] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q[l]));
		hi[l] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q[l], 1));
	}
	transpose8(lo);
	transpose8(hi);
	for (int i = 0; i < 8; i++) {
		_mm256_storeu_si256((__m256i *)(dst->q[i][g] + 2 * l0), lo[i]);
		_mm256_storeu_si256((__m256i *)(dst->q[8 + i][g] + 2 * l0), hi[i]);
	}
}

static inline vq q8_start(const struct tile_b8 * w, int g) {
	(void)w, (void)g;
	return q_zero();
}

// Q8_STEPS steps of 2 k per block.
enum { Q8_STEPS = 16 };
static inline vq q8_bcast(const struct act16 * x, int p) { return bcast(x->q + 2 * p); }
static inline vq q8_dot(vq h, vq w, vq x) { return q_add32(h, q_madd(w, x)); }
typedef struct act16 q8_act;
#endif

// pack_q8 packs q8_0 blocks [b0, b0+nb) of weight rows [r0, r0+rows) (rows
// ≤ QK_MR; the others are zeros) of a (rows lda bytes apart), eight rows at
// a time.
static void pack_q8(void * panel, const char * a, int64_t lda, int64_t r0, int rows, int64_t b0, int64_t nb) {
	struct tile_b8 * dst = panel;
	for (int64_t b = 0; b < nb; b++, dst++) {
		for (int r8 = 0; r8 < QK_MR; r8 += 8) {
			__m256i q[8];
			ggml_fp16_t h[8];
			for (int l = 0; l < 8; l++) {
				const struct block_q8_0 * blk = r8 + l < rows ? (const struct block_q8_0 *)(a + (r0 + r8 + l) * lda) + b0 + b : NULL;
				q[l] = blk != NULL ? _mm256_loadu_si256((const __m256i *)blk->q) : _mm256_setzero_si256();
				h[l] = blk != NULL ? blk->d : 0;
			}
			f16_to_f32(h, dst->d[r8 / QK_G] + r8 % QK_G, 8);
			q8_store_rows(dst, r8 / QK_G, r8 % QK_G, q);
		}
	}
}

// tile_q8 adds (or stores, when first) the products of the QK_MR packed
// rows w over nb q8_0 blocks with activation rows x[0..QK_NR) into
// c[j·ldc + i], in float sums of each block's 32-bit sum times both scales,
// then adds bias[i] if bias is not NULL.
static void tile_q8(const void * panel, int64_t nb, const void * const xs[QK_NR], float * c, int64_t ldc, bool first,
                    const float * bias) {
	const struct tile_b8 * w = panel;
	const q8_act * x[QK_NR];
	vqf f[2][QK_NR];
	for (int n = 0; n < QK_NR; n++) {
		x[n] = xs[n];
		f[0][n] = f[1][n] = qf_set1(0.0f);
	}
	for (int64_t b = 0; b < nb; b++, w++) {
		vq h[2][QK_NR];
		const vq h0 = q8_start(w, 0), h1 = q8_start(w, 1);
		for (int n = 0; n < QK_NR; n++) {
			h[0][n] = h0;
			h[1][n] = h1;
		}
		// As tile_k's steps, and each weight vector loaded once (GCC would
		// load it again for each activation row): BenchmarkMulMat on the
		// Zen 3 dev VM (AVX2, 16-bit activations): 73–101 GFLOP/s before,
		// 103–132 so.
#pragma GCC unroll 16
		for (int p = 0; p < Q8_STEPS; p++) {
			vq w0 = q_load(w->q[p][0]), w1 = q_load(w->q[p][1]);
			in_register(w0);
			in_register(w1);
#pragma GCC unroll 8
			for (int n = 0; n < QK_NR; n++) {
				const vq v = q8_bcast(x[n] + b, p);
				h[0][n] = q8_dot(h[0][n], w0, v);
				h[1][n] = q8_dot(h[1][n], w1, v);
				in_register(h[0][n]);
				in_register(h[1][n]);
			}
		}
		const vqf d0 = qf_load(w->d[0]), d1 = qf_load(w->d[1]);
		for (int n = 0; n < QK_NR; n++) {
			const vqf da = qf_set1(x[n][b].d);
			f[0][n] = qf_fma(qf_cvt(h[0][n]), qf_mul(d0, da), f[0][n]);
			f[1][n] = qf_fma(qf_cvt(h[1][n]), qf_mul(d1, da), f[1][n]);
		}
	}
	store_tile(f, c, ldc, first, bias);
}

// 16 blocks (512 of K) at once: a tile's panel is 10 or 20 KB with 8-bit
// activations, 17 or 35 KB with 16 (8 or 16 lanes; L1).
static const struct int_product q8_product = {32,          sizeof(struct tile_b8), sizeof(q8_act), 16,
                                              quantize_q8, pack_q8,                tile_q8};

// int_kind is our integer product of weights of type t, or NULL.
static const struct int_product * int_kind(enum ggml_type t) {
	switch (t) {
	case GGML_TYPE_Q4_K:
		return &q4k_product;
	case GGML_TYPE_Q5_K:
		return &q5k_product;
	case GGML_TYPE_Q6_K:
		return &q6k_product;
	case GGML_TYPE_Q3_K:
		return &q3k_product;
	case GGML_TYPE_Q2_K:
		return &q2k_product;
	case GGML_TYPE_Q4_0:
		return &q4_0_product;
	case GGML_TYPE_Q4_1:
		return &q4_1_product;
	case GGML_TYPE_Q5_0:
		return &q5_0_product;
	case GGML_TYPE_Q5_1:
		return &q5_1_product;
	case GGML_TYPE_Q8_0:
		return &q8_product;
	default:
		return NULL;
	}
}

bool pm_mul_mat_takes_int(enum ggml_type type) { return int_kind(type) != NULL; }

int pm_mul_mat_q8_levels(void) { return Q8_BYTES ? 127 : 32767; }

bool pm_mul_mat_int_fits(const struct ggml_tensor * a, const struct ggml_tensor * b) {
	const struct int_product * kind = int_kind(a->type);
	return kind != NULL && a->ne[0] % kind->k_block == 0 && b->ne[1] * b->ne[2] * b->ne[3] >= QK_MIN_N && a->ne[1] >= 16;
}

// pm_mul_mat_int is the graph of the product: the activations quantized,
// then multiplied.
struct ggml_tensor * pm_mul_mat_int(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
                                    struct ggml_tensor * bias) {
	const struct int_product * kind = int_kind(a->type);
	const int64_t N = b->ne[1] * b->ne[2] * b->ne[3];
	struct ggml_tensor * src[1] = {b}; // into rows of blocks (I32 for the bytes' size)
	struct ggml_tensor * xq = ggml_custom_4d(ctx, GGML_TYPE_I32, a->ne[0] / kind->k_block * kind->act_bytes / 4, N, 1, 1, src,
	                                         1, pm_quantize_rows_op, GGML_N_TASKS_MAX, (void *)kind);
	ggml_set_name(xq, "QUANTIZE (ours)");
	struct ggml_tensor * args[3] = {a, xq, bias};
	struct ggml_tensor * t = ggml_custom_4d(ctx, GGML_TYPE_F32, a->ne[1], b->ne[1], b->ne[2], b->ne[3], args,
	                                        bias != NULL ? 3 : 2, pm_int_product_op, GGML_N_TASKS_MAX, (void *)kind);
	char name[PM_GGML_MAX_NAME];
	snprintf(name, sizeof name, "MUL_MAT %s (ours)", ggml_type_name(a->type));
	return ggml_set_name(t, name);
}

#else // without AVX2 the quantized products are ggml's (q8_0's our f32 product)

int pm_mul_mat_q8_levels(void) { return 0; }

void pm_int_product_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)dst, (void)ith, (void)nth, (void)userdata;
	abort();
}

bool pm_mul_mat_takes_int(enum ggml_type type) {
	(void)type;
	return false;
}

bool pm_mul_mat_int_fits(const struct ggml_tensor * a, const struct ggml_tensor * b) {
	(void)a, (void)b;
	return false;
}

struct ggml_tensor * pm_mul_mat_int(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
                                    struct ggml_tensor * bias) {
	(void)ctx, (void)a, (void)b, (void)bias;
	abort();
}

#endif
