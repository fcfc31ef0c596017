// Shared by our CPU kernels (cpu_*.c): vectors, thread splits, scratch
// memory, and the matrix product the Winograd convolution reuses. Not part
// of the Go bindings' C surface (cpu_kernels.h).
#ifndef PHOTOMAKER_CPU_INTERNAL_H
#define PHOTOMAKER_CPU_INTERNAL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_targets.h" // before cpu_kernels.h: its names renamed
#include "cpu_kernels.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

// Vectors as wide as the target's registers: 16 floats with AVX-512, 8
// with AVX, else 4 (SSE2, NEON). (Wider than the target's registers they
// would change the calling convention.)
#if defined(__AVX512F__)
#define PM_LANES 16
#elif defined(__AVX__)
#define PM_LANES 8
#else
#define PM_LANES 4
#endif
typedef float vf __attribute__((vector_size(PM_LANES * 4)));
typedef int32_t vi __attribute__((vector_size(PM_LANES * 4)));

// splat fills a vector with x. (Not (vf){0} + x: 0 + x is not x for
// x = −0, so the compiler must keep the addition.)
#if PM_LANES == 16
static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline vi splat_i(int32_t x) { return (vi){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
#elif PM_LANES == 8
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

// product_split is thread ith's share of an M×N product computed in tiles
// of mr rows by nr columns: rows [*m0, *m1) and columns [*n0, *n1), whole
// tiles but for M's and N's ends. The threads form equal groups along M,
// as many as leave each at least two tiles of rows; a group's threads split
// N. (On many cores or for short M, such groups keep a thread's packed rows
// in use over many columns, where splitting N alone had every thread pack
// all of M.) Every output is computed the same way for any split. False
// when the share is empty.
static inline bool product_split(int64_t M, int64_t N, int64_t mr, int64_t nr, int ith, int nth, int64_t * m0,
                                 int64_t * m1, int64_t * n0, int64_t * n1) {
	const int64_t mt = (M + mr - 1) / mr, nt = (N + nr - 1) / nr;
	int groups = nth;
	while (groups > 1 && (nth % groups != 0 || mt < 2 * groups)) {
		groups--;
	}
	thread_rows(mt, ith % groups, groups, m0, m1);
	thread_rows(nt, ith / groups, nth / groups, n0, n1);
	*m0 *= mr, *m1 = *m1 * mr < M ? *m1 * mr : M;
	*n0 *= nr, *n1 = *n1 * nr < N ? *n1 * nr : N;
	return *m0 < *m1 && *n0 < *n1;
}

// kernel_alloc is malloc for a kernel's scratch memory, which a custom op
// cannot report as an error: it is at most about 20 MB a thread, so
// failing means the process is out of address space.
static inline void * kernel_alloc(size_t bytes, const char * kernel) {
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

// SHUFFLE picks lanes of two vectors: clang's builtin, or GCC's, which
// has it only from GCC 12 on (GCC 11 is still common) and has had
// __builtin_shuffle, with the lanes as a vector, since 4.7.
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

// transpose_8x8 copies the 8×8 floats at s (rows ls bytes apart) to d (rows
// ld bytes apart) transposed, each output row c times m[c] (or 1 when m
// is NULL): d[c][r] = s[r][c]·m[c]. Products' weights go into the panels
// their tiles read, and attention's queries and outputs, 64 values at a
// time.
static inline void transpose_8x8(const char * s, size_t ls, char * d, size_t ld, const float * m) {
#if defined(__AVX__)
	__m256 r[8], t[8];
	for (int i = 0; i < 8; i++) {
		r[i] = _mm256_loadu_ps((const float *)(s + i * ls));
	}
	for (int i = 0; i < 8; i += 2) { // pairs of rows, interleaved
		t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
	}
	for (int i = 0; i < 8; i += 4) { // columns c and c+4 of four rows
		r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
		r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
		r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
		r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
	}
	for (int c = 0; c < 4; c++) { // whole columns: c from the low halves, c+4 from the high
		t[c] = _mm256_permute2f128_ps(r[c], r[c + 4], 0x20);
		t[c + 4] = _mm256_permute2f128_ps(r[c], r[c + 4], 0x31);
	}
	for (int c = 0; c < 8; c++) {
		_mm256_storeu_ps((float *)(d + c * ld), m != NULL ? _mm256_mul_ps(t[c], _mm256_set1_ps(m[c])) : t[c]);
	}
#elif PM_LANES == 4 // (SSE2, NEON) four 4×4 blocks
	for (int r0 = 0; r0 < 8; r0 += 4) {
		for (int c0 = 0; c0 < 8; c0 += 4) {
			vf x[4], t[4];
			for (int i = 0; i < 4; i++) {
				x[i] = loadv((const float *)(s + (r0 + i) * ls) + c0);
			}
			t[0] = SHUFFLE(x[0], x[1], 0, 4, 1, 5), t[1] = SHUFFLE(x[0], x[1], 2, 6, 3, 7); // rows r0, r0+1 interleaved
			t[2] = SHUFFLE(x[2], x[3], 0, 4, 1, 5), t[3] = SHUFFLE(x[2], x[3], 2, 6, 3, 7);
			x[0] = SHUFFLE(t[0], t[2], 0, 1, 4, 5), x[1] = SHUFFLE(t[0], t[2], 2, 3, 6, 7); // columns c0.. of the four rows
			x[2] = SHUFFLE(t[1], t[3], 0, 1, 4, 5), x[3] = SHUFFLE(t[1], t[3], 2, 3, 6, 7);
			for (int i = 0; i < 4; i++) {
				storev((float *)(d + (c0 + i) * ld) + r0, m != NULL ? x[i] * splat(m[c0 + i]) : x[i]);
			}
		}
	}
#else
	for (int c = 0; c < 8; c++) {
		for (int r = 0; r < 8; r++) {
			const float v = ((const float *)(s + r * ls))[c];
			((float *)(d + c * ld))[r] = m != NULL ? v * m[c] : v;
		}
	}
#endif
}

// f16 and bf16 rows to f32 and back, with F16C and AVX2 where our kernels
// are compiled for them: ggml's own conversions may not be (a plain `go
// build` compiles ggml for SSE2, our kernels also for x86-64-v3 and v4:
// cpu_targets.h). Both convert exactly (f32 to f16 to nearest, ties to
// even), so the values are ggml's.
static inline void f16_to_f32(const ggml_fp16_t * x, float * y, int64_t n) {
#if defined(__F16C__)
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		_mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
	}
	for (; i < n; i++) {
		y[i] = _cvtsh_ss(x[i]);
	}
#else
	ggml_cpu_fp16_to_fp32(x, y, n);
#endif
}

static inline void f32_to_f16(const float * x, ggml_fp16_t * y, int64_t n) {
#if defined(__F16C__)
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		_mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	}
	for (; i < n; i++) {
		y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
	}
#else
	ggml_cpu_fp32_to_fp16(x, y, n);
#endif
}

static inline void bf16_to_f32(const ggml_bf16_t * x, float * y, int64_t n) {
#if defined(__AVX2__)
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
		_mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
	}
	if (i < n) {
		ggml_cpu_bf16_to_fp32(x + i, y + i, n - i);
	}
#else
	ggml_cpu_bf16_to_fp32(x, y, n);
#endif
}

