package ggml

/*
#include "ggml_api.h"
#include "cpu_kernels.h"
*/
import "C"

import "fmt"

// The operations below build graph nodes; nothing is computed until a
// Scheduler runs the graph. Shapes are in ggml order.

// MulMat returns a·b with a [K, M, ...] and b [K, N, ...] giving [M, N, ...]:
// a Linear layer's weight [in, out] times activations [in, tokens].
// Broadcasts a over b's outer dimensions. With SetCPUKernels, large f32,
// f16, bf16, q8_0, q4_K, q5_K and q6_K products are our kernels (pm_mul_mat: 1.4×
// ggml's on the VAE's convolutions, 1.5–2.3× its repacked q4_K, 1.1× its
// f16 products in a 512² UNet step, which round the activations to f16
// and on ARM sum in f16); q4_K weights repacked for ggml's stay ggml's.
func (c *Context) MulMat(a, b *Tensor) *Tensor {
	if c.cpuKernels && !a.Repacked() && bool(C.pm_mul_mat_fits(a.p, b.p)) {
		return c.wrap(C.pm_mul_mat(c.p, a.p, b.p, nil))
	}
	if c.f32Accum && (a.Type() == TypeF16 || a.Type() == TypeBF16) {
		return c.MulMatF32(a, b)
	}
	return c.wrap(C.ggml_mul_mat(c.p, a.p, b.p))
}

// MulMatBias is Add(MulMat(a, b), bias) for bias [M] (a Linear layer). Our
// CPU products add an f32 bias as they store their sums, bit for bit what
// the Add computes, without another pass over the result.
func (c *Context) MulMatBias(a, b, bias *Tensor) *Tensor {
	if c.cpuKernels && !a.Repacked() && bool(C.pm_mul_mat_fits(a.p, b.p)) && bool(C.pm_mul_mat_bias_fits(a.p, bias.p)) {
		return c.wrap(C.pm_mul_mat(c.p, a.p, b.p, bias.p))
	}
	return c.Add(c.MulMat(a, b), bias)
}

// CPUKernelsTakeInts reports whether MulMat with SetCPUKernels multiplies
// plainly stored weights of quantized type t in integers with our kernels
// (builds with AVX2: q4_0, q4_1, q5_0, q5_1, q8_0 and q2_K to q6_K): such
// weights are then better left plain than repacked for ggml's products.
func CPUKernelsTakeInts(t Type) bool { return bool(C.pm_mul_mat_takes_int(C.enum_ggml_type(t))) }

// cpuKernelsTakeBF16 reports whether MulMat with SetCPUKernels multiplies
// bf16 weights with our kernel: unless ggml's has AVX512-BF16's dot
// products (faster, at activations rounded to bf16).
func cpuKernelsTakeBF16() bool { return bool(C.pm_mul_mat_takes_bf16()) }

// cpuKernelsWidenMinN is the fewest activation rows MulMat with
// SetCPUKernels multiplies weights of other quantized types (q6_K, q4_0,
// ...) by in our f32 product, widening them as it packs them (x86 with
// AVX2: 64 where ggml's products have AVX2 too, a few in a plain build),
// or 0 where they stay ggml's.
func cpuKernelsWidenMinN() int { return int(C.pm_mul_mat_widen_min_n()) }

// cpuKernelsQ8Levels is how many levels each side of zero MulMat with
// SetCPUKernels rounds the activations of q8_0 weights to per 32 values:
// 127 (8 bits, builds with VNNI), 32767 (16 bits, AVX2), or 0 (they stay
// f32).
func cpuKernelsQ8Levels() float32 { return float32(C.pm_mul_mat_q8_levels()) }

// MulMatF32 is MulMat with f32 accumulation forced on backends that would
// otherwise accumulate in f16.
//
// ggml-cuda keeps f16 tensor-core speed with f32 accumulation only in its
// batched cuBLAS path (f16 inputs, 32-bit compute, f32 output), which it
// takes when b holds more than one matrix; a single large matrix goes where
// f32 accumulation means converting both operands to f32 for SGEMM. So a
// large 2-D b is computed as two matrices of half its columns against the
// one a: the same dot products, the result laid out exactly as before.
func (c *Context) MulMatF32(a, b *Tensor) *Tensor {
	if a.Ne(2) == 1 && a.Ne(3) == 1 && b.Ne(2) == 1 && b.Ne(3) == 1 &&
		b.Ne(1) >= minBatchedColumns && b.Ne(1)%2 == 0 && b.Contiguous() {
		r := c.wrap(C.ggml_mul_mat(c.p, a.p, c.Reshape(b, b.Ne(0), b.Ne(1)/2, 2).p))
		C.ggml_mul_mat_set_prec(r.p, C.GGML_PREC_F32)
		return c.Reshape(r, a.Ne(1), b.Ne(1))
	}
	r := c.wrap(C.ggml_mul_mat(c.p, a.p, b.p))
	C.ggml_mul_mat_set_prec(r.p, C.GGML_PREC_F32)
	return r
}

