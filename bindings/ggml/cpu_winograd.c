// Our CPU Winograd convolutions (see cpu_kernels.c).
#include "cpu_internal.h"

// Winograd's minimal filtering (Lavin and Gray, 2016) for "same" 3×3
// convolutions of stride 1: each m×m block of outputs (a tile) is
// Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A, d the tile's n×n input patch (n = m+2) and g
// the 3×3 kernel, so the products over channels are n² matrix products of
// (tiles × Cin) by (Cin × Cout). Two sizes:
//   F(2×2, 3×3): 16 multiply-adds per tile of 4 outputs and channel pair
//                (against 36 directly); the transforms only add, subtract
//                and halve.
//   F(4×4, 3×3): 36 per tile of 16 outputs (against 144), and V and M take
//                2.25 floats per pixel and channel instead of 4; the
//                transforms scale by up to 8 (inputs' by 5, the kernel's
//                by 1/24), which amplifies roundings about 10×
//                (TestConv3x3Kernel bounds each size by its own). U takes
//                36 floats per channel pair, so small images and the
//                widest layers keep F(2×2) (pm_conv3x3_tile).
// Two ops (for wide convolutions, one pair per group of output channels):
//   wino_kernel_op   g by row [3, Cin, Cout, 3] → U [Cin, Cout, n²] = G·g·Gᵀ
//   pm_wino_conv_op  x [W, H, Cin, B], U (+ bias) → y [W, H, Cout, B]
//                    (or, upsampling, y [2W, 2H, Cout, B] of x's nearest 2×
//                    upsample, which is never made)
// The second takes bands of rows of tiles, each thread its own: it
// transforms a band's input (V = Bᵀ·d·B, [tiles, Cin] for each of the n²
// ξ = n·row + column), multiplies (M_ξ = V_ξ·U_ξ) and transforms back
// (Aᵀ·M·A) into y, in scratch memory of its own (at most WINO_SCRATCH
// floats): no columns or partial products in the graph, and no bands
// there. V and M keep tiles contiguous (V in the product's panels, which
// it then reads without packing), so the transforms work on vectors of
// PM_LANES tiles. On the dev VM,
// a 512² UNet step's 3×3 convolutions took 2.5 s instead of 4.8 s of
// ggml's f16 products over by-row columns, and the VAE decode 9.8 s
// instead of 18.2 s with our f32 products over them (F(2×2) only). F(4×4)
// and V in panels then took the Zen 5 VM's VAE decode from 4.0–4.1 s to
// 2.9–3.05 s at 512² and from 16.8 s to 13.05 s at 1024²
// (BenchmarkConv3x3).

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
// WINO_U_GROUP_FLOATS is the most floats of U one kernel op makes (64 MB:
// a wider convolution is made in groups of output channels, each with a
// kernel op and a convolution op, so that the graph holds one group's U
// at a time; wino_group_floats, which tests lower).
// WINO_U4_FLOATS is the largest U F(4×4) makes (40 MB: the VAE's 512
// channels and the UNet's 320; with the UNet's 640 too, a 1024² step took
// 36 MiB more and no less time), WINO_F4_PIXELS the fewest outputs.
enum {
	WINO_TILES = 8 * MM_MR,
	WINO_SCRATCH = 1 << 22,
	WINO_U_GROUP_FLOATS = 16 << 20,
	WINO_U4_FLOATS = 10 << 20,
	WINO_F4_PIXELS = 4096
};

// The one-dimensional transforms: of the kernel (G, n × 3), of an input
// patch (Bᵀ, n × n) and back (Aᵀ, m × n). Two-dimensional ones apply them
// along both axes.
static inline void kernel_1d(int m, const vf g[3], vf u[6]) {
	if (m == 2) {
		u[0] = g[0], u[1] = splat(0.5f) * (g[0] + g[1] + g[2]), u[2] = splat(0.5f) * (g[0] - g[1] + g[2]), u[3] = g[2];
		return;
	}
	const vf p = g[0] + g[2], q = splat(1.0f / 24) * g[0] + splat(1.0f / 6) * g[2], r = splat(1.0f / 12) * g[1];
	u[0] = splat(0.25f) * g[0], u[1] = splat(-1.0f / 6) * (p + g[1]), u[2] = splat(-1.0f / 6) * (p - g[1]);
	u[3] = q + r, u[4] = q - r, u[5] = g[2];
}

