package ggml

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchGraph times repeated computation of one graph on the CPU and reports
// GFLOP/s for the given operation count.
func benchGraph(b *testing.B, flops float64, build func(c *Context) *Tensor) {
	benchGraphRate(b, flops, "GFLOP/s", build)
}

// benchGraphRate is benchGraph reporting billions of count per second as
// unit.
func benchGraphRate(b *testing.B, count float64, unit string, build func(c *Context) *Tensor) {
	cpu := cpuBackend(b)
	s, err := NewScheduler([]*Backend{cpu}, 64)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := NewContext(64, 64)
	defer ctx.Free()
	out := build(ctx)
	g := ctx.NewGraph(64)
	g.Expand(out)
	if err := s.Reserve(g); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Compute(context.Background(), g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(count*float64(b.N)/b.Elapsed().Seconds()/1e9, unit)
}

// SDXL's middle level at 1024²: 1280 channels, 32×32 = 1024 tokens, in
// each weight type (ggml's kernels), and through ours: f32, f16, bf16, and
// the quantized types where ours multiply them in integers (x86 with AVX2).
func BenchmarkMulMat(b *testing.B) {
	const K, M, N = 1280, 1280, 1024
	r := rand.New(rand.NewPCG(1, 1))
	w, x := randn(r, K*M), randn(r, K*N)
	for _, typ := range []Type{TypeF32, TypeF16, TypeBF16, TypeQ8_0, TypeQ5_K, TypeQ4_K, TypeQ6_K, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ3_K, TypeQ2_K} {
		wb, err := Quantize(typ, w, K)
		if err != nil {
			b.Fatal(err)
		}
		for _, ours := range []bool{false, true} {
			if ours && (typ.Quantized() && typ != TypeQ8_0 && !CPUKernelsTakeInts(typ) || typ == TypeBF16 && !cpuKernelsTakeBF16()) {
				continue
			}
			b.Run(fmt.Sprintf("%s_%dx%dx%d%s", typ, K, M, N, map[bool]string{true: "_ours"}[ours]), func(b *testing.B) {
				benchGraph(b, 2*K*M*N, func(c *Context) *Tensor {
					c.SetCPUKernels(ours)
					return c.MulMat(c.Input(typ, wb, K, M), c.InputF32(x, K, N))
				})
			})
		}
	}
}

// The f32 products of the VAE decoder's 3×3 convolutions by kernel row
// at 512² (columns [3·Cin, pixels] times one kernel row [3·Cin, Cout]): a
// band of the top level (128 channels) and the 64² level (512 channels);
// ggml's kernel and ours (cpu_gemm.c).
func BenchmarkMulMatVAE(b *testing.B) {
	for _, cs := range []struct{ k, m, n int }{{384, 52224, 128}, {1536, 3200, 512}} {
		r := rand.New(rand.NewPCG(6, 6))
		cols, kernel := randn(r, cs.k*cs.m), randn(r, cs.k*cs.n)
		for _, ours := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dx%dx%d_%s", cs.k, cs.m, cs.n, map[bool]string{false: "ggml", true: "ours"}[ours]), func(b *testing.B) {
				benchGraph(b, float64(2*cs.k*cs.m*cs.n), func(c *Context) *Tensor {
					c.SetCPUKernels(ours)
					return c.MulMat(c.InputF32(cols, int64(cs.k), int64(cs.m)), c.InputF32(kernel, int64(cs.k), int64(cs.n)))
				})
			})
		}
	}
}

// SDXL's first level at 512²: 3×3 convolution, 320 → 320 channels on 64×64.
func BenchmarkConv2D(b *testing.B) {
	const W, H, C, O = 64, 64, 320, 320
	r := rand.New(rand.NewPCG(2, 2))
	w, x := randn(r, 3*3*C*O), randn(r, W*H*C)
	for _, cs := range []struct {
		name   string
		typ    Type
		direct bool
		ours   bool
	}{{"im2col_f16", TypeF16, false, false}, {"im2col_f32", TypeF32, false, false}, {"direct_f32", TypeF32, true, false},
		{"winograd_f16_ours", TypeF16, false, true}} {
		wb, err := Quantize(cs.typ, w, 3)
		if err != nil {
			b.Fatal(err)
		}
		// Rates count the direct convolution's multiply-adds for every
		// kind; Winograd's own are 4/9 of them.
		b.Run(cs.name, func(b *testing.B) {
			benchGraph(b, 2*W*H*C*O*9, func(c *Context) *Tensor {
				k := c.Input(cs.typ, wb, 3, 3, C, O)
				img := c.InputF32(x, W, H, C, 1)
				switch {
				case cs.direct:
					return c.Conv2DDirect(k, img, 1, 1, 1, 1, 1, 1)
				case cs.ours:
					return c.Conv3x3CPU(c.Cont(c.Permute(k, 0, 3, 1, 2)), img, nil) // the kernel by row
				}
				return c.Conv2D(k, img, 1, 1, 1, 1, 1, 1)
			})
		})
	}
}