// minBatchedColumns leaves narrower products (a few tokens, the time
// embedding) to ggml-cuda's small-batch kernels, which accumulate in f32.
const minBatchedColumns = 64

// Add returns a+b, b broadcast over a.
func (c *Context) Add(a, b *Tensor) *Tensor { return c.wrap(C.ggml_add(c.p, a.p, b.p)) }

// Sub returns a-b, b broadcast over a.
func (c *Context) Sub(a, b *Tensor) *Tensor { return c.wrap(C.ggml_sub(c.p, a.p, b.p)) }

// Mul returns a*b elementwise, b broadcast over a.
func (c *Context) Mul(a, b *Tensor) *Tensor { return c.wrap(C.ggml_mul(c.p, a.p, b.p)) }

// Div returns a/b elementwise, b broadcast over a.
func (c *Context) Div(a, b *Tensor) *Tensor { return c.wrap(C.ggml_div(c.p, a.p, b.p)) }

// Scale returns a*s.
func (c *Context) Scale(a *Tensor, s float32) *Tensor {
	return c.wrap(C.ggml_scale(c.p, a.p, C.float(s)))
}

// Clamp limits a to [lo, hi].
func (c *Context) Clamp(a *Tensor, lo, hi float32) *Tensor {
	return c.wrap(C.ggml_clamp(c.p, a.p, C.float(lo), C.float(hi)))
}

// Repeat tiles a to the shape of like.
func (c *Context) Repeat(a, like *Tensor) *Tensor { return c.wrap(C.ggml_repeat(c.p, a.p, like.p)) }

// Concat joins a and b along dimension dim.
func (c *Context) Concat(a, b *Tensor, dim int) *Tensor {
	return c.wrap(C.ggml_concat(c.p, a.p, b.p, C.int(dim)))
}

// Ones is an f32 tensor of ones shaped ne, made on the device (no upload);
// one per shape and context, shared by its uses.
func (c *Context) Ones(ne ...int64) *Tensor {
	key := [4]int64{1, 1, 1, 1}
	copy(key[:], ne)
	if t := c.ones[key]; t != nil {
		return t
	}
	t := c.wrap(C.ggml_fill(c.p, c.NewTensor(TypeF32, ne...).p, 1))
	if c.ones == nil {
		c.ones = map[[4]int64]*Tensor{}
	}
	c.ones[key] = t
	return t
}

// GELU is the tanh approximation of GELU.
func (c *Context) GELU(a *Tensor) *Tensor { return c.wrap(C.ggml_gelu(c.p, a.p)) }

// GELUErf is exact GELU, x·Φ(x), as torch.nn.GELU() computes it.
func (c *Context) GELUErf(a *Tensor) *Tensor { return c.wrap(C.ggml_gelu_erf(c.p, a.p)) }

// GELUQuick is x·sigmoid(1.702x) (CLIP's quick_gelu).
func (c *Context) GELUQuick(a *Tensor) *Tensor { return c.wrap(C.ggml_gelu_quick(c.p, a.p)) }

// SiLU is x·sigmoid(x).
func (c *Context) SiLU(a *Tensor) *Tensor { return c.wrap(C.ggml_silu(c.p, a.p)) }

// Sigmoid is 1/(1+e^-x).
func (c *Context) Sigmoid(a *Tensor) *Tensor { return c.wrap(C.ggml_sigmoid(c.p, a.p)) }

// Tanh is tanh(x).
func (c *Context) Tanh(a *Tensor) *Tensor { return c.wrap(C.ggml_tanh(c.p, a.p)) }