static inline void input_1d(int m, const vf d[6], vf t[6]) {
	if (m == 2) {
		t[0] = d[0] - d[2], t[1] = d[1] + d[2], t[2] = d[2] - d[1], t[3] = d[1] - d[3];
		return;
	}
	const vf a = d[4] - splat(4.0f) * d[2], b = d[3] - splat(4.0f) * d[1];
	const vf c = d[4] - d[2], e = splat(2.0f) * (d[3] - d[1]);
	t[0] = splat(4.0f) * d[0] - splat(5.0f) * d[2] + d[4], t[1] = a + b, t[2] = a - b;
	t[3] = c + e, t[4] = c - e, t[5] = splat(4.0f) * d[1] - splat(5.0f) * d[3] + d[5];
}

static inline void output_1d(int m, const vf v[6], vf s[4]) {
	if (m == 2) {
		s[0] = v[0] + v[1] + v[2], s[1] = v[1] - v[2] - v[3];
		return;
	}
	const vf a = v[1] + v[2], b = v[1] - v[2], c = v[3] + v[4], d = v[3] - v[4];
	s[0] = v[0] + a + c, s[1] = b + splat(2.0f) * d, s[2] = a + splat(4.0f) * c, s[3] = b + splat(8.0f) * d + v[5];
}

// pm_conv3x3_tile is the tile size m a convolution of pixels outputs
// (all images') takes: 4 from WINO_F4_PIXELS on, unless its U would pass
// WINO_U4_FLOATS. On fewer pixels, F(4×4)'s larger kernel transform costs
// more than its products save (the Zen 5 VM, kernel transform included:
// 64²·2 pixels of 320 channels 12 % faster than F(2×2), 64² of 512 6 %,
// 32²·2 of 640 15 % slower).
int pm_conv3x3_tile(int64_t cin, int64_t cout, int64_t pixels) {
	return pixels >= WINO_F4_PIXELS && 36 * cin * cout <= WINO_U4_FLOATS ? 4 : 2;
}

// wino_kernel_op writes U [Cin, Cout, n²] from a kernel by row [3, Cin,
// Cout, 3] (f32 or f16; or a convolution's kernel [3, 3, Cin, Cout]
// permuted to that shape, see pm_conv3x3_fits). Threads split the output
// channels; each channel's kernel is first laid out as nine planes of Cin
// taps, so that vectors of PM_LANES input channels are transformed at
// once.
static inline __attribute__((always_inline)) void wino_kernel(struct ggml_tensor * dst, int ith, int nth, const int m) {
	const int n = m + 2;
	const struct ggml_tensor * w = dst->src[0];
	const int64_t cin = w->ne[1], cout = w->ne[2];
	const int64_t cpad = (cin + PM_LANES - 1) / PM_LANES * PM_LANES;
	int64_t o0, o1;
	thread_rows(cout, ith, nth, &o0, &o1);
	if (o0 >= o1) {
		return;
	}
	// One output channel's kernel: as stored, widened to f32 (by row: [3,
	// Cin] per kernel row; conv layout: [3, 3, Cin] at once), then as
	// planes [ky·3 + kx][Cin] (zeros past Cin).
	const bool by_row = w->nb[1] == 3 * w->nb[0];
	const size_t floats = (size_t)(9 * cin + 9 * cpad);
	float * g = kernel_alloc(floats * sizeof(float), "Winograd kernel transform");
	memset(g, 0, floats * sizeof(float));
	float * planes = g + 9 * cin, * U = (float *)dst->data;
	for (int64_t co = o0; co < o1; co++) {
		for (int ky = 0; ky < (by_row ? 3 : 1); ky++) {
			const int64_t n = by_row ? 3 * cin : 9 * cin;
			const char * run = (const char *)w->data + co * w->nb[2] + ky * w->nb[3];
			if (w->type == GGML_TYPE_F16) {
				f16_to_f32((const ggml_fp16_t *)run, g + ky * n, n);
			} else {
				memcpy(g + ky * n, run, (size_t)n * sizeof(float));
			}
		}
		for (int ky = 0; ky < 3; ky++) {
			for (int64_t ci = 0; ci < cin; ci++) {
				for (int kx = 0; kx < 3; kx++) {
					planes[(ky * 3 + kx) * cpad + ci] = by_row ? g[ky * 3 * cin + 3 * ci + kx] : g[9 * ci + 3 * ky + kx];
				}
			}
		}
		for (int64_t c0 = 0; c0 < cin; c0 += PM_LANES) {
			vf t[3][6], u[6][6];
			for (int ky = 0; ky < 3; ky++) { // ·Gᵀ along each kernel row
				const vf g3[3] = {loadv(planes + 3 * ky * cpad + c0), loadv(planes + (3 * ky + 1) * cpad + c0),
				                  loadv(planes + (3 * ky + 2) * cpad + c0)};
				kernel_1d(m, g3, t[ky]);
			}
			for (int j = 0; j < n; j++) { // then G· down each column
				const vf g3[3] = {t[0][j], t[1][j], t[2][j]};
				vf col[6];
				kernel_1d(m, g3, col);
				for (int i = 0; i < n; i++) {
					u[i][j] = col[i];
				}
			}
			const int64_t nc = cin - c0 < PM_LANES ? cin - c0 : PM_LANES;
			for (int x = 0; x < n * n; x++) {
				float * o = U + (x * cout + co) * cin + c0;
				if (nc == PM_LANES) {
					storev(o, u[x / n][x % n]);
				} else {
					memcpy(o, &u[x / n][x % n], (size_t)nc * sizeof(float));
				}
			}
		}
	}
	free(g);
}

