// Our decoders of ggml's quantized blocks to floats, for the weights our f32
// product widens as it packs them (cpu_gemm.c, PM_WIDENS_ANY). ggml's own
// decoders are scalar C: 1.4–4 ns a value on one core of the Zen 3 dev VM
// (q3_K's the slowest), which at 128 activation rows cost about a third as
// much as the product itself; these take 0.15–0.2 ns.
//
// Each value is the one ggml's decoder gives, bit for bit: the block's f16
// factors times small integers, which is exact (f16's 11 bits times at most
// 10), plus for q2_K an offset, rounded once as in ggml's
// (TestDecodeRow compares every type on random bytes). Written from the
// formats in ggml-common.h.
#include "cpu_internal.h"

#if PM_DECODES
// Super-blocks of 256 values in two halves of 128, each four runs of 32:
// value 128h + 32j + l (l < 32) is scaled by sub-block 8h + 2j + l/16.
struct block_q2_K {
	uint8_t scales[16]; // sub-block s: d·(low nibble), and dmin·(high nibble) to subtract
	uint8_t qs[64];     // 2 bits of value 128h+32j+l at bits 2j of byte 32h+l
	ggml_fp16_t d, dmin;
};
struct block_q3_K {
	uint8_t hmask[32]; // bit 4h+j of byte l: the third bit of value 128h+32j+l (0: minus 4)
	uint8_t qs[64];    // its low 2 bits, as q2_K's
	uint8_t scales[12]; // 16 scales of 6 bits, each minus 32
	ggml_fp16_t d;
};
_Static_assert(sizeof(struct block_q2_K) == 84 && sizeof(struct block_q3_K) == 110, "ggml's block sizes");

static inline float dec_half(ggml_fp16_t h) { return _cvtsh_ss(h); }

// dec_floats8 is 8 bytes of q (from byte 8·g), signed or not, as floats.
static inline __m256 dec_floats8(__m256i q, int g, bool is_signed) {
	const __m128i h = g < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
	const __m128i b = g % 2 == 0 ? h : _mm_srli_si128(h, 8);
	return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b));
}

// dec_store32 writes 32 signed bytes times s (the first 16) and s2 (the rest).
static inline void dec_store32(float * y, __m256i q, float s, float s2) {
	for (int g = 0; g < 4; g++) {
		_mm256_storeu_ps(y + 8 * g, _mm256_mul_ps(dec_floats8(q, g, true), _mm256_set1_ps(g < 2 ? s : s2)));
	}
}

// dec_store32_affine writes 32 unsigned bytes q as q·d + m (d0 and m0
// for the first 16, d1 and m1 for the rest), rounded once as ggml's: q·d is
// exact.
static inline void dec_store32_affine(float * y, __m256i q, float d0, float m0, float d1, float m1) {
	for (int g = 0; g < 4; g++) {
		_mm256_storeu_ps(y + 8 * g, _mm256_fmadd_ps(dec_floats8(q, g, false), _mm256_set1_ps(g < 2 ? d0 : d1),
		                                            _mm256_set1_ps(g < 2 ? m0 : m1)));
	}
}

static void decode_q2_K(const struct block_q2_K * b, float * y, int64_t blocks) {
	const __m256i three = _mm256_set1_epi8(3);
	for (int64_t i = 0; i < blocks; i++) {
		const float d = dec_half(b[i].d), dmin = dec_half(b[i].dmin);
		for (int h = 0; h < 2; h++) {
			const __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
			for (int j = 0; j < 4; j++, y += 32) {
				const uint8_t s0 = b[i].scales[8 * h + 2 * j], s1 = b[i].scales[8 * h + 2 * j + 1];
				// d·(s & 15)·q − dmin·(s >> 4)
				dec_store32_affine(y, _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three), d * (float)(s0 & 15),
				                   -(dmin * (float)(s0 >> 4)), d * (float)(s1 & 15), -(dmin * (float)(s1 >> 4)));
			}
		}
	}
}

// q3_scales unpacks a q3_K super-block's 16 scales of 6 bits, each minus
// 32: the low four bits of scale s in byte s%8 (the low nibble for s < 8,
// else the high), the top two in byte 8 + s%4 at bits 2·(s/4).
static inline void q3_scales(const uint8_t packed[12], int scales[16]) {
	for (int s = 0; s < 16; s++) {
		const int low = s < 8 ? packed[s] & 15 : packed[s - 8] >> 4;
		scales[s] = (low | ((packed[8 + s % 4] >> (2 * (s / 4))) & 3) << 4) - 32;
	}
}

static void decode_q3_K(const struct block_q3_K * b, float * y, int64_t blocks) {
	const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
	for (int64_t i = 0; i < blocks; i++) {
		const float d = dec_half(b[i].d);
		int scales[16];
		q3_scales(b[i].scales, scales);
		const __m256i hm = _mm256_loadu_si256((const __m256i *)b[i].hmask);
		for (int h = 0; h < 2; h++) {
			const __m256i q = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
			for (int j = 0; j < 4; j++, y += 32) {
				const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three);
				const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one); // 0: minus 4
				const __m256i v = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 2)), four);
				dec_store32(y, v, d * (float)scales[8 * h + 2 * j], d * (float)scales[8 * h + 2 * j + 1]);
			}
		}
	}
}

#endif

bool pm_decode_row(enum ggml_type type, const void * x, float * y, int64_t n) {
#if PM_DECODES
	if (n % 256 != 0) {
		return false;
	}
	switch (type) {
	case GGML_TYPE_Q2_K:
		decode_q2_K(x, y, n / 256);
		return true;
	case GGML_TYPE_Q3_K:
		decode_q3_K(x, y, n / 256);
		return true;
	default:
		return false;
	}
#else
	(void)type, (void)x, (void)y, (void)n;
	return false;
#endif
}