// GEGLUSecondHalf splits dimension 0 of a into halves (h, g) and returns
// h·GELU_erf(g): diffusers' GEGLU, which activates the SECOND half. With
// SetCPUKernels it is our vectorized kernel (pm_geglu_erf): ggml's CPU
// kernel calls libm's erff per value, about 13 ns each, which made it 2.6 %
// of a 512² UNet step; ours takes about 1.4 ns.
func (c *Context) GEGLUSecondHalf(a *Tensor) *Tensor {
	if c.cpuKernels && a.Type() == TypeF32 && a.Ne(0)%2 == 0 && a.Nb(0) == 4 {
		n := a.Ne(0) / 2
		ne := [4]int64{n, a.Ne(1), a.Ne(2), a.Ne(3)}
		h := c.View(a, ne, a.Nb(1), a.Nb(2), a.Nb(3), 0)
		g := c.View(a, ne, a.Nb(1), a.Nb(2), a.Nb(3), 4*n)
		return c.wrap(C.pm_geglu_erf(c.p, h.p, g.p))
	}
	return c.wrap(C.ggml_glu(c.p, a.p, C.GGML_GLU_OP_GEGLU_ERF, true))
}

// AttentionCPU is softmax(q·kᵀ·scale)·v per head through our CPU kernel
// (pm_attention), a custom op that only the CPU backend runs: q [D, H, Nq,
// B], k and v [D, H, Nk, B or 1] (heads of D values side by side, as the
// projections make them, reshaped), f32 with contiguous rows of D. Returns
// [D·H, Nq, B]. Heads and keys must fit (AttentionCPUFits).
func (c *Context) AttentionCPU(q, k, v *Tensor, scale float32) *Tensor {
	return c.wrap(C.pm_attention(c.p, q.p, k.p, v.p, C.float(scale)))
}

// AttentionCPUFits says whether AttentionCPU takes heads of d values and
// that many keys.
func AttentionCPUFits(d, keys int64) bool {
	return bool(C.pm_attention_fits(C.int64_t(d), C.int64_t(keys)))
}

// Conv3x3CPU is a "same" 3×3 convolution of stride 1 through our CPU
// kernels (pm_conv3x3: Winograd's F(2×2, 3×3) or F(4×4, 3×3), custom ops
// that only the CPU backend runs): x [W, H, Cin, B] (f32) with a kernel by
// row [3, Cin, Cout, 3] (f32 or f16; stored so, or a convolution kernel [3,
// 3, Cin, Cout] as Permute(k, 0, 3, 1, 2), which is read without a copy),
// plus bias [Cout] when not nil. Returns [W, H, Cout, B]. The operands
// must fit (Conv3x3CPUFits).
func (c *Context) Conv3x3CPU(kernel, x, bias *Tensor) *Tensor {
	return c.conv3x3CPU(kernel, x, bias, 1)
}

// UpsampleConv3x3CPU is Conv3x3CPU of x's nearest 2× upsample, which it
// never makes: [2W, 2H, Cout, B].
func (c *Context) UpsampleConv3x3CPU(kernel, x, bias *Tensor) *Tensor {
	return c.conv3x3CPU(kernel, x, bias, 2)
}

func (c *Context) conv3x3CPU(kernel, x, bias *Tensor, up int) *Tensor {
	return c.wrap(C.pm_conv3x3(c.p, kernel.p, x.p, cTensor(bias), C.int(up)))
}

// Conv3x3CPUPays says whether Conv3x3CPU (up 1) or UpsampleConv3x3CPU
// (up 2) is worth it for image x: its kernel transform writes and the
// product reads 64 bytes per input and output channel, which the
// multiply-adds saved against ggml's by-row products (20 per tile and
// channel pair) repay from about 64 tiles on (a cost model with the dev
// VM's rates; SDXL at 512² has 128 in its deepest level, at 256² 32).
func Conv3x3CPUPays(x *Tensor, up int) bool {
	w, h := int64(up)*x.Ne(0), int64(up)*x.Ne(1)
	return (w+1)/2*((h+1)/2)*x.Ne(3) >= 64
}

// conv3x3CPUTile is the Winograd tile size (2 or 4) Conv3x3CPU takes for
// cin and cout channels and pixels outputs (of all images).
func conv3x3CPUTile(cin, cout, pixels int64) int {
	return int(C.pm_conv3x3_tile(C.int64_t(cin), C.int64_t(cout), C.int64_t(pixels)))
}

// conv3x3CPUGroups is the groups of output channels Conv3x3CPU is made in
// for cin and cout channels and pixels outputs, each with its own kernel
// transform of at most setConv3x3CPUGroupFloats' floats.
func conv3x3CPUGroups(cin, cout, pixels int64) int64 {
	return int64(C.pm_conv3x3_groups(C.int64_t(cin), C.int64_t(cout), C.int64_t(pixels)))
}