static void wino_kernel_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	(void)userdata;
	if (dst->ne[2] == 16) {
		wino_kernel(dst, ith, nth, 2);
	} else {
		wino_kernel(dst, ith, nth, 4);
	}
}

// gather_row reads the n patch columns of PM_LANES consecutive tiles from
// a buffered input row p (tile t's columns start at p[m·t]): for m 2, the
// even and odd lanes of loads at p and p+2; for m 4, every fourth lane,
// and the ones after them, of loads at p, p+2 and p+4 (columns 0 and 1,
// 2 and 3, 4 and 5 of each tile).
static inline void gather_row(int m, const float * p, vf d[6]) {
	if (m == 2) {
		const vf v0 = loadv(p), v1 = loadv(p + PM_LANES), w0 = loadv(p + 2), w1 = loadv(p + 2 + PM_LANES);
		d[0] = EVEN(v0, v1), d[1] = ODD(v0, v1), d[2] = EVEN(w0, w1), d[3] = ODD(w0, w1);
		return;
	}
	for (int s = 0; s < 3; s++) { // columns 2s + 4u (d[2s]) and 2s+1 + 4u (d[2s+1]) of tile u
		const float * q = p + 2 * s;
		const vf v0 = loadv(q), v1 = loadv(q + PM_LANES), v2 = loadv(q + 2 * PM_LANES), v3 = loadv(q + 3 * PM_LANES);
		const vf e01 = EVEN(v0, v1), e23 = EVEN(v2, v3), o01 = ODD(v0, v1), o23 = ODD(v2, v3);
		d[2 * s] = EVEN(e01, e23), d[2 * s + 1] = EVEN(o01, o23);
	}
}

// store_panels stores the first nc lanes of x, tiles [t, t+nc) of channel
// c, into V_ξ v laid out as the product's panels (gemm_operands.packed):
// tile t at v[(t/MM_MR·cin + c)·MM_MR + t%MM_MR]. A vector crosses into the
// next panel only when a row of tiles is not a whole number of vectors.
static inline void store_panels(float * v, int64_t cin, int64_t c, int64_t t, vf x, int64_t nc) {
	const int64_t p = t / MM_MR, i = t % MM_MR;
	float * o = v + (p * cin + c) * MM_MR + i;
	if (nc == PM_LANES && i + PM_LANES <= MM_MR) {
		storev(o, x);
		return;
	}
	const int64_t first = MM_MR - i < nc ? MM_MR - i : nc;
	memcpy(o, &x, (size_t)first * sizeof(float));
	if (nc > first) {
		memcpy(v + ((p + 1) * cin + c) * MM_MR, (const float *)&x + first, (size_t)(nc - first) * sizeof(float));
	}
}

