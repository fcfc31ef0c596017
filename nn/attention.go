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
	C, Nq, B := q.Ne(0), q.Ne(1), q.Ne(2)
	Nk := k.Ne(1)
	D := C / int64(heads)
	H := int64(heads)
	// [C, N, B] → [D, H, N, B] → [D, N, H, B]
	split := func(x *ggml.Tensor, n int64) *ggml.Tensor {
		return c.Permute(c.Reshape(x, D, H, n, B), 0, 2, 1, 3)
	}
	qh, kh := split(q, Nq), split(k, Nk)
	if opt.Flash && mask == nil {
		kvType := opt.KVType
		if kvType == 0 && k.Type() != ggml.TypeF32 {
			kvType = ggml.TypeF16
		}
		// The kernels read q, k and v through their strides (llama.cpp
		// passes permuted views too), and a cast writes the head-major
		// layout itself: no separate copies of the permuted heads.
		kv := func(x *ggml.Tensor) *ggml.Tensor {
			if x.Type() == kvType {
				return c.Cont(x)
			}
			return c.Cast(x, kvType)
		}
		o := c.FlashAttn(qh, kv(kh), kv(split(v, Nk)), nil, scale) // [D, H, Nq, B]
		return c.Reshape(o, C, Nq, B)
	}
	scores := c.MulMat(c.Cont(kh), qh)                             // [Nk, Nq, H, B]
	probs := c.SoftMax(scores, mask, scale)                        // over keys
	vt := c.Cont(c.Permute(c.Reshape(v, D, H, Nk, B), 1, 2, 0, 3)) // [Nk, D, H, B]
	o := c.MulMat(vt, probs)                                       // [D, Nq, H, B]
	return c.Reshape(c.Cont(c.Permute(o, 0, 2, 1, 3)), C, Nq, B)   // [D, H, Nq, B] → [C, Nq, B]
}