// setConv3x3CPUGroupFloats sets the most floats of transformed kernel a
// group of Conv3x3CPU makes (16 Mi by default; tests lower it to make
// small convolutions in groups) and returns the previous value. Graphs
// built after it follow it.
func setConv3x3CPUGroupFloats(n int64) int64 {
	return int64(C.pm_set_wino_group_floats(C.int64_t(n)))
}

// Conv3x3CPUFits says whether Conv3x3CPU takes this kernel and image.
func Conv3x3CPUFits(kernel, x *Tensor) bool { return bool(C.pm_conv3x3_fits(kernel.p, x.p)) }

// Conv1x1CPU is a 1×1 convolution through our CPU kernel (pm_conv1x1, a
// custom op that only the CPU backend runs): x [W, H, Cin, B] (f32, each
// channel's plane contiguous) with w [Cin, Cout] (f32 or f16), plus bias [Cout]
// when not nil, without transposing x or the result. Returns [W, H, Cout,
// B]. The operands must fit (Conv1x1CPUFits).
func (c *Context) Conv1x1CPU(w, x, bias *Tensor) *Tensor {
	return c.wrap(C.pm_conv1x1(c.p, w.p, x.p, cTensor(bias)))
}

// Conv1x1CPUFits says whether Conv1x1CPU takes this kernel and image.
func Conv1x1CPUFits(w, x *Tensor) bool { return bool(C.pm_conv1x1_fits(w.p, x.p)) }

// CPUKernels is what SetCPUKernels set.
func (c *Context) CPUKernels() bool { return c.cpuKernels }

// Norm normalises each row (dimension 0) to zero mean and unit variance.
func (c *Context) Norm(a *Tensor, eps float32) *Tensor {
	return c.wrap(C.ggml_norm(c.p, a.p, C.float(eps)))
}

// GroupNorm normalises groups of channels; a is [W, H, C, N] and the groups
// split dimension 2.
func (c *Context) GroupNorm(a *Tensor, groups int, eps float32) *Tensor {
	return c.wrap(C.ggml_group_norm(c.p, a.p, C.int(groups), C.float(eps)))
}

// GroupNormCPU is GroupNorm(a)·w + b, then SiLU if silu, through our CPU
// kernel (pm_group_norm, a custom op that only the CPU backend runs): one
// pass over the image for the output instead of ggml's four ops. a is [W,
// H, C, N] (f32), w and b [C] (f32). The operands must fit
// (GroupNormCPUFits).
func (c *Context) GroupNormCPU(a, w, b *Tensor, groups int, eps float32, silu bool) *Tensor {
	return c.wrap(C.pm_group_norm(c.p, a.p, w.p, b.p, C.int(groups), C.float(eps), C.bool(silu)))
}

// GroupNormCPUFits says whether GroupNormCPU takes these operands.
func GroupNormCPUFits(a, w, b *Tensor, groups int) bool {
	return bool(C.pm_group_norm_fits(a.p, w.p, b.p, C.int(groups)))
}

// LayerNormCPU is Norm(a)·w + b (b may be nil) through our CPU kernel
// (pm_layer_norm, a custom op that only the CPU backend runs): one pass
// for the output instead of ggml's three ops. a's rows (dimension 0) are
// f32, w and b f32 of their length. The operands must fit
// (LayerNormCPUFits).
func (c *Context) LayerNormCPU(a, w, b *Tensor, eps float32) *Tensor {
	return c.wrap(C.pm_layer_norm(c.p, a.p, w.p, cTensor(b), C.float(eps)))
}

// LayerNormCPUFits says whether LayerNormCPU takes these operands.
func LayerNormCPUFits(a, w, b *Tensor) bool {
	return bool(C.pm_layer_norm_fits(a.p, w.p, cTensor(b)))
}

// cTensor is t's C tensor, NULL for nil.
func cTensor(t *Tensor) *C.struct_ggml_tensor {
	if t == nil {
		return nil
	}
	return t.p
}

// SoftMax returns softmax(a·scale + mask) over dimension 0; mask may be nil.
func (c *Context) SoftMax(a, mask *Tensor, scale float32) *Tensor {
	var m *C.struct_ggml_tensor
	if mask != nil {
		m = mask.p
	}
	return c.wrap(C.ggml_soft_max_ext(c.p, a.p, m, C.float(scale), 0))
}

