// Our CPU Winograd convolutions (see cpu_kernels.c).
#include "cpu_internal.h"

// Winograd F(2×2, 3×3) (Lavin and Gray, 2016) for "same" 3×3
// convolutions of stride 1: each 2×2 block of outputs (a tile) is
// Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A, d the tile's 4×4 input patch and g the 3×3
// kernel, so the products over channels are 16 matrix products of
// (tiles × Cin) by (Cin × Cout): 16 multiply-adds per tile and channel
// pair against 36 by im2col. The transforms only add, subtract and halve.
// Two ops:
//   wino_kernel_op   g by row [3, Cin, Cout, 3] → U [Cin, Cout, 16] = G·g·Gᵀ
//   pm_wino_conv_op  x [W, H, Cin, B], U (+ bias) → y [W, H, Cout, B]
//                    (or, upsampling, y [2W, 2H, Cout, B] of x's nearest 2×
//                    upsample, which is never made)
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
#if PM_LANES == 16
#define EVEN(a, b) SHUFFLE(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define ODD(a, b) SHUFFLE(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define ZIP_LO(a, b) SHUFFLE(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define ZIP_HI(a, b) SHUFFLE(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#elif PM_LANES == 8
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

// pm_wino_conv_op is the convolution: src[0] x [W, H, Cin, B] (upsampled by
// the userdata's factor, 1 or 2), src[1] U [Cin, Cout, 16], src[2] bias
// [Cout] or none. Threads split the rows of tiles, and for few tiles the
// output channels (wino_split).
void pm_wino_conv_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
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
			pm_gemm_block(&g, cin, 0, tiles, c0, c1, ap);
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
	                                        bias != NULL ? 3 : 2, pm_wino_conv_op, GGML_N_TASKS_MAX, (void *)(uintptr_t)up);
	return ggml_set_name(y, "CONV_3X3 (ours)");
}
