package nn

import (
	"math"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// AttentionOptions selects how scaled dot-product attention is computed.
type AttentionOptions struct {
	// Flash uses ggml's fused flash-attention kernel; otherwise attention is
	// a matrix product, soft_max and a second product (same math, more
	// memory).
	Flash bool
	// KVType is the type keys and values are cast to for the flash kernel
	// (F16 is fastest on GPUs; F32 keeps reference precision).
	KVType ggml.Type
	// SoftmaxUpTo > 0 bounds the bytes of f32 scores (queries·keys·heads·
	// batch) computed at once: the softmax path then runs in pieces of
	// queries (at most maxPieces). With Flash, attention that needs no more
	// pieces takes the softmax path instead of the flash kernel: on the CPU
	// its two products run on the GEMM kernels, 2.3–3 times as fast
	// as ggml's CPU flash kernel (BenchmarkAttention), and the pieces keep
	// the scores of large images (1.3 GB for SDXL's first attention level
	// at 1024²) from taking memory all at once.
	SoftmaxUpTo int64
	// CPUKernel takes our CPU attention kernel (ggml.Context.AttentionCPU)
	// wherever it applies (f32, no mask, heads and keys it fits), ahead of
	// Flash and SoftmaxUpTo: both its products run as outer products,
	// 1.6–2.9 times as fast as the softmax path (BenchmarkAttention), and
	// each thread keeps only one block of queries' scores. Taken only in
	// graphs built for the CPU (ggml.Context.CPUKernels), so one option
	// serves every device.
	CPUKernel bool
}

// Attend computes multi-head attention softmax(q·kᵀ/√d + mask)·v.
// q is [C, Nq, B], k and v are [C, Nk, B] (already projected), heads divide
// C. mask, if given, is [Nk, Nq] added to the scores (use -Inf to block).
// Returns [C, Nq, B].
func Attend(c *ggml.Context, q, k, v *ggml.Tensor, heads int, mask *ggml.Tensor, opt AttentionOptions) *ggml.Tensor {
	return AttendScaled(c, q, k, v, heads, mask, float32(1/math.Sqrt(float64(q.Ne(0)/int64(heads)))), opt)
}

// AttendScaled is Attend with an explicit score scale.
func AttendScaled(c *ggml.Context, q, k, v *ggml.Tensor, heads int, mask *ggml.Tensor, scale float32, opt AttentionOptions) *ggml.Tensor {
	if mask != nil {
		opt.Flash = false // the flash kernel's mask layout is not ours
		opt.CPUKernel = false
	}
	return AttendHeads(c, q, SplitKV(c, k, v, heads, opt), heads, mask, scale, opt)
}

// HeadsKV are projected keys and values split into heads, in the layout
// and type the attention path chosen by AttentionOptions reads: keys that
// stay the same for many graphs (cross-attention to a fixed text context)
// are split once and kept.
type HeadsKV struct {
	K, V *ggml.Tensor
	// CPUKernel says K and V are laid out for our CPU kernel (see SplitKV).
	CPUKernel bool
}

// SplitKV splits k and v [C, Nk, B] into heads for opt: for our CPU kernel
// both viewed as [D, H, Nk, B], f32 (no copy); both
// [D, Nk, H, B] of opt's KV type for the flash kernel; else K [D, Nk, H, B]
// and V [Nk, D, H, B] (the second product's operand) in k's type.
func SplitKV(c *ggml.Context, k, v *ggml.Tensor, heads int, opt AttentionOptions) HeadsKV {
	D, Nk := k.Ne(0)/int64(heads), k.Ne(1)
	if opt.CPUKernel && c.CPUKernels() && k.Type() == ggml.TypeF32 && v.Type() == ggml.TypeF32 && ggml.AttentionCPUFits(D, Nk) {
		split := func(x *ggml.Tensor) *ggml.Tensor {
			if x.Nb(0) != 4 {
				x = c.Cont(x)
			}
			return splitHeads(c, x, heads) // the kernel reads rows through their strides
		}
		return HeadsKV{K: split(k), V: split(v), CPUKernel: true}
	}
	kh := c.Permute(splitHeads(c, k, heads), 0, 2, 1, 3) // [D, Nk, H, B]
	if !opt.Flash {
		vt := c.Permute(splitHeads(c, v, heads), 1, 2, 0, 3) // [Nk, D, H, B]
		return HeadsKV{K: c.Cont(kh), V: c.Cont(vt)}
	}
	kvType := opt.KVType
	if kvType == 0 && k.Type() != ggml.TypeF32 {
		kvType = ggml.TypeF16
	}
	// A cast writes the head-major layout itself: no separate copy of the
	// permuted heads.
	kv := func(x *ggml.Tensor) *ggml.Tensor {
		if x.Type() == kvType {
			return c.Cont(x)
		}
		return c.Cast(x, kvType)
	}
	return HeadsKV{K: kv(kh), V: kv(c.Permute(splitHeads(c, v, heads), 0, 2, 1, 3))}
}

// FlashKV splits k and v [C, Nk, B], already of the flash kernel's KV
// type (AttentionOptions.KVType), into heads for the flash kernel without
// copying them: views [D, Nk, H, B] that the kernels read through their
// strides. For keys and values cast from a larger product at once (unet's
// to_qkv), which is cheaper than copying each one's strided heads.
func FlashKV(c *ggml.Context, k, v *ggml.Tensor, heads int) HeadsKV {
	return HeadsKV{K: c.Permute(splitHeads(c, k, heads), 0, 2, 1, 3), V: c.Permute(splitHeads(c, v, heads), 0, 2, 1, 3)}
}

// splitHeads views x [C, N, B] as [C/heads, heads, N, B]. Its rows need not
// follow each other: they may be a third of a fused projection's
// (unet's to_qkv).
func splitHeads(c *ggml.Context, x *ggml.Tensor, heads int) *ggml.Tensor {
	d := x.Ne(0) / int64(heads)
	return c.View(x, [4]int64{d, int64(heads), x.Ne(1), x.Ne(2)}, d*x.Nb(0), x.Nb(1), x.Nb(2), 0)
}

// AttendHeads attends from q [C, Nq, B] to keys and values split by
// SplitKV with the same heads and opt (mask ≠ nil needs opt.Flash off).
// Keys and values split for the flash kernel also serve the softmax path
// that opt.SoftmaxUpTo picks.
// Returns [C, Nq, B].
func AttendHeads(c *ggml.Context, q *ggml.Tensor, kv HeadsKV, heads int, mask *ggml.Tensor, scale float32, opt AttentionOptions) *ggml.Tensor {
	C, Nq, B := q.Ne(0), q.Ne(1), q.Ne(2)
	D, H := C/int64(heads), int64(heads)
	if kv.CPUKernel {
		if mask == nil && q.Type() == ggml.TypeF32 && q.Nb(0) == 4 {
			qh := c.View(q, [4]int64{D, H, Nq, B}, D*q.Nb(0), q.Nb(1), q.Nb(2), 0)
			return c.AttentionCPU(qh, kv.K, kv.V, scale)
		}
		// Back to the softmax path's layouts: K [D, Nk, H, B], V [Nk, D, H, B].
		kv = HeadsKV{K: c.Cont(c.Permute(kv.K, 0, 2, 1, 3)), V: c.Cont(c.Permute(kv.V, 1, 2, 0, 3))}
		opt.Flash = false
	}
	// [C, N, B] → [D, H, N, B] → [D, N, H, B]; the kernels read q through
	// its strides (llama.cpp passes permuted views too).
	qh := c.Permute(splitHeads(c, q, heads), 0, 2, 1, 3)
	pieces := int64(1)
	if opt.SoftmaxUpTo > 0 {
		pieces = (4*Nq*kv.K.Ne(1)*H*B + opt.SoftmaxUpTo - 1) / opt.SoftmaxUpTo
	}
	if opt.Flash && (opt.SoftmaxUpTo <= 0 || pieces > maxPieces) {
		o := c.FlashAttn(qh, kv.K, kv.V, nil, scale) // [D, H, Nq, B]
		return c.Reshape(o, C, Nq, B)
	}
	pieces = min(pieces, maxPieces) // the plain path: larger pieces
	vt := kv.V                      // [Nk, D, H, B]
	if opt.Flash {
		// Split for the flash kernel, V is [D, Nk, H, B]: transpose it
		// once for every piece.
		vt = c.Cont(c.Permute(kv.V, 1, 0, 2, 3))
	}
	if pieces <= 1 {
		return softmaxAttention(c, qh, kv.K, vt, mask, scale)
	}
	step := (Nq + pieces - 1) / pieces
	var out *ggml.Tensor
	for start := int64(0); start < Nq; start += step {
		n := min(step, Nq-start)
		qp, mp := c.View(qh, [4]int64{D, n, H, B}, qh.Nb(1), qh.Nb(2), qh.Nb(3), start*qh.Nb(1)), mask
		if mask != nil { // [Nk, Nq]: rows of queries
			mp = c.View(mask, [4]int64{mask.Ne(0), n, mask.Ne(2), mask.Ne(3)}, mask.Nb(1), mask.Nb(2), mask.Nb(3), start*mask.Nb(1))
		}
		o := softmaxAttention(c, qp, kv.K, vt, mp, scale)
		if out == nil {
			out = o
		} else {
			out = c.Concat(out, o, 1)
		}
	}
	return out
}

// maxPieces bounds the pieces of one attention, whose nodes add to the
// graph's: beyond it (SDXL's first level past about 1400² on the CPU) the
// flash kernel, whose memory does not grow with the scores, takes over.
const maxPieces = 16

// softmaxAttention computes softmax(q·kᵀ·scale + mask)·v for q [D, Nq, H,
// B] (any strides), k [D, Nk, H, B] and vt [Nk, D, H, B]: two products
// over contiguous operands, which ggml's CPU runs on its GEMM kernels.
// Returns [C, Nq, B].
func softmaxAttention(c *ggml.Context, q, k, vt, mask *ggml.Tensor, scale float32) *ggml.Tensor {
	D, Nq, H, B := q.Ne(0), q.Ne(1), q.Ne(2), q.Ne(3)
	scores := c.MulMat(k, c.Cont(q))                               // [Nk, Nq, H, B]
	probs := c.SoftMax(scores, mask, scale)                        // over keys
	o := c.MulMat(vt, probs)                                       // [D, Nq, H, B]
	return c.Reshape(c.Cont(c.Permute(o, 0, 2, 1, 3)), D*H, Nq, B) // [D, H, Nq, B] → [C, Nq, B]
}