// FlashAttn computes softmax(q·kᵀ·scale + mask)·v in one fused op with f32
// accumulation. q is [D, Nq, H, B], k and v are [D, Nkv, H, B] (usually F16);
// the result is [D, H, Nq, B] (note: heads before tokens).
func (c *Context) FlashAttn(q, k, v, mask *Tensor, scale float32) *Tensor {
	var m *C.struct_ggml_tensor
	if mask != nil {
		m = mask.p
	}
	r := c.wrap(C.ggml_flash_attn_ext(c.p, q.p, k.p, v.p, m, C.float(scale), 0, 0))
	C.ggml_flash_attn_ext_set_prec(r.p, C.GGML_PREC_F32)
	return r
}

// Im2Col unfolds image b [W, H, C, N] for kernel a [KW, KH, C, OC] into
// [C·KH·KW, OW, OH, N] columns of type t.
//
// With SetCPUKernels, an f32 image becomes f32 or f16 columns through our
// kernel (pm_im2col): ggml's CPU kernel splits each pixel's channels
// between threads, which then write the same cache lines.
func (c *Context) Im2Col(a, b *Tensor, s0, s1, p0, p1, d0, d1 int, t Type) *Tensor {
	kw, kh := int(a.Ne(0)), int(a.Ne(1))
	if c.cpuKernels && d0 == 1 && d1 == 1 && b.Type() == TypeF32 && b.Nb(0) == 4 &&
		bool(C.pm_im2col_fits(C.int(kw), C.int(kh), C.int(s0), C.int(s1), C.int(p0), C.int(p1), C.int64_t(b.Ne(2)), C.enum_ggml_type(t))) {
		return c.wrap(C.pm_im2col(c.p, b.p, C.int(kw), C.int(kh), C.int(s0), C.int(s1), C.int(p0), C.int(p1), C.enum_ggml_type(t)))
	}
	return c.wrap(C.ggml_im2col(c.p, a.p, b.p, C.int(s0), C.int(s1), C.int(p0), C.int(p1), C.int(d0), C.int(d1), true, C.enum_ggml_type(t)))
}

// Conv2D is a 2-D convolution through im2col + matrix product: kernel a
// [KW, KH, C, OC], image b [W, H, C, N] → [OW, OH, OC, N]. Its im2col buffer
// has the kernel's type.
func (c *Context) Conv2D(a, b *Tensor, s0, s1, p0, p1, d0, d1 int) *Tensor {
	return c.wrap(C.ggml_conv_2d(c.p, a.p, b.p, C.int(s0), C.int(s1), C.int(p0), C.int(p1), C.int(d0), C.int(d1)))
}

// Conv2DDirect is a 2-D convolution without the im2col buffer (less memory,
// usually slower on CPU).
func (c *Context) Conv2DDirect(a, b *Tensor, s0, s1, p0, p1, d0, d1 int) *Tensor {
	return c.wrap(C.ggml_conv_2d_direct(c.p, a.p, b.p, C.int(s0), C.int(s1), C.int(p0), C.int(p1), C.int(d0), C.int(d1)))
}

// Pad adds zeros before (l) and after (r) each dimension.
func (c *Context) Pad(a *Tensor, l0, r0, l1, r1, l2, r2, l3, r3 int) *Tensor {
	return c.wrap(C.ggml_pad_ext(c.p, a.p, C.int(l0), C.int(r0), C.int(l1), C.int(r1), C.int(l2), C.int(r2), C.int(l3), C.int(r3)))
}

// UpscaleNearest repeats each pixel factor×factor times (dimensions 0 and 1).
func (c *Context) UpscaleNearest(a *Tensor, factor int) *Tensor {
	return c.wrap(C.ggml_upscale(c.p, a.p, C.int(factor), C.GGML_SCALE_MODE_NEAREST))
}

// InterpolateNearest resizes to the given shape with nearest-neighbour sampling.
func (c *Context) InterpolateNearest(a *Tensor, ne0, ne1, ne2, ne3 int64) *Tensor {
	return c.wrap(C.ggml_interpolate(c.p, a.p, C.int64_t(ne0), C.int64_t(ne1), C.int64_t(ne2), C.int64_t(ne3), C.GGML_SCALE_MODE_NEAREST))
}

