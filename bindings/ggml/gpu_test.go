package ggml

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// gpuBackend opens the first GPU whose backend library was found (make cuda
// puts it next to the binary; or $PHOTOMAKER_LIB_PATH), else the virtual
// GPU (vgpu.c), which takes a GPU's code paths and computes on the CPU.
func gpuBackend(t *testing.T) *Backend {
	t.Helper()
	dev, err := FindDevice("auto")
	if err != nil || dev.Type == DeviceCPU {
		dev = RegisterVirtualGPU(8 << 30)
	}
	b, err := NewBackend(dev, 0)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// TestGPUMatchesCPU runs the ops the models use on the GPU and on the CPU
// and compares: the GPU kernels are checked against the CPU ones, which the
// other tests check against float64 references. Without a GPU backend (CI)
// only the CPU side runs, so the cases stay valid; the tolerances allow for
// the GPU's own summation order and f16 accumulation in cuBLAS.
func TestGPUMatchesCPU(t *testing.T) {
	gpu := gpuBackend(t)
	r := rand.New(rand.NewPCG(7, 7))
	x := randn(r, 64*48*32*2) // an image [64, 48, 32, 2]
	w := randn(r, 3*3*32*16)  // a 3×3 kernel 32 → 16
	a := randn(r, 256*96)     // a matrix [256, 96]
	bm := randn(r, 256*80)    // [256, 80]
	q := randn(r, 64*77*8*2)  // attention [64, 77, 8, 2]
	kv := randn(r, 64*40*8*2) // [64, 40, 8, 2]
	wr := randn(r, 3*32*64*3) // a 3×3 kernel 32 → 64 by kernel row [kw, in, out, kh]
	for _, tc := range []struct {
		name  string
		tol   float64
		build func(c *Context) *Tensor
	}{
		// f32 products keep about 10 mantissa bits on GPUs: ggml-cuda runs
		// them in TF32 (its cuBLAS handles set CUBLAS_TF32_TENSOR_OP_MATH),
		// ggml-vulkan in f16 where the device has it.
		{"mul_mat f32", 1e-3, func(c *Context) *Tensor { return c.MulMat(c.InputF32(a, 256, 96), c.InputF32(bm, 256, 80)) }},
		{"mul_mat f16", 5e-3, func(c *Context) *Tensor {
			return c.MulMat(c.Cast(c.InputF32(a, 256, 96), TypeF16), c.InputF32(bm, 256, 80))
		}},
		// f32 accumulation: two matrices against one (MulMatF32), ggml-cuda's
		// batched cuBLAS path with 32-bit compute.
		{"mul_mat f16 f32 accumulation", 5e-3, func(c *Context) *Tensor {
			return c.MulMatF32(c.Cast(c.InputF32(a, 256, 96), TypeF16), c.InputF32(bm, 256, 80))
		}},
		// Two columns, as the time and pooled-text embeddings under CFG:
		// GPUs take matrix-vector kernels there, not the matrix ones.
		{"mul_mat f32 two columns", 1e-3, func(c *Context) *Tensor { return c.MulMat(c.InputF32(a, 256, 96), c.InputF32(bm[:512], 256, 2)) }},
		{"mul_mat f16 two columns", 5e-3, func(c *Context) *Tensor {
			return c.MulMatF32(c.Cast(c.InputF32(a, 256, 96), TypeF16), c.InputF32(bm[:512], 256, 2))
		}},
		// A bias kept in a weight's last columns (unet.foldBlock), times
		// rows of ones made on the device.
		{"mul_mat f16 by rows with ones", 5e-3, func(c *Context) *Tensor {
			return c.MulMatF32(c.Cast(c.InputF32(a, 256, 96), TypeF16), c.Concat(c.InputF32(bm[:248*80], 248, 80), c.Ones(8, 80), 0))
		}},
		// The weight times a vector (folding a layer norm's shift into the
		// product after it took this on the device, before unet.foldBlock).
		{"mul_mat f16 by a vector", 5e-3, func(c *Context) *Tensor {
			return c.MulMatF32(c.Cast(c.InputF32(a, 256, 96), TypeF16), c.InputF32(bm[:256], 256))
		}},
		// An f32 weight times a vector, the bias first in the add (ggml-cuda
		// fuses the pair), and times a vector that is a view into another
		// product's output (the folded biases' products, when the fold ran
		// on the device).
		{"mul_mat f32 by a vector plus a bias", 1e-5, func(c *Context) *Tensor {
			return c.Add(c.InputF32(bm[:96], 96), c.MulMat(c.InputF32(a, 256, 96), c.InputF32(bm[:256], 256)))
		}},
		{"mul_mat f32 by a view of a product", 1e-5, func(c *Context) *Tensor {
			p := c.MulMat(c.InputF32(a, 256, 96), c.InputF32(bm[:256], 256)) // [96]
			part := c.View(p, [4]int64{32, 1, 1, 1}, p.Nb(1), p.Nb(2), p.Nb(3), 64*p.Nb(0))
			return c.Add(c.InputF32(bm[:80], 80), c.MulMat(c.InputF32(bm[:32*80], 32, 80), part))
		}},
		{"mul_mat q8_0 two columns", 2e-2, func(c *Context) *Tensor {
			wq, _ := Quantize(TypeQ8_0, a, 256)
			return c.MulMat(c.Input(TypeQ8_0, wq, 256, 96), c.InputF32(bm[:512], 256, 2))
		}},
		{"mul_mat q4_K two columns", 2e-2, func(c *Context) *Tensor {
			wq, _ := Quantize(TypeQ4_K, a, 256)
			return c.MulMat(c.Input(TypeQ4_K, wq, 256, 96), c.InputF32(bm[:512], 256, 2))
		}},
		{"mul_mat q8_0", 2e-2, func(c *Context) *Tensor {
			wq, _ := Quantize(TypeQ8_0, a, 256)
			return c.MulMat(c.Input(TypeQ8_0, wq, 256, 96), c.InputF32(bm, 256, 80))
		}},
		{"mul_mat q4_K", 2e-2, func(c *Context) *Tensor {
			wq, _ := Quantize(TypeQ4_K, a, 256)
			return c.MulMat(c.Input(TypeQ4_K, wq, 256, 96), c.InputF32(bm, 256, 80))
		}},
		{"conv2d im2col f16", 5e-3, func(c *Context) *Tensor {
			return c.Conv2D(c.Cast(c.InputF32(w, 3, 3, 32, 16), TypeF16), c.InputF32(x, 64, 48, 32, 2), 1, 1, 1, 1, 1, 1)
		}},
		{"conv2d direct f32", 1e-4, func(c *Context) *Tensor {
			return c.Conv2DDirect(c.InputF32(w, 3, 3, 32, 16), c.InputF32(x, 64, 48, 32, 2), 2, 2, 1, 1, 1, 1)
		}},
		{"conv2d in row bands (row copies, im2col, pad, acc)", 1e-3, func(c *Context) *Tensor {
			// nn.BandedConv2D's ops: output rows 0-7 and 8-15 of a 3×3 conv
			img := c.InputF32(x[:64*48*32], 64, 48, 32, 1)
			kernel := c.Reshape(c.InputF32(w, 3, 3, 32, 16), 288, 16)
			shape := c.NewTensor(TypeF32, 3, 3, 32, 16)
			rows := func(lo, hi int64) *Tensor {
				return c.Cont(c.View(img, [4]int64{64, hi - lo, 32, 1}, img.Nb(1), img.Nb(2), img.Nb(3), lo*img.Nb(1)))
			}
			top := c.Im2Col(shape, rows(0, 9), 1, 1, 1, 1, 1, 1, TypeF32) // 9 rows out, 8 kept
			top = c.View(top, [4]int64{288, 64 * 8, 1, 1}, top.Nb(1), top.Nb(1)*512, top.Nb(1)*512, 0)
			inner := c.Im2Col(shape, rows(7, 17), 1, 1, 1, 0, 1, 1, TypeF32)
			y := c.Pad(c.MulMat(top, kernel), 512, 0, 0, 0, 0, 0, 0, 0)
			return c.AccInplace(y, c.MulMat(c.Reshape(inner, 288, 512), kernel), y.Nb(1), y.Nb(2), y.Nb(3), 512*4)
		}},
		{"conv2d by kernel row (1×3 im2col, row views, strided bias add)", 5e-3, func(c *Context) *Tensor {
			// nn.Conv2D's ops for a kernel stored by row, on a batch of 2:
			// each kernel row's product reads the im2col across both images
			img := c.InputF32(x, 64, 48, 32, 2)
			kernel := c.Cast(c.InputF32(wr, 3, 32, 64, 3), TypeF16)
			cols := c.Im2Col(c.NewTensor(TypeF16, 3, 1, 32, 1), img, 1, 1, 1, 1, 1, 1, TypeF16) // [96, 64, 50, 2]
			m := int64(2*50-2) * 64
			var y *Tensor
			for ky := int64(0); ky < 3; ky++ {
				rows := c.View(cols, [4]int64{96, m, 1, 1}, cols.Nb(1), cols.Nb(1)*m, cols.Nb(1)*m, ky*cols.Nb(2))
				k := c.View(kernel, [4]int64{96, 64, 1, 1}, kernel.Nb(2), kernel.Nb(3), kernel.Nb(3), ky*kernel.Nb(3))
				if p := c.MulMatF32(rows, k); y == nil {
					y = p
				} else {
					y = c.Add(y, p)
				}
			}
			out := c.View(y, [4]int64{64, 48, 64, 2}, 4*64, y.Nb(1), 4*64*50, 0)
			return c.Add(out, c.InputF32(bm[:64], 1, 1, 64, 1))
		}},
		{"group_norm", 1e-5, func(c *Context) *Tensor { return c.GroupNorm(c.InputF32(x, 64, 48, 32, 2), 8, 1e-5) }},
		{"norm", 1e-5, func(c *Context) *Tensor { return c.Norm(c.InputF32(a, 256, 96), 1e-5) }},
		{"soft_max", 1e-5, func(c *Context) *Tensor { return c.SoftMax(c.InputF32(a, 256, 96), nil, 0.125) }},
		{"flash_attn f16 kv", 5e-3, func(c *Context) *Tensor {
			k := c.Cast(c.InputF32(kv, 64, 40, 8, 2), TypeF16)
			v := c.Cast(c.InputF32(kv, 64, 40, 8, 2), TypeF16)
			return c.FlashAttn(c.InputF32(q, 64, 77, 8, 2), k, v, nil, 0.125)
		}},
		// As nn.Attend passes them: q a permuted view of [D·H, N, B], k and v
		// cast to f16 straight from such views.
		{"flash_attn permuted heads", 5e-3, func(c *Context) *Tensor {
			heads := func(x *Tensor, n int64) *Tensor { return c.Permute(c.Reshape(x, 64, 8, n, 2), 0, 2, 1, 3) }
			k := c.Cast(heads(c.InputF32(kv, 512, 40, 2), 40), TypeF16)
			v := c.Cast(heads(c.InputF32(kv, 512, 40, 2), 40), TypeF16)
			return c.FlashAttn(heads(c.InputF32(q, 512, 77, 2), 77), k, v, nil, 0.125)
		}},
		// unet's self-attention: query, key and value rows of one product
		// [3·512, N, B], cast to f16 at once; the kernel reads the keys and
		// values through the strides of views of it.
		{"flash_attn on views of one f16 cast", 5e-3, func(c *Context) *Tensor {
			qkv := c.InputF32(x[:3*512*40*2], 3*512, 40, 2)
			h := c.Cast(qkv, TypeF16)
			heads := func(t *Tensor, part int64) *Tensor {
				v := c.View(t, [4]int64{64, 8, 40, 2}, 64*t.Nb(0), t.Nb(1), t.Nb(2), part*512*t.Nb(0))
				return c.Permute(v, 0, 2, 1, 3)
			}
			return c.FlashAttn(heads(qkv, 0), heads(h, 1), heads(h, 2), nil, 0.125)
		}},
		// ggml's CPU GELU reads an f16 table (TestElementwise): 1e-3-level.
		{"gelu silu geglu", 2e-3, func(c *Context) *Tensor {
			in := c.InputF32(a, 256, 96)
			return c.Add(c.Add(c.GELU(in), c.SiLU(in)), c.Concat(c.GEGLUSecondHalf(in), c.GEGLUSecondHalf(in), 0))
		}},
		{"upscale concat broadcast", 1e-6, func(c *Context) *Tensor {
			img := c.InputF32(x, 64, 48, 32, 2)
			half := c.Cont(c.View(img, [4]int64{32, 24, 32, 2}, img.Nb(1), img.Nb(2), img.Nb(3), 0))
			up := c.UpscaleNearest(half, 2)
			bias := c.Reshape(c.Cont(c.View(c.InputF32(a, 256, 96), [4]int64{32, 1, 1, 1}, 0, 0, 0, 0)), 1, 1, 32, 1)
			return c.Concat(c.Add(up, bias), img, 2)
		}},
		// sin and cos of t·f for t up to 999: one float32 ulp of an
		// argument near 999 is 6e-5, so the two sides' exp and product
		// roundings alone move the values by up to about 1e-4.
		{"timestep embedding", 1e-4, func(c *Context) *Tensor {
			return c.TimestepEmbedding(c.InputF32([]float32{999, 500, 1, 0}, 4), 320, 10000)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantShape := computeOn(t, cpuBackend(t), tc.build)
			for _, v := range want {
				require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
			}
			if gpu == nil {
				t.Skip("no GPU backend loaded (build one with `make cuda`; see ggml/README.md)")
			}
			got, gotShape := computeOn(t, gpu, tc.build)
			require.Equal(t, wantShape, gotShape)
			ref := make([]float64, len(want))
			for i, v := range want {
				ref[i] = float64(v)
			}
			e := relErr(got, ref)
			t.Logf("%s on %s: relative error vs CPU %.3g", tc.name, gpu.Dev.Name, e)
			require.LessOrEqual(t, e, tc.tol)
		})
	}
}

// TestStateUpdatesInPlace is the sampler loop's pattern on every backend
// found: a tensor in a persistent buffer (AllocState) is read, combined with
// per-run coefficients taken as one-element views of a small input, and
// overwritten by the same graph, which is computed again and again as a
// replay (CUDA graph capture on a GPU). Each run must see the previous
// run's result and the new coefficients. CopyFrom then copies the state
// within the device (how a loop switches conditioning) and the new values
// reach the next run.
func TestStateUpdatesInPlace(t *testing.T) {
	backends := []*Backend{cpuBackend(t)}
	if gpu := gpuBackend(t); gpu != nil {
		backends = append(backends, gpu)
	}
	r := rand.New(rand.NewPCG(5, 5))
	start := randn(r, 16*8*4)
	for _, b := range backends {
		t.Run(b.Dev.Name, func(t *testing.T) {
			s := schedulerOn(t, b, 64)
			state := NewContext(3, 0)
			defer state.Free()
			x := state.NewTensor(TypeF32, 16, 8, 4)
			stash := state.NewTensor(TypeF32, 16, 8, 4)
			odd := state.NewTensor(TypeF32, 16, 8, 2)
			require.False(t, x.InHostMemory(), "no memory yet")
			buf, err := b.AllocState(state)
			require.NoError(t, err)
			defer buf.Free()
			require.Equal(t, b.IsCPU(), x.InHostMemory())
			require.NoError(t, x.SetData(F32Bytes(start)))

			ctx := NewContext(64, 64)
			defer ctx.Free()
			coef := ctx.InputF32(make([]float32, 3), 3)
			k := func(i int) *Tensor { return ctx.View(coef, [4]int64{1, 1, 1, 1}, 4, 4, 4, int64(4*i)) }
			// x ← clamp(x/k0, ±2)·k1 + x·k2
			next := ctx.Add(ctx.Mul(ctx.Clamp(ctx.Div(x, k(0)), -2, 2), k(1)), ctx.Mul(x, k(2)))
			out := ctx.Copy(next, x).SetOutput()
			g := ctx.NewGraph(64)
			g.Expand(out)

			want := append([]float32{}, start...)
			for run := range 4 {
				c := []float32{1.5 + float32(run), 0.5, -0.25 * float32(run)}
				require.NoError(t, ctx.SetInputF32(coef, c))
				s.SetReplay(true)
				require.NoError(t, s.Compute(context.Background(), g))
				for i, v := range want {
					want[i] = min(max(v/c[0], -2), 2)*c[1] + v*c[2]
				}
			}
			got := x.Float32()
			for i := range want {
				require.InDelta(t, want[i], got[i], 1e-5, "element %d", i)
			}

			require.NoError(t, stash.SetData(F32Bytes(start)))
			require.Error(t, x.CopyFrom(odd), "shapes differ")
			require.NoError(t, x.CopyFrom(stash))
			c := []float32{2, 1, 1}
			require.NoError(t, ctx.SetInputF32(coef, c))
			require.NoError(t, s.Compute(context.Background(), g))
			got = x.Float32()
			for i, v := range start {
				require.InDelta(t, min(max(v/c[0], -2), 2)*c[1]+v*c[2], got[i], 1e-5, "element %d after CopyFrom", i)
			}
			s.SetReplay(false)
		})
	}
}

// A loaded backend library logs through our Logger, not straight to
// stderr (adoptBase): its memory query leaves a debug record here.
func TestBackendLogsReachLogger(t *testing.T) {
	if len(LoadBackends()) == 0 {
		t.Skip("no GPU backend library loaded (build one with `make cuda`; see ggml/README.md)")
	}
	dev, err := FindDevice("auto")
	require.NoError(t, err)
	var logs bytes.Buffer
	old := Logger
	Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	defer func() { Logger = old }()
	dev.Memory()
	require.Contains(t, logs.String(), "ggml: ", "the %s library's messages bypass our logger", dev.Name)
}

// TestWeightOpsRunOnDevice: products on views of weights (the UNet's kernel
// rows) run on the GPU whether the weights sit in its memory or stream from
// host memory (--vram stream), where the scheduler offloads an op only when
// it sees the weights behind it. Session 19 measured the 3×3 convolutions
// on the CPU in stream mode, 6× slower, before views of weights were placed
// at once.
func TestWeightOpsRunOnDevice(t *testing.T) {
	gpu := gpuBackend(t)
	r := rand.New(rand.NewPCG(9, 9))
	wv, xv := randn(r, 32*48*3), randn(r, 32*64)
	for _, where := range []string{"device", "host"} {
		t.Run(where, func(t *testing.T) {
			wctx := NewContext(1, 0)
			defer wctx.Free()
			w := wctx.NewTensor(TypeF32, 32, 48*3) // three kernel rows of 32 inputs and 48 outputs each
			alloc := gpu.Alloc
			if where == "host" {
				alloc = gpu.AllocHost
			}
			buf, err := alloc(wctx)
			require.NoError(t, err)
			defer buf.Free()
			require.NoError(t, w.SetData(F32Bytes(wv)))

			ctx := NewContext(64, 64)
			defer ctx.Free()
			x := ctx.InputF32(xv, 32, 64)
			row := ctx.View(w, [4]int64{32, 48, 1, 1}, w.Nb(1), w.Nb(1)*48, w.Nb(1)*48, w.Nb(1)*48) // the middle row
			y := ctx.MulMat(row, x).SetOutput()
			g := ctx.NewGraph(64)
			g.Expand(y)
			s := schedulerOn(t, gpu, 64)
			require.NoError(t, s.Compute(context.Background(), g))
			require.Equal(t, g.FLOPs(), flopsOn(s, g, gpu), "every product on %s", gpu.Dev.Name)
			got := y.Float32()
			for _, i := range []int{0, 47, 48*63 + 5} {
				o, n := i%48, i/48
				var want float64
				for k := range 32 {
					want += float64(wv[32*(48+o)+k]) * float64(xv[32*n+k])
				}
				require.InDelta(t, want, got[i], 1e-2*(1+math.Abs(want)), "element %d", i)
			}
		})
	}
}
