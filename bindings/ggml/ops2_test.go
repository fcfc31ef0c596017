package ggml

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// conv2dRef: x [W,H,C,N], w [KW,KH,C,OC] (ggml order) → [OW,OH,OC,N].
func conv2dRef(x []float32, xd dims, w []float32, wd dims, s, p int) ([]float64, dims) {
	ow := (xd[0]+2*p-wd[0])/s + 1
	oh := (xd[1]+2*p-wd[1])/s + 1
	od := dims{ow, oh, wd[3], xd[3]}
	out := make([]float64, od.n())
	for n := 0; n < xd[3]; n++ {
		for oc := 0; oc < wd[3]; oc++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					sum := 0.0
					for c := 0; c < xd[2]; c++ {
						for ky := 0; ky < wd[1]; ky++ {
							iy := oy*s - p + ky
							if iy < 0 || iy >= xd[1] {
								continue
							}
							for kx := 0; kx < wd[0]; kx++ {
								ix := ox*s - p + kx
								if ix < 0 || ix >= xd[0] {
									continue
								}
								sum += float64(x[xd.at(ix, iy, c, n)]) * float64(w[wd.at(kx, ky, c, oc)])
							}
						}
					}
					out[od.at(ox, oy, oc, n)] = sum
				}
			}
		}
	}
	return out, od
}

func TestConv2D(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	xd := dims{16, 12, 32, 2}
	x := randn(r, xd.n())
	for _, cs := range []struct {
		name   string
		k, s   int
		direct bool
		typ    Type
		tol    float64
	}{
		{"3x3 im2col f32", 3, 1, false, TypeF32, 1e-5},
		{"3x3 stride2 im2col f32", 3, 2, false, TypeF32, 1e-5},
		{"1x1 im2col f32", 1, 1, false, TypeF32, 1e-5},
		{"3x3 im2col f16", 3, 1, false, TypeF16, 2e-3},
		{"3x3 direct f32", 3, 1, true, TypeF32, 1e-5},
		{"3x3 stride2 direct f32", 3, 2, true, TypeF32, 1e-5},
	} {
		t.Run(cs.name, func(t *testing.T) {
			wd := dims{cs.k, cs.k, 32, 64}
			w := randn(r, wd.n())
			p := cs.k / 2
			ref, od := conv2dRef(x, xd, w, wd, cs.s, p)
			got, shape := compute(t, func(c *Context) *Tensor {
				wt := c.Input(cs.typ, mustQuantizeOrCast(t, cs.typ, w, int64(cs.k)), int64(wd[0]), int64(wd[1]), int64(wd[2]), int64(wd[3]))
				xt := c.InputF32(x, int64(xd[0]), int64(xd[1]), int64(xd[2]), int64(xd[3]))
				if cs.direct {
					return c.Conv2DDirect(wt, xt, cs.s, cs.s, p, p, 1, 1)
				}
				return c.Conv2D(wt, xt, cs.s, cs.s, p, p, 1, 1)
			})
			require.Equal(t, [4]int64{int64(od[0]), int64(od[1]), int64(od[2]), int64(od[3])}, shape)
			checkRel(t, cs.name, got, ref, cs.tol)
		})
	}
	// Im2Col alone: column k of output pixel (ox,oy) is input (c,ky,kx).
	wd := dims{3, 3, 32, 8}
	got, shape := compute(t, func(c *Context) *Tensor {
		return c.Im2Col(c.NewTensor(TypeF32, 3, 3, 32, 8), c.InputF32(x, 16, 12, 32, 2), 1, 1, 1, 1, 1, 1, TypeF32)
	})
	require.Equal(t, [4]int64{int64(32 * 9), 16, 12, 2}, shape)
	ref := make([]float64, len(got))
	i := 0
	for n := 0; n < 2; n++ {
		for oy := 0; oy < 12; oy++ {
			for ox := 0; ox < 16; ox++ {
				for ch := 0; ch < wd[2]; ch++ {
					for ky := 0; ky < 3; ky++ {
						for kx := 0; kx < 3; kx++ {
							ix, iy := ox-1+kx, oy-1+ky
							if ix >= 0 && ix < 16 && iy >= 0 && iy < 12 {
								ref[i] = float64(x[xd.at(ix, iy, ch, n)])
							}
							i++
						}
					}
				}
			}
		}
	}
	checkRel(t, "im2col", got, ref, 0)
}