// Permute moves dimension i of a to position axes[i] (ggml semantics).
func (c *Context) Permute(a *Tensor, ax0, ax1, ax2, ax3 int) *Tensor {
	return c.wrap(C.ggml_permute(c.p, a.p, C.int(ax0), C.int(ax1), C.int(ax2), C.int(ax3)))
}

// Transpose swaps dimensions 0 and 1 (a view).
func (c *Context) Transpose(a *Tensor) *Tensor { return c.wrap(C.ggml_transpose(c.p, a.p)) }

// Reshape gives a contiguous tensor a new shape of 1 to 4 dimensions.
func (c *Context) Reshape(a *Tensor, ne ...int64) *Tensor {
	var d [4]int64
	n := int64(1)
	for i := range d {
		d[i] = 1
		if i < len(ne) {
			d[i] = ne[i]
		}
		n *= d[i]
	}
	if n != a.Elements() || len(ne) == 0 || len(ne) > 4 {
		panic(fmt.Sprintf("ggml: cannot reshape %v (%d elements) to %v", a.Shape(), a.Elements(), ne))
	}
	if !a.Contiguous() {
		a = c.Cont(a)
	}
	return c.wrap(C.ggml_reshape_4d(c.p, a.p, C.int64_t(d[0]), C.int64_t(d[1]), C.int64_t(d[2]), C.int64_t(d[3])))
}

// View returns a strided view of a: shape ne (ggml order), byte strides
// nb1..nb3 and a byte offset.
func (c *Context) View(a *Tensor, ne [4]int64, nb1, nb2, nb3, offset int64) *Tensor {
	return c.wrap(C.ggml_view_4d(c.p, a.p, C.int64_t(ne[0]), C.int64_t(ne[1]), C.int64_t(ne[2]), C.int64_t(ne[3]),
		C.size_t(nb1), C.size_t(nb2), C.size_t(nb3), C.size_t(offset)))
}

// Cont makes a contiguous copy of a view.
func (c *Context) Cont(a *Tensor) *Tensor { return c.wrap(C.ggml_cont(c.p, a.p)) }

// AccInplace adds b into the view of a at byte offset with strides nb1..nb3
// and returns a (as a node that depends on the addition). Into zeros it
// writes b; unlike ggml's SET, every backend (CPU, CUDA, Metal, Vulkan) has
// it.
func (c *Context) AccInplace(a, b *Tensor, nb1, nb2, nb3, offset int64) *Tensor {
	return c.wrap(C.ggml_acc_inplace(c.p, a.p, b.p, C.size_t(nb1), C.size_t(nb2), C.size_t(nb3), C.size_t(offset)))
}

// SetInplace writes b over the view of a at byte offset with strides
// nb1..nb3 and returns a (as a node that depends on the write). Only the
// view is touched, where ggml-cuda's ACC rewrites all of a; Vulkan and
// Metal lack it (Backend.SetsViews).
func (c *Context) SetInplace(a, b *Tensor, nb1, nb2, nb3, offset int64) *Tensor {
	return c.wrap(C.ggml_set_inplace(c.p, a.p, b.p, C.size_t(nb1), C.size_t(nb2), C.size_t(nb3), C.size_t(offset)))
}

// Copy writes a into b and returns the result node.
func (c *Context) Copy(a, b *Tensor) *Tensor { return c.wrap(C.ggml_cpy(c.p, a.p, b.p)) }

// Cast converts a to type t.
func (c *Context) Cast(a *Tensor, t Type) *Tensor {
	if a.Type() == t {
		return a
	}
	return c.wrap(C.ggml_cast(c.p, a.p, C.enum_ggml_type(t)))
}

// GetRows gathers rows (dimension 1) of a by the I32 indices in b.
func (c *Context) GetRows(a, b *Tensor) *Tensor { return c.wrap(C.ggml_get_rows(c.p, a.p, b.p)) }

// TimestepEmbedding returns [dim, N] sinusoidal embeddings of the F32
// timesteps [N] with ggml's convention: cos half first, then sin
// (diffusers' flip_sin_to_cos=True with freq shift 0).
func (c *Context) TimestepEmbedding(t *Tensor, dim, maxPeriod int) *Tensor {
	return c.wrap(C.ggml_timestep_embedding(c.p, t.p, C.int(dim), C.int(maxPeriod)))
}

// Arange returns [start, start+step, ...) as F32.
func (c *Context) Arange(start, stop, step float32) *Tensor {
	return c.wrap(C.ggml_arange(c.p, C.float(start), C.float(stop), C.float(step)))
}