// wino_input_band writes V [n²][band's panels] (each ξ's ldv floats, as
// store_panels) for tile rows [r0, r0+rows) (counted across images) of a
// W×H image: x [W/up, H/up, Cin, B] upsampled up times (1 or 2, nearest).
// For each channel and tile row, the n input rows are copied (each value
// up times), zero-padded, into buf (n rows of len floats; columns outside
// the image stay zero), from which vectors of PM_LANES tiles' columns are
// read.
static inline __attribute__((always_inline)) void wino_input_band(float * V, int64_t ldv, const struct ggml_tensor * x,
                                                                  int64_t W, int64_t H, int up, int64_t r0, int64_t rows,
                                                                  float * buf, int64_t len, const int m) {
	const int n = m + 2;
	const int64_t cin = x->ne[2], tw = (W + m - 1) / m, th = (H + m - 1) / m;
	for (int64_t c = 0; c < cin; c++) {
		for (int64_t r = 0; r < rows; r++) {
			const int64_t ty = (r0 + r) % th, b = (r0 + r) / th;
			for (int i = 0; i < n; i++) {
				const int64_t y = m * ty - 1 + i;
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
			for (int64_t tx0 = 0; tx0 < tw; tx0 += PM_LANES) {
				vf t[6][6]; // t[j][i]: row i's column j
				for (int i = 0; i < n; i++) { // ·B along each row
					vf d[6], row[6];
					gather_row(m, buf + i * len + m * tx0, d);
					input_1d(m, d, row);
					for (int j = 0; j < n; j++) {
						t[j][i] = row[j];
					}
				}
				const int64_t nc = tw - tx0 < PM_LANES ? tw - tx0 : PM_LANES;
				for (int j = 0; j < n; j++) { // then Bᵀ· down each column
					vf v[6];
					input_1d(m, t[j], v);
					for (int i = 0; i < n; i++) {
						store_panels(V + (i * n + j) * ldv, cin, c, r * tw + tx0, v[i], nc);
					}
				}
			}
		}
	}
}

// scatter_row stores the m output columns y[j] of PM_LANES tiles
// interleaved (tile t's at out[m·t + j]), the first cols of them.
static inline void scatter_row(int m, float * out, const vf y[4], int64_t cols) {
	vf v[4];
	if (m == 2) {
		v[0] = ZIP_LO(y[0], y[1]), v[1] = ZIP_HI(y[0], y[1]);
	} else {
		const vf a = ZIP_LO(y[0], y[2]), b = ZIP_LO(y[1], y[3]), c = ZIP_HI(y[0], y[2]), d = ZIP_HI(y[1], y[3]);
		v[0] = ZIP_LO(a, b), v[1] = ZIP_HI(a, b), v[2] = ZIP_LO(c, d), v[3] = ZIP_HI(c, d);
	}
	if (cols == m * PM_LANES) {
		for (int i = 0; i < m; i++) {
			storev(out + i * PM_LANES, v[i]);
		}
	} else {
		memcpy(out, v, (size_t)cols * sizeof(float));
	}
}

// wino_output_band writes the group's output channels [c0, c1) (of cout,
// y's channels co0 on) for tile rows [r0, r0+rows) of y [W, H, Cout, B]
// (contiguous) from M [n²][cout][nt] (ldm apart), adding bias (cout
// floats) when not NULL.
static inline __attribute__((always_inline)) void wino_output_band(struct ggml_tensor * y, int64_t co0, int64_t cout,
                                                                   const float * M, int64_t ldm, const float * bias,
                                                                   int64_t c0, int64_t c1, int64_t r0, int64_t rows,
                                                                   const int m) {
	const int n = m + 2;
	const int64_t W = y->ne[0], H = y->ne[1], tw = (W + m - 1) / m, th = (H + m - 1) / m;
	for (int64_t co = c0; co < c1; co++) {
		const vf bv = splat(bias != NULL ? bias[co] : 0.0f);
		for (int64_t r = 0; r < rows; r++) {
			const int64_t ty = (r0 + r) % th, b = (r0 + r) / th;
			const float * in = M + co * ldm + r * tw; // + ξ·Cout·ldm, + the tile
			for (int64_t tx0 = 0; tx0 < tw; tx0 += PM_LANES) {
				const int64_t nc = tw - tx0 < PM_LANES ? tw - tx0 : PM_LANES;
				vf s[4][6]; // Aᵀ·M down each column: s[q][j] is row q's column j
				for (int j = 0; j < n; j++) {
					vf col[6];
					for (int i = 0; i < n; i++) {
						const float * p = in + (i * n + j) * cout * ldm + tx0;
						if (nc == PM_LANES) {
							col[i] = loadv(p);
						} else {
							col[i] = splat(0.0f);
							memcpy(&col[i], p, (size_t)nc * sizeof(float));
						}
					}
					vf out[4];
					output_1d(m, col, out);
					for (int q = 0; q < m; q++) {
						s[q][j] = out[q];
					}
				}
				const int64_t cols = W - m * tx0 < m * PM_LANES ? W - m * tx0 : m * PM_LANES;
				for (int q = 0; q < m && m * ty + q < H; q++) { // then ·A along each row
					vf out[4];
					output_1d(m, s[q], out);
					for (int j = 0; j < m; j++) {
						out[j] += bv;
					}
					scatter_row(m, (float *)y->data + ((b * y->ne[2] + co0 + co) * H + m * ty + q) * W + m * tx0, out, cols);
				}
			}
		}
	}
}

// wino_band_rows is the tile rows of a band: about WINO_TILES tiles, V and
// M (xi floats per tile and channel) within WINO_SCRATCH floats.
static int64_t wino_band_rows(int64_t tw, int64_t cin, int64_t cout, int xi) {
	int64_t tiles = WINO_SCRATCH / (xi * (cin + cout));
	tiles = tiles < WINO_TILES ? tiles : WINO_TILES;
	return tiles / tw > 0 ? tiles / tw : 1;
}

// wino_split is thread ith's share of a convolution: rows of tiles [*r0,
// *r1) and output channels [*c0, *c1). Threads split the rows while each
// gets WINO_TILES/2 tiles or more; with fewer (small images, many threads)
// they also split the output channels, so that the product's tiles stay
// full and each thread reads only its part of U (for 1280 channels,
// 105 MB), though each then transforms all of the input. (From
// WINO_TILES, the Zen 5 VM's 2 threads split 64²·2 pixels of 320
// channels by channel, 12 % slower than by row: BenchmarkConv3x3 645–660
// against 718–745 GFLOP/s.) False when the thread has nothing to do.
static bool wino_split(int64_t rows, int64_t tw, int64_t cout, int ith, int nth, int64_t * r0, int64_t * r1,
                       int64_t * c0, int64_t * c1) {
	int q = 1; // groups of output channels: a divisor of nth, each of 32 channels or more
	for (int d = 2; d <= nth && 2 * rows * tw * q < (int64_t)nth * WINO_TILES && cout >= d * 8 * MM_NR; d++) {
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

// wino_conv is pm_wino_conv_op with tiles of m × m outputs.
// co0 is the group's first output channel.
static inline __attribute__((always_inline)) void wino_conv(struct ggml_tensor * dst, const struct ggml_tensor * x,
                                                            const struct ggml_tensor * u, const struct ggml_tensor * bias,
                                                            int64_t co0, int ith, int nth, int up, const int m) {
	const int xi = (m + 2) * (m + 2);
	const int64_t W = dst->ne[0], H = dst->ne[1], cin = x->ne[2], cout = u->ne[1];
	const int64_t tw = (W + m - 1) / m, th = (H + m - 1) / m;
	int64_t r0, r1, c0, c1;
	if (!wino_split(x->ne[3] * th, tw, cout, ith, nth, &r0, &r1, &c0, &c1)) {
		return;
	}
	// V and M rows: a band's tiles, rounded up to whole panels
	const int64_t band = wino_band_rows(tw, cin, cout, xi), ld = (band * tw + MM_MR - 1) / MM_MR * MM_MR;
	// input rows, padded for gather_row's loads past the last tile
	const int64_t len = m * ((tw + PM_LANES - 1) / PM_LANES) * PM_LANES + 2 * m + PM_LANES;
	const size_t floats = (size_t)(xi * ld * (cin + cout) + (m + 2) * len);
	float * V = kernel_alloc(floats * sizeof(float), "Winograd convolution");
	float * M = V + xi * ld * cin, * buf = M + xi * ld * cout;
	memset(buf, 0, (size_t)((m + 2) * len) * sizeof(float));
	for (int64_t b0 = r0; b0 < r1; b0 += band) {
		const int64_t rows = r1 - b0 < band ? r1 - b0 : band, tiles = rows * tw;
		wino_input_band(V, cin * ld, x, W, H, up, b0, rows, buf, len, m);
		if (tiles % MM_MR != 0) { // the last panel's other rows: zeros, not stale floats (products discarded)
			const int64_t p = tiles / MM_MR, i = tiles % MM_MR;
			for (int64_t k = 0; k < xi * cin; k++) {
				memset(V + (k / cin) * cin * ld + (p * cin + k % cin) * MM_MR + i, 0, (size_t)(MM_MR - i) * sizeof(float));
			}
		}
		for (int k = 0; k < xi; k++) {
			const struct gemm_operands g = {.a = V + k * cin * ld,
			                                .b = (const float *)u->data + k * cout * cin,
			                                .c = M + k * cout * ld,
			                                .lda = cin,
			                                .ldb = cin,
			                                .ldc = ld,
			                                .packed = true};
			pm_gemm_block(&g, cin, 0, tiles, c0, c1, NULL);
		}
		wino_output_band(dst, co0, cout, M, ld, bias != NULL ? (const float *)bias->data : NULL, c0, c1, b0, rows, m);
	}
	free(V);
}

// A convolution's userdata: the upsampling factor (1 or 2), whether the op
// writes a group of output channels into its first source (a view of the
// previous group's output: ggml_custom_inplace), and the group's first
// output channel.
enum { WINO_UP = 3, WINO_INPLACE = 4, WINO_CO0_SHIFT = 3 };

// pm_wino_operands sets a convolution op's (dst with userdata) operands: x [W, H, Cin, B]
// (upsampled by the userdata's factor), U [Cin, cout, n²] (the group's
// cout output channels; n² tells the tile size), bias [cout] or NULL; and
// returns the group's first output channel. An op's sources are x, U and
// bias, after the previous group's output for the inplace ones.
int64_t pm_wino_operands(const struct ggml_tensor * dst, const void * userdata, const struct ggml_tensor ** x,
                         const struct ggml_tensor ** u, const struct ggml_tensor ** bias) {
	const uintptr_t ud = (uintptr_t)userdata;
	const int first = ud & WINO_INPLACE ? 1 : 0;
	*x = dst->src[first], *u = dst->src[first + 1], *bias = dst->src[first + 2];
	return (int64_t)(ud >> WINO_CO0_SHIFT);
}

// pm_wino_conv_op is the convolution of pm_wino_operands' operands into
// the group's channels of dst [up·W, up·H, Cout, B]. Threads split the rows
// of tiles, and for few tiles the output channels (wino_split).
void pm_wino_conv_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
	const int up = (int)((uintptr_t)userdata & WINO_UP);
	const struct ggml_tensor * x, * u, * bias;
	const int64_t co0 = pm_wino_operands(dst, userdata, &x, &u, &bias);
	if (u->ne[2] == 16) {
		wino_conv(dst, x, u, bias, co0, ith, nth, up, 2);
	} else {
		wino_conv(dst, x, u, bias, co0, ith, nth, up, 4);
	}
}

bool pm_conv3x3_fits(const struct ggml_tensor * kernel, const struct ggml_tensor * x) {
	const size_t e = kernel->nb[0];
	const int64_t cin = kernel->ne[1];
	// by row, contiguous; or a contiguous [3, 3, Cin, Cout] permuted (0, 3, 1, 2)
	const bool layout = ggml_is_contiguous(kernel) ||
	                    (kernel->nb[1] == 9 * e && kernel->nb[2] == (size_t)(9 * cin) * e && kernel->nb[3] == 3 * e);
	return (kernel->type == GGML_TYPE_F32 || kernel->type == GGML_TYPE_F16) && x->type == GGML_TYPE_F32 &&
	       kernel->ne[0] == 3 && kernel->ne[3] == 3 && kernel->ne[1] == x->ne[2] && e == ggml_type_size(kernel->type) &&
	       layout && x->nb[0] == sizeof(float);
}

static int64_t wino_group_floats = WINO_U_GROUP_FLOATS;

int64_t pm_set_wino_group_floats(int64_t n) {
	const int64_t old = wino_group_floats;
	wino_group_floats = n;
	return old;
}

// wino_group_channels is the output channels of a group (the last may have
// fewer): a whole number of the product's tiles.
static int64_t wino_group_channels(int64_t cin, int64_t cout, int64_t pixels) {
	const int m = pm_conv3x3_tile(cin, cout, pixels);
	const int64_t floats = (m + 2) * (m + 2) * cin * cout;
	const int64_t groups = (floats + wino_group_floats - 1) / wino_group_floats;
	return ((cout + groups - 1) / groups + MM_NR - 1) / MM_NR * MM_NR;
}

int64_t pm_conv3x3_groups(int64_t cin, int64_t cout, int64_t pixels) {
	const int64_t per = wino_group_channels(cin, cout, pixels);
	return (cout + per - 1) / per;
}

struct ggml_tensor * pm_conv3x3(struct ggml_context * ctx, struct ggml_tensor * kernel, struct ggml_tensor * x,
                                struct ggml_tensor * bias, int up) {
	const int64_t cin = kernel->ne[1], cout = kernel->ne[2], pixels = up * x->ne[0] * up * x->ne[1] * x->ne[3];
	const int m = pm_conv3x3_tile(cin, cout, pixels);
	const int64_t per = wino_group_channels(cin, cout, pixels);
	struct ggml_tensor * y = NULL;
	for (int64_t co0 = 0; co0 < cout; co0 += per) {
		const int64_t cg = cout - co0 < per ? cout - co0 : per;
		struct ggml_tensor * k = cg == cout ? kernel
		                                    : ggml_view_4d(ctx, kernel, 3, cin, cg, 3, kernel->nb[1], kernel->nb[2],
		                                                   kernel->nb[3], (size_t)co0 * kernel->nb[2]);
		struct ggml_tensor * u = ggml_custom_4d(ctx, GGML_TYPE_F32, cin, cg, (m + 2) * (m + 2), 1, &k, 1, wino_kernel_op,
		                                        GGML_N_TASKS_MAX, NULL);
		ggml_set_name(u, "WINOGRAD_KERNEL (ours)");
		struct ggml_tensor * b = bias == NULL || cg == cout ? bias
		                                                   : ggml_view_4d(ctx, bias, cg, 1, 1, 1, bias->nb[1], bias->nb[2],
		                                                                  bias->nb[3], (size_t)co0 * bias->nb[0]);
		struct ggml_tensor * args[3] = {x, u, b};
		const uintptr_t ud = (uintptr_t)co0 << WINO_CO0_SHIFT | (uintptr_t)up;
		if (y == NULL) {
			y = ggml_custom_4d(ctx, GGML_TYPE_F32, up * x->ne[0], up * x->ne[1], cout, x->ne[3], args, b != NULL ? 3 : 2,
			                   pm_wino_conv_op, GGML_N_TASKS_MAX, (void *)ud);
		} else { // into the previous groups' output
			y = ggml_custom_inplace(ctx, y, args, b != NULL ? 3 : 2, pm_wino_conv_op, GGML_N_TASKS_MAX,
			                        (void *)(ud | WINO_INPLACE));
		}
		ggml_set_name(y, "CONV_3X3 (ours)");
	}
	return y;
}