func TestNorms(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	d := dims{8, 6, 64, 2} // W, H, C, N
	x := randn(r, d.n())
	for i := range x {
		x[i] = x[i]*3 + 1 // non-zero mean, non-unit variance
	}
	// group_norm over 32 groups of 2 channels each.
	ref := make([]float64, d.n())
	per := d[0] * d[1] * 2
	for n := 0; n < d[3]; n++ {
		for g := 0; g < 32; g++ {
			off := d.at(0, 0, 2*g, n)
			mean, sq := 0.0, 0.0
			for i := 0; i < per; i++ {
				mean += float64(x[off+i])
			}
			mean /= float64(per)
			for i := 0; i < per; i++ {
				sq += (float64(x[off+i]) - mean) * (float64(x[off+i]) - mean)
			}
			inv := 1 / math.Sqrt(sq/float64(per)+1e-6)
			for i := 0; i < per; i++ {
				ref[off+i] = (float64(x[off+i]) - mean) * inv
			}
		}
	}
	got, _ := compute(t, func(c *Context) *Tensor { return c.GroupNorm(c.InputF32(x, 8, 6, 64, 2), 32, 1e-6) })
	checkRel(t, "group_norm", got, ref, 1e-5)

	// norm over rows of 64 (layer norm without affine), on a permuted view.
	rows := d.n() / 64
	y := x[:rows*64]
	ref = make([]float64, len(y))
	for r := 0; r < rows; r++ {
		mean, sq := 0.0, 0.0
		for i := 0; i < 64; i++ {
			mean += float64(y[r*64+i])
		}
		mean /= 64
		for i := 0; i < 64; i++ {
			sq += (float64(y[r*64+i]) - mean) * (float64(y[r*64+i]) - mean)
		}
		inv := 1 / math.Sqrt(sq/64+1e-5)
		for i := 0; i < 64; i++ {
			ref[r*64+i] = (float64(y[r*64+i]) - mean) * inv
		}
	}
	got, _ = compute(t, func(c *Context) *Tensor { return c.Norm(c.InputF32(y, 64, int64(rows)), 1e-5) })
	checkRel(t, "norm", got, ref, 1e-5)
}

func softmaxRows(s []float64, n int) {
	for r := 0; r < len(s)/n; r++ {
		row := s[r*n : (r+1)*n]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		sum := 0.0
		for i := range row {
			row[i] = math.Exp(row[i] - m)
			sum += row[i]
		}
		for i := range row {
			row[i] /= sum
		}
	}
}

// attentionRef: q [D,Nq,H,B], k,v [D,Nk,H,B] → out [D,Nq,H,B] (PyTorch SDPA).
func attentionRef(q, k, v []float32, D, Nq, Nk, H, B int, scale float64, causal bool) []float64 {
	out := make([]float64, D*Nq*H*B)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			base := func(n, i int) int { return ((b*H+h)*n + i) * D }
			for i := 0; i < Nq; i++ {
				s := make([]float64, Nk)
				for j := 0; j < Nk; j++ {
					for d := 0; d < D; d++ {
						s[j] += float64(q[base(Nq, i)+d]) * float64(k[base(Nk, j)+d])
					}
					s[j] *= scale
					if causal && j > i {
						s[j] = math.Inf(-1)
					}
				}
				softmaxRows(s, Nk)
				for j := 0; j < Nk; j++ {
					for d := 0; d < D; d++ {
						out[base(Nq, i)+d] += s[j] * float64(v[base(Nk, j)+d])
					}
				}
			}
		}
	}
	return out
}

func TestAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	D, Nq, Nk, H, B := 64, 64, 77, 2, 2
	q, k, v := randn(r, D*Nq*H*B), randn(r, D*Nk*H*B), randn(r, D*Nk*H*B)
	scale := 1 / math.Sqrt(float64(D))
	ref := attentionRef(q, k, v, D, Nq, Nk, H, B, scale, false)

	// soft_max_ext path: scores = kᵀq per head, softmax over keys, then v.
	got, _ := compute(t, func(c *Context) *Tensor {
		qt := c.Permute(c.InputF32(q, int64(D), int64(Nq), int64(H), int64(B)), 0, 1, 2, 3)
		kt := c.InputF32(k, int64(D), int64(Nk), int64(H), int64(B))
		vt := c.InputF32(v, int64(D), int64(Nk), int64(H), int64(B))
		s := c.SoftMax(c.MulMat(kt, qt), nil, float32(scale)) // [Nk, Nq, H, B]
		return c.MulMat(c.Cont(c.Permute(vt, 1, 0, 2, 3)), s) // [D, Nq, H, B]
	})
	checkRel(t, "soft_max attention", got, ref, 1e-5)

	// flash path with f16 K/V; result is [D, H, Nq, B]: permute back.
	for _, kvType := range []Type{TypeF16, TypeF32} {
		got, _ = compute(t, func(c *Context) *Tensor {
			qt := c.InputF32(q, int64(D), int64(Nq), int64(H), int64(B))
			kt := c.Cast(c.InputF32(k, int64(D), int64(Nk), int64(H), int64(B)), kvType)
			vt := c.Cast(c.InputF32(v, int64(D), int64(Nk), int64(H), int64(B)), kvType)
			o := c.FlashAttn(qt, kt, vt, nil, float32(scale))
			return c.Cont(c.Permute(o, 0, 2, 1, 3))
		})
		tol := 1e-5
		if kvType == TypeF16 {
			tol = 2e-3
		}
		checkRel(t, "flash_attn_ext kv "+kvType.String(), got, ref, tol)
	}

	// Causal mask through soft_max_ext (CLIP's text encoder).
	n := 16
	qc, kc := q[:D*n], k[:D*n]
	refC := attentionRef(qc, kc, v[:D*n], D, n, n, 1, 1, scale, true)
	mask := make([]float32, n*n)
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			mask[i*n+j] = float32(math.Inf(-1))
		}
	}
	got, _ = compute(t, func(c *Context) *Tensor {
		s := c.SoftMax(c.MulMat(c.InputF32(kc, int64(D), int64(n)), c.InputF32(qc, int64(D), int64(n))), c.InputF32(mask, int64(n), int64(n)), float32(scale))
		return c.MulMat(c.Cont(c.Transpose(c.InputF32(v[:D*n], int64(D), int64(n)))), s)
	})
	checkRel(t, "causal soft_max", got, refC, 1e-5)
}