// in_register keeps a vector in a register at that point: a loaded one,
// which GCC would otherwise fold into each of the four multiply-adds that
// use it (the tiles' inner loops would wait on loads rather than on
// arithmetic), or a running sum, which it would otherwise regroup. (In
// memory where 512-bit vectors are emulated: no register holds them.)
#if defined(PM_EMULATE_AVX512)
#define in_register(v) __asm__("" : "+m"(v))
#elif defined(__GNUC__) && defined(__x86_64__)
#define in_register(v) __asm__("" : "+v"(v))
#else
#define in_register(v) (void)0
#endif

// block_q8_0 is ggml's q8_0 block: 32 values q·d.
struct block_q8_0 {
	ggml_fp16_t d;
	int8_t q[32];
};
_Static_assert(sizeof(struct block_q8_0) == 34, "q8_0 blocks are 34 bytes");

// block_q4_K is ggml's q4_K super-block.
struct block_q4_K {
	ggml_fp16_t d, dmin;
	uint8_t scales[12]; // s_j and m_j, 6 bits each
	uint8_t qs[128];    // q: bytes 32c..32c+31 hold sub-block 2c (low nibbles) and 2c+1 (high)
};
_Static_assert(sizeof(struct block_q4_K) == 144, "q4_K blocks are 144 bytes");