// Our Winograd convolutions (kernel transform included, as every step
// computes it) at the VAE decoder's levels at 512² and the UNet's first two
// at 512² (two images): F(4×4) from 4096 pixels on, F(2×2) below
// (pm_conv3x3_tile). Rates count the direct convolution's multiply-adds.
func BenchmarkConv3x3(b *testing.B) {
	for _, cs := range []struct{ w, c, o, n int64 }{{512, 128, 128, 1}, {256, 256, 256, 1}, {128, 512, 512, 1},
		{64, 320, 320, 2}, {32, 640, 640, 2}, {16, 1280, 1280, 2}} {
		r := rand.New(rand.NewPCG(2, 2))
		w, x := randn(r, int(9*cs.c*cs.o)), randn(r, int(cs.w*cs.w*cs.c*cs.n))
		b.Run(fmt.Sprintf("%dx%dx%dx%d_to_%d", cs.w, cs.w, cs.c, cs.n, cs.o), func(b *testing.B) {
			benchGraph(b, float64(2*cs.w*cs.w*cs.c*cs.o*9*cs.n), func(c *Context) *Tensor {
				return c.Conv3x3CPU(c.InputF32(w, 3, cs.c, cs.o, 3), c.InputF32(x, cs.w, cs.w, cs.c, cs.n), nil)
			})
		})
	}
}

// SDXL's GEGLU at the middle level of a 512² CFG step: 2·256 tokens, 5120
// wide; ggml's kernel and ours (cpu_kernels.c).
func BenchmarkGEGLU(b *testing.B) {
	const N, T = 5120, 512
	a := randn(rand.New(rand.NewPCG(3, 3)), 2*N*T)
	for _, ours := range []bool{false, true} {
		b.Run(map[bool]string{false: "ggml", true: "ours"}[ours], func(b *testing.B) {
			benchGraphRate(b, N*T, "Gvalues/s", func(c *Context) *Tensor {
				c.SetCPUKernels(ours)
				return c.GEGLUSecondHalf(c.InputF32(a, 2*N, T))
			})
		})
	}
}

// The by-row 1×3 columns of the UNet's first level at 512² (f16, two
// images) and of a band of the VAE's top level at 512² (f32); ggml's
// kernel and ours (cpu_kernels.c). Reported as columns' bytes written.
func BenchmarkIm2Col(b *testing.B) {
	for _, cs := range []struct {
		name       string
		w, h, c, n int64
		typ        Type
	}{{"unet_64x64x320x2_f16", 64, 64, 320, 2, TypeF16}, {"vae_512x64x128_f32", 512, 64, 128, 1, TypeF32}} {
		x := randn(rand.New(rand.NewPCG(4, 4)), int(cs.w*cs.h*cs.c*cs.n))
		for _, ours := range []bool{false, true} {
			b.Run(cs.name+map[bool]string{false: "_ggml", true: "_ours"}[ours], func(b *testing.B) {
				bytes := float64(3 * cs.c * cs.w * (cs.h + 2) * cs.n * int64(cs.typ.BlockBytes()))
				benchGraphRate(b, bytes, "GB/s", func(c *Context) *Tensor {
					c.SetCPUKernels(ours)
					shape := c.NewTensor(TypeF16, 3, 1, cs.c, 1)
					return c.Im2Col(shape, c.InputF32(x, cs.w, cs.h, cs.c, cs.n), 1, 1, 1, 1, 1, 1, cs.typ)
				})
			})
		}
	}
}

// Our attention kernel (pm_attention) at a 512² CFG step's shapes: the
// UNet's self-attention at 64² (10 heads over 1024 tokens) and 32² (20
// over 256), and its cross-attention over the 77 text tokens. Rates count
// both products (q·kᵀ and p·v).
func BenchmarkAttention(b *testing.B) {
	for _, cs := range []struct{ heads, nq, nk int64 }{{10, 1024, 1024}, {20, 256, 256}, {20, 256, 77}} {
		const D, B = 64, 2
		r := rand.New(rand.NewPCG(3, 3))
		q, k, v := randn(r, int(D*cs.heads*cs.nq*B)), randn(r, int(D*cs.heads*cs.nk*B)), randn(r, int(D*cs.heads*cs.nk*B))
		b.Run(fmt.Sprintf("%dx%dx%d", cs.heads, cs.nq, cs.nk), func(b *testing.B) {
			benchGraph(b, float64(4*D*cs.heads*cs.nq*cs.nk*B), func(c *Context) *Tensor {
				return c.AttentionCPU(c.InputF32(q, D, cs.heads, cs.nq, B), c.InputF32(k, D, cs.heads, cs.nk, B),
					c.InputF32(v, D, cs.heads, cs.nk, B), 0.125)
			})
		})
	}
}