func TestShapeOps(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	d := dims{4, 5, 6, 2}
	x := randn(r, d.n())
	in := func(c *Context) *Tensor { return c.InputF32(x, 4, 5, 6, 2) }

	t.Run("permute+cont", func(t *testing.T) {
		got, shape := compute(t, func(c *Context) *Tensor { return c.Cont(c.Permute(in(c), 2, 0, 1, 3)) })
		// dim0→2, dim1→0, dim2→1: new shape [5, 6, 4, 2]
		require.Equal(t, [4]int64{5, 6, 4, 2}, shape)
		nd := dims{5, 6, 4, 2}
		ref := make([]float64, d.n())
		d.each(func(a, b, c, n int) { ref[nd.at(b, c, a, n)] = float64(x[d.at(a, b, c, n)]) })
		checkRel(t, "permute", got, ref, 0)
	})
	t.Run("ones after rows", func(t *testing.T) {
		got, shape := compute(t, func(c *Context) *Tensor { return c.Concat(in(c), c.Ones(3, 5, 6, 2), 0) })
		require.Equal(t, [4]int64{7, 5, 6, 2}, shape)
		nd := dims{7, 5, 6, 2}
		ref := make([]float64, nd.n())
		nd.each(func(a, b, c, n int) {
			ref[nd.at(a, b, c, n)] = 1
			if a < 4 {
				ref[nd.at(a, b, c, n)] = float64(x[d.at(a, b, c, n)])
			}
		})
		checkRel(t, "ones", got, ref, 0)
	})
	t.Run("concat dim2", func(t *testing.T) {
		got, shape := compute(t, func(c *Context) *Tensor { return c.Concat(in(c), in(c), 2) })
		require.Equal(t, [4]int64{4, 5, 12, 2}, shape)
		nd := dims{4, 5, 12, 2}
		ref := make([]float64, nd.n())
		nd.each(func(a, b, c, n int) { ref[nd.at(a, b, c, n)] = float64(x[d.at(a, b, c%6, n)]) })
		checkRel(t, "concat", got, ref, 0)
	})
	t.Run("pad", func(t *testing.T) {
		got, shape := compute(t, func(c *Context) *Tensor { return c.Pad(in(c), 0, 1, 0, 1, 0, 0, 0, 0) })
		require.Equal(t, [4]int64{5, 6, 6, 2}, shape)
		nd := dims{5, 6, 6, 2}
		ref := make([]float64, nd.n())
		d.each(func(a, b, c, n int) { ref[nd.at(a, b, c, n)] = float64(x[d.at(a, b, c, n)]) })
		checkRel(t, "pad", got, ref, 0)
	})
	t.Run("upscale nearest", func(t *testing.T) {
		for _, f := range []func(c *Context) *Tensor{
			func(c *Context) *Tensor { return c.UpscaleNearest(in(c), 2) },
			func(c *Context) *Tensor { return c.InterpolateNearest(in(c), 8, 10, 6, 2) },
		} {
			got, shape := compute(t, f)
			require.Equal(t, [4]int64{8, 10, 6, 2}, shape)
			nd := dims{8, 10, 6, 2}
			ref := make([]float64, nd.n())
			nd.each(func(a, b, c, n int) { ref[nd.at(a, b, c, n)] = float64(x[d.at(a/2, b/2, c, n)]) })
			checkRel(t, "upscale", got, ref, 0)
		}
	})
	t.Run("get_rows", func(t *testing.T) {
		emb := randn(r, 16*10)
		got, shape := compute(t, func(c *Context) *Tensor {
			return c.GetRows(c.InputF32(emb, 16, 10), c.InputI32([]int32{3, 0, 9, 3}, 4))
		})
		require.Equal(t, [4]int64{16, 4, 1, 1}, shape)
		var ref []float64
		for _, i := range []int{3, 0, 9, 3} {
			ref = append(ref, f64(emb[i*16:(i+1)*16])...)
		}
		checkRel(t, "get_rows", got, ref, 0)
	})
	t.Run("repeat+reshape+view", func(t *testing.T) {
		got, _ := compute(t, func(c *Context) *Tensor {
			row := c.View(in(c), [4]int64{4, 1, 1, 1}, 16, 16, 16, 16) // the second row
			return c.Repeat(c.Reshape(c.Cont(row), 4), c.NewTensor(TypeF32, 4, 3))
		})
		ref := f64(append(append(append([]float32{}, x[4:8]...), x[4:8]...), x[4:8]...))
		checkRel(t, "repeat", got, ref, 0)
	})
	t.Run("cast f16 round trip", func(t *testing.T) {
		got, _ := compute(t, func(c *Context) *Tensor { return c.Cast(c.Cast(in(c), TypeF16), TypeF32) })
		checkRel(t, "cast", got, f64(x), 1e-3)
	})
	t.Run("geglu second half", func(t *testing.T) {
		// diffusers: h, gate = proj(x).chunk(2); h * gelu(gate).
		w := randn(r, 2*8*3)
		got, shape := compute(t, func(c *Context) *Tensor { return c.GEGLUSecondHalf(c.InputF32(w, 16, 3)) })
		require.Equal(t, [4]int64{8, 3, 1, 1}, shape)
		ref := make([]float64, 8*3)
		for row := 0; row < 3; row++ {
			for i := 0; i < 8; i++ {
				h, g := float64(w[row*16+i]), float64(w[row*16+8+i])
				ref[row*8+i] = h * 0.5 * g * (1 + math.Erf(g/math.Sqrt2))
			}
		}
		checkRel(t, "geglu", got, ref, 2e-3)
	})
	t.Run("arange+timestep_embedding", func(t *testing.T) {
		got, _ := compute(t, func(c *Context) *Tensor { return c.Arange(0, 5, 1) })
		require.Equal(t, []float32{0, 1, 2, 3, 4}, got)
		ts := []float32{999, 500, 1}
		dim := 32
		got, shape := compute(t, func(c *Context) *Tensor { return c.TimestepEmbedding(c.InputF32(ts, 3), dim, 10000) })
		require.Equal(t, [4]int64{int64(dim), 3, 1, 1}, shape)
		ref := make([]float64, dim*3)
		half := dim / 2
		for i, tv := range ts {
			for j := 0; j < half; j++ {
				f := math.Exp(-math.Log(10000) * float64(j) / float64(half))
				ref[i*dim+j] = math.Cos(float64(tv) * f) // cos first: flip_sin_to_cos
				ref[i*dim+half+j] = math.Sin(float64(tv) * f)
			}
		}
		checkRel(t, "timestep_embedding", got, ref, 1e-5)
	})
}