// block_q5_K is ggml's q5_K super-block: q4_K's with a fifth bit of each q,
// bit j of qh[l] for value l of sub-block j.
struct block_q5_K {
	ggml_fp16_t d, dmin;
	uint8_t scales[12];
	uint8_t qh[32];
	uint8_t qs[128];
};
_Static_assert(sizeof(struct block_q5_K) == 176, "q5_K blocks are 176 bytes");

// block_q6_K is ggml's q6_K super-block: d·s_j·(q − 32) with 6-bit q and an
// 8-bit scale s_j per sub-block j of 16 values. It holds two halves of 128
// values, each four runs of 32: value 128h + 32r + l (l < 32) has its low
// four bits in byte 64h + 32(r%2) + l of ql (the low nibble for r < 2, else
// the high), its top two at bits 2r of byte 32h + l of qh.
struct block_q6_K {
	uint8_t ql[128];
	uint8_t qh[64];
	int8_t scales[16];
	ggml_fp16_t d;
};
_Static_assert(sizeof(struct block_q6_K) == 210, "q6_K blocks are 210 bytes");

// Matrix products of f32 operands: dst [M, N…] = a [K, M] · b [K, N…], the
// dot products of a's rows with b's. ggml's CPU takes them to llamafile's
// tinyBLAS, which streams whole rows of K through each register tile and
// reaches 110–128 GFLOP/s on the dev VM for the VAE's convolutions (its
// f16 products reach 180). Here, as in BLAS libraries, a thread copies a
// block of a's rows (MM_PANEL floats) and MM_KC of K into panels of MM_MR
// rows stored k by k (a transpose that stays in L2); a register tile of
// MM_MR rows (three vectors along M, which is dst's contiguous dimension)
// times MM_NR rows of b (8 with AVX-512's 32 registers, else 4) sums over
// the block's k with one vector load per vector and one broadcast per b
// row, and adds into dst. K longer than MM_KC is split into even blocks;
// each adds its sum into dst. BenchmarkMulMatVAE: 160–180 GFLOP/s on an
// earlier Zen 3 dev VM, 83–111 on a later one whose FMA peak is 177 (where
// the time goes there: ggml/README.md, "CPU builds"); on a Zen 5 VM
// 145–208 with AVX2, 203–342 with AVX-512.
enum { MM_MR = 3 * PM_LANES, MM_NR = PM_LANES == 16 ? 8 : 4, MM_KC = 384, MM_PANEL = 46080 /* floats of a's block: 180 KB */ };

// outer_tile adds to acc[j][v] the sums over k < n of p[k·stride + v·L +
// i]·r_j[k], lane i of vector v (L = PM_LANES): three vectors along the
// panel p times MM_NR rows r_j, one vector load per vector and one
// broadcast per row for each k. The register tile of our f32 products and
// of attention's scores; always inlined, so that the accumulators stay in
// registers (passed to a function that is not, they live in memory and
// the products run at half speed with GCC 12).
static inline __attribute__((always_inline)) void outer_tile(vf acc[MM_NR][3], const float * p, int64_t stride,
                                                             const float * const r[MM_NR], int64_t n) {
	for (int64_t k = 0; k < n; k++, p += stride) {
		vf a0 = loadv(p), a1 = loadv(p + PM_LANES), a2 = loadv(p + 2 * PM_LANES);
		in_register(a0);
		in_register(a1);
		in_register(a2);
#pragma GCC unroll 8
		for (int j = 0; j < MM_NR; j++) {
			const vf x = splat(r[j][k]);
			acc[j][0] += x * a0, acc[j][1] += x * a1, acc[j][2] += x * a2;
		}
	}
}

