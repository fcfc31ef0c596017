// Our decoder of ggml's q2_K blocks to floats, for the weights our f32
// product widens as it packs them (cpu_gemm.c, PM_WIDENS_ANY): the one
// quantized type of ours without an integer product (cpu_quant.c; session
// 30 had decoders of q4_0, q4_1, q5_0, q5_1 and q3_K too). ggml's own
// decoders are scalar C: 1.4–4 ns a value on one core of the Zen 3 dev VM,
// which at 128 activation rows cost about a third as much as the product
// itself; this takes 0.15–0.2 ns.
//
// Each value is the one ggml's decoder gives, bit for bit: the block's f16
// factors times small integers, which is exact (f16's 11 bits times at most
// 10), plus an offset, rounded once as in ggml's (TestDecodeRow compares
// them on random bytes). Written from the format in ggml-common.h.
#include "cpu_internal.h"

#if PM_DECODES
// Super-blocks of 256 values in two halves of 128, each four runs of 32:
// value 128h + 32j + l (l < 32) is scaled by sub-block 8h + 2j + l/16.
struct block_q2_K {
	uint8_t scales[16]; // sub-block s: d·(low nibble), and dmin·(high nibble) to subtract
	uint8_t qs[64];     // 2 bits of value 128h+32j+l at bits 2j of byte 32h+l
	ggml_fp16_t d, dmin;
};
_Static_assert(sizeof(struct block_q2_K) == 84, "ggml's block size");

static inline float dec_half(ggml_fp16_t h) { return _cvtsh_ss(h); }

// dec_store32_affine writes 32 unsigned bytes q as q·d + m (d0 and m0
// for the first 16, d1 and m1 for the rest), rounded once as ggml's: q·d is
// exact.
static inline void dec_store32_affine(float * y, __m256i q, float d0, float m0, float d1, float m1) {
	for (int g = 0; g < 4; g++) { // bytes 8g..8g+7
		const __m128i h = g < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
		const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(g % 2 == 0 ? h : _mm_srli_si128(h, 8)));
		_mm256_storeu_ps(y + 8 * g, _mm256_fmadd_ps(v, _mm256_set1_ps(g < 2 ? d0 : d1), _mm256_set1_ps(g < 2 ? m0 : m1)));
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
	default:
		return false;
	}
#else
	(void)type, (void)x, (void)y, (void)n;
	return false;
#endif
}