// Unsupported finds the nodes a backend cannot compute: the CPU has no
// product of f16 weights with q8_0 activations (its f16 kernels take f16 or
// f32 operands), and has everything else here.
func TestUnsupported(t *testing.T) {
	cpu := cpuBackend(t)
	ctx := NewContext(16, 16)
	defer ctx.Free()
	a := ctx.NewTensor(TypeF16, 32, 4)
	good := ctx.MulMat(a, ctx.NewTensor(TypeF32, 32, 2))
	bad := ctx.MulMat(a, ctx.NewTensor(TypeQ8_0, 32, 2))
	g := ctx.NewGraph(16)
	g.Expand(ctx.Add(good, good))
	require.Empty(t, cpu.Unsupported(g))
	g.Expand(ctx.Add(bad, good))
	require.Equal(t, map[string]int{"MUL_MAT": 1}, cpu.Unsupported(g))
}

// A large 2-D product with f32 accumulation is computed as two matrices
// (ggml-cuda's fast batched path) without changing a single value or the
// result's layout; narrow ones stay one product.
func TestMulMatF32Batches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	a, b := randn(r, 32*24), randn(r, 32*128)
	plain, shape := computeOn(t, cpuBackend(t), func(c *Context) *Tensor {
		return c.MulMat(c.Cast(c.InputF32(a, 32, 24), TypeF16), c.InputF32(b, 32, 128))
	})
	var prod *Tensor
	split, splitShape := computeOn(t, cpuBackend(t), func(c *Context) *Tensor {
		y := c.MulMatF32(c.Cast(c.InputF32(a, 32, 24), TypeF16), c.InputF32(b, 32, 128))
		prod = y.Src(0)
		return y
	})
	require.Equal(t, [4]int64{24, 128, 1, 1}, splitShape)
	require.Equal(t, shape, splitShape)
	require.Equal(t, plain, split)
	require.Equal(t, "MUL_MAT", prod.Op())
	require.True(t, prod.PreciseF32())
	require.Equal(t, int64(2), prod.Src(1).Ne(2))

	ctx := NewContext(8, 8)
	defer ctx.Free()
	narrow := ctx.MulMatF32(ctx.NewTensor(TypeF16, 32, 24), ctx.NewTensor(TypeF32, 32, 16))
	require.Equal(t, "MUL_MAT", narrow.Op())
	require.True(t, narrow.PreciseF32())
}