// gemm_operands are a product's operands as raw rows: row m of a (k
// contiguous; with by_k, row k of a holding m contiguous, as a 1×1
// convolution's image), row n of b (k contiguous) and row n of c (m
// contiguous), ld* apart in floats. Or a's rows are narrower (raw, lda_raw
// bytes apart, of raw_type: f16, bf16, q8_0 or (PM_WIDENS_ANY) other blocks), widened to f32 as
// they are packed: the products then multiply f32 activations with f32
// sums, where ggml's CPU would round the activations to q8_0, f16 or bf16
// (and on ARM with fp16 arithmetic sum f16 products in f16).
// Or, packed, a is already in the panels the products read (as the
// Winograd transforms write it): rows [i, i+MM_MR) at k from
// a[((i/MM_MR)·lda + k)·MM_MR] (lda = K), i a multiple of MM_MR.
struct gemm_operands {
	const float * a, * b;
	float * c;
	int64_t lda, ldb, ldc;
	bool by_k;
	const char * raw;
	int64_t lda_raw;
	enum ggml_type raw_type;
	const float * bias; // added to row m of c once K is summed, or NULL
	bool packed;
};

// gemm_k_block is the length of the blocks K is split into (whole blocks
// of a quantized type's rows), and gemm_m_block the rows of a packed at once: ap must
// hold their product.
// (At most MM_KC rounded down to whole blocks: gemm_pack widens rows into
// buffers of MM_KC.)
static inline int64_t gemm_k_block(int64_t K, enum ggml_type type) {
	const int64_t bs = ggml_blck_size(type), most = MM_KC / bs * bs;
	const int64_t blocks = (K + most - 1) / most, kc = (K + blocks - 1) / blocks;
	return (kc + bs - 1) / bs * bs;
}

static inline int64_t gemm_m_block(int64_t kc) { return (MM_PANEL / kc / MM_MR > 0 ? MM_PANEL / kc / MM_MR : 1) * MM_MR; }

// pm_gemm_block computes rows [m0, m1) and columns [n0, n1) of a product
// over K (cpu_gemm.c), packing a into ap (gemm_pack_alloc).
void pm_gemm_block(const struct gemm_operands * g, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float * ap);

// add_tile stores (first) or adds the first rows × cols of a tile t
// (columns ldt apart) into c (columns ldc apart), then adds bias[i] to row
// i if bias is not NULL: the products' last rows or columns, computed
// through a whole tile.
void add_tile(float * c, int64_t ldc, const float * t, int64_t ldt, int64_t rows, int64_t cols, bool first,
              const float * bias);

// gemm_pack_alloc allocates the packing buffer of a product over K.
static inline float * gemm_pack_alloc(int64_t K, enum ggml_type type) {
	const int64_t kc = gemm_k_block(K, type);
	return kernel_alloc((size_t)(gemm_m_block(kc) * kc) * sizeof(float), "matrix product");
}

// pm_mul_mat_int is pm_mul_mat for the quantized types pm_mul_mat_takes_int
// names, in integers (cpu_quant.c), where pm_mul_mat_int_fits: enough rows
// of weights and activations (never without AVX2).
bool pm_mul_mat_int_fits(const struct ggml_tensor * a, const struct ggml_tensor * b);
struct ggml_tensor * pm_mul_mat_int(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
                                    struct ggml_tensor * bias);

// The custom ops' functions, which pm_kernel_flops recognizes.
void pm_attention_op(struct ggml_tensor * dst, int ith, int nth, void * userdata);
void pm_gemm_op(struct ggml_tensor * dst, int ith, int nth, void * userdata);
void pm_int_product_op(struct ggml_tensor * dst, int ith, int nth, void * userdata);
void pm_conv1x1_op(struct ggml_tensor * dst, int ith, int nth, void * userdata);
void pm_wino_conv_op(struct ggml_tensor * dst, int ith, int nth, void * userdata);
int64_t pm_wino_operands(const struct ggml_tensor * dst, const void * userdata, const struct ggml_tensor ** x,
                         const struct ggml_tensor ** u, const struct ggml_tensor ** bias);

#endif