// Profiling times every op but the free views, once per computation, and
// leaves the results alone; Profile(nil) stops it.
func TestOpProfile(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	a, b := randn(r, 64*32), randn(r, 64*48)
	s := schedulerOn(t, cpuBackend(t), 64)
	ctx := NewContext(64, 64)
	defer ctx.Free()
	y := ctx.MulMat(ctx.InputF32(a, 64, 32), ctx.InputF32(b, 64, 48))
	sum := ctx.Add(ctx.Reshape(y, 32*48), ctx.Reshape(y, 32*48))
	big := ctx.Scale(ctx.InputF32(make([]float32, 2*32*48), 2*32*48), 1)
	into := ctx.View(big, [4]int64{32 * 48, 1, 1, 1}, 4*32*48, 4*32*48, 4*32*48, 4*32*48)
	out := ctx.Copy(sum, into).SetOutput() // into a view of a larger tensor
	biased := ctx.Add(y, ctx.InputF32(make([]float32, 32), 32)).SetOutput()
	g := ctx.NewGraph(64)
	g.Expand(out)
	g.Expand(biased)

	require.NoError(t, s.Compute(t.Context(), g))
	want := out.Float32()
	p := NewOpProfile()
	s.Profile(p)
	for range 3 {
		require.NoError(t, s.Compute(t.Context(), g))
		require.Equal(t, want, out.Float32())
	}
	s.Profile(nil)
	require.NoError(t, s.Compute(t.Context(), g))
	times := p.Times()
	require.Len(t, times, 4, "%v", times)
	ops, shapes := map[string][3]int64{}, map[string][]string{}
	for _, op := range times {
		ops[op.Op] = [3]int64{int64(op.Count), op.Bytes, op.FLOPs}
		require.Greater(t, op.Seconds, 0.0, op.Op)
		var sum [3]int64
		var seconds float64
		for _, sh := range op.Shapes {
			shapes[op.Op] = append(shapes[op.Op], sh.Op)
			sum[0], sum[1], sum[2] = sum[0]+int64(sh.Count), sum[1]+sh.Bytes, sum[2]+sh.FLOPs
			seconds += sh.Seconds
		}
		require.Equal(t, ops[op.Op], sum, "%s: its shapes add up to it", op.Op)
		require.InDelta(t, op.Seconds, seconds, 1e-9, op.Op)
	}
	slices.Sort(shapes["ADD"]) // two shapes, in either order of time
	require.Equal(t, map[string][]string{"MUL_MAT f32·f32": {"64×32, 64×48"}, "ADD": {"1536, 1536", "32×48, 32"}, "CPY": {"1536, 1536"}, "SCALE": {"3072"}}, shapes)
	for _, op := range times {
		if op.Op == "ADD" {
			require.Equal(t, 3, op.Shapes[0].Count)
			require.Equal(t, 3, op.Shapes[1].Count)
			require.GreaterOrEqual(t, op.Shapes[0].Seconds, op.Shapes[1].Seconds, "the most time first")
		}
	}
	// Per run: the product reads 64×32 and 64×48 floats and writes 32×48,
	// 2·64·32·48 FLOPs; the sum reads two views of it and writes one more,
	// the bias reads it and 32 floats and writes as much; the copy reads
	// the sum and writes as much, not all of its destination.
	require.Equal(t, map[string][3]int64{
		"MUL_MAT f32·f32": {3, 3 * 4 * (64*32 + 64*48 + 32*48), 3 * 2 * 64 * 32 * 48},
		"ADD":             {6, 3 * 4 * (3*32*48 + 2*32*48 + 32), 0},
		"CPY":             {3, 3 * 4 * 2 * 32 * 48, 0},
		"SCALE":           {3, 3 * 4 * 2 * 2 * 32 * 48, 0},
	}, ops)
}

// A graph's FLOPs are its products' multiply-adds, twice: counted here by
// hand for a product, a fused attention, a direct convolution and our CPU
// kernels.
func TestGraphFLOPs(t *testing.T) {
	c := NewContext(64, 0)
	defer c.Free()
	a, b := c.NewTensor(TypeF16, 64, 32), c.NewTensor(TypeF32, 64, 16, 3)
	q := c.NewTensor(TypeF32, 64, 10, 4, 2)                                        // D 64, 10 queries, 4 heads, batch 2
	k, v := c.NewTensor(TypeF16, 64, 20, 4, 2), c.NewTensor(TypeF16, 64, 20, 4, 2) // 20 keys
	kernel, img := c.NewTensor(TypeF32, 3, 3, 8, 5), c.NewTensor(TypeF32, 12, 12, 8, 1)
	g := c.NewGraph(64)
	g.Expand(c.MulMat(a, b))
	require.Equal(t, int64(2*64*32*16*3), g.FLOPs())
	g.Expand(c.FlashAttn(q, k, v, nil, 0.125))
	require.Equal(t, int64(2*64*32*16*3+2*(2*64*10*20*4*2)), g.FLOPs())
	g.Expand(c.Conv2DDirect(kernel, img, 1, 1, 1, 1, 1, 1)) // 12×12 output, 5 channels
	require.Equal(t, int64(2*64*32*16*3+2*(2*64*10*20*4*2)+2*(3*3*8)*(12*12*5)), g.FLOPs())
	kh, vh := c.NewTensor(TypeF32, 64, 4, 20, 2), c.NewTensor(TypeF32, 64, 4, 20, 2)
	g.Expand(c.AttentionCPU(c.NewTensor(TypeF32, 64, 4, 10, 2), kh, vh, 0.125)) // as the flash case: 20 keys, 10 queries
	require.Equal(t, int64(2*64*32*16*3+2*(2*64*10*20*4*2)+2*(3*3*8)*(12*12*5)+2*(2*64*10*20*4*2)), g.FLOPs())
	c.SetCPUKernels(true)
	cols := c.Im2Col(kernel, img, 1, 1, 1, 1, 1, 1, TypeF32)
	require.Equal(t, "CUSTOM", cols.Op()) // our other custom op: no products
	g.Expand(cols)
	g.Expand(c.Add(b, b)) // not counted
	total := int64(2*64*32*16*3 + 2*(2*64*10*20*4*2) + 2*(3*3*8)*(12*12*5) + 2*(2*64*10*20*4*2))
	require.Equal(t, total, g.FLOPs())
	// Our products and convolutions: what they multiply (Winograd: 16 per
	// 2×2 output tile and channel pair, or 36 per 4×4 tile; its kernel
	// transform none).
	mm := c.MulMat(c.NewTensor(TypeF32, 256, 256), c.NewTensor(TypeF32, 256, 64))
	require.Equal(t, "CUSTOM", mm.Op())
	g.Expand(mm)
	total += 2 * 256 * 256 * 64
	require.Equal(t, total, g.FLOPs())
	byRow := c.NewTensor(TypeF32, 3, 8, 5, 3)
	g.Expand(c.Conv3x3CPU(byRow, img, nil))
	total += 2 * 16 * (6 * 6) * 8 * 5
	require.Equal(t, total, g.FLOPs())
	g.Expand(c.UpsampleConv3x3CPU(byRow, img, nil)) // 24×24 output
	total += 2 * 16 * (12 * 12) * 8 * 5
	require.Equal(t, total, g.FLOPs())
	g.Expand(c.Conv3x3CPU(byRow, c.NewTensor(TypeF32, 66, 64, 8, 1), nil)) // F(4×4): 36 per 4×4 tile
	total += 2 * 36 * (17 * 16) * 8 * 5
	require.Equal(t, total, g.FLOPs())
	defer setConv3x3CPUGroupFloats(setConv3x3CPUGroupFloats(16 * 8 * 8))
	require.Equal(t, int64(3), conv3x3CPUGroups(8, 24, 12*12))
	g.Expand(c.Conv3x3CPU(c.NewTensor(TypeF32, 3, 8, 24, 3), img, nil)) // in three groups of 8 output channels
	total += 2 * 16 * (6 * 6) * 8 * 24
	require.Equal(t, total, g.FLOPs())
	g.Expand(c.Conv1x1CPU(c.NewTensor(TypeF32, 64, 40), c.NewTensor(TypeF32, 32, 32, 64, 2), nil))
	total += 2 * (32 * 32 * 64 * 2) * 40
	require.Equal(t, total, g.FLOPs())
}
