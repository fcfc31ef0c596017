package unet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/internal/parallel"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// WeightSet returns the UNet's tensors under prefix of set as Load binds
// them (the checkpoint's names, Infer and Check's, are diffusers'), with
// each transformer block's self-attention projections (query, key, value)
// stacked into one product, attn1.to_qkv, whatever their type: one read of
// its input and one launch instead of three.
//
// With fold, blocks whose products after their layer norms keep float
// weights on the device (f16 or f32 under policy: quantizing columns scaled
// by γ would change the quantization error) have their norms folded into
// those products (foldBlock): the norms' tensors are dropped, and Load
// binds the block without them.
func WeightSet(set *weights.Set, prefix string, policy nn.TypePolicy, fold bool) (*weights.Set, error) {
	sub := set.Prefix(prefix)
	names := sub.Names()
	derived := map[string]*weights.Tensor{} // by name under prefix; nil: dropped
	for _, name := range names {
		if block, ok := strings.CutSuffix(name, "attn1.to_q.weight"); ok && strings.Contains(name, ".transformer_blocks.") {
			if err := deriveBlock(sub, prefix, block, policy, fold, derived); err != nil {
				return nil, err
			}
		}
	}
	out := weights.NewSet()
	for _, name := range names {
		t, _ := sub.Get(name)
		if d, ok := derived[name]; ok {
			if t = d; t == nil {
				continue
			}
			delete(derived, name)
		}
		if err := out.Add(t); err != nil {
			return nil, err
		}
	}
	added := slices.Sorted(maps.Keys(derived)) // in one order, load after load
	for _, name := range added {
		if t := derived[name]; t != nil {
			if err := out.Add(t); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// deriveBlock records in derived the tensors of the transformer block under
// block (a name prefix within sub) that WeightSet replaces or adds (nil:
// drops).
func deriveBlock(sub *weights.Set, prefix, block string, policy nn.TypePolicy, fold bool, derived map[string]*weights.Tensor) error {
	get := func(name string) *weights.Tensor { t, _ := sub.Get(block + name); return t }
	full := func(name string) string { return prefix + block + name }
	q, k, v := get("attn1.to_q.weight"), get("attn1.to_k.weight"), get("attn1.to_v.weight")
	if q == nil || k == nil || v == nil {
		return fmt.Errorf("%w: %s needs to_q, to_k and to_v weights", nn.ErrMissing, full("attn1"))
	}
	qkv, err := weights.ConcatRows(full("attn1.to_qkv.weight"), q, k, v)
	if err != nil {
		return err
	}
	derived[block+"attn1.to_qkv.weight"] = qkv
	for _, name := range []string{"attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"} {
		derived[block+name] = nil
	}
	typeOf := func(name string) ggml.Type {
		if name == "attn1.to_qkv.weight" {
			return nn.StoredType(policy, qkv.Name, qkv)
		}
		return nn.StoredType(policy, full(name), get(name))
	}
	if !fold || !foldable(get, typeOf) {
		return nil
	}
	return foldBlock(get, full, qkv, typeOf("ff.net.0.proj.weight"), func(name string, t *weights.Tensor) { derived[block+name] = t })
}

// biasColumns is how many columns the feed-forward's first product gains
// for its bias (foldBlock): one would do, eight keep its rows of f16 a
// multiple of 16 bytes, as tensor-core products want them.
const biasColumns = 8

// foldedProducts are the products that follow a transformer block's norms.
var foldedProducts = []string{"attn1.to_qkv.weight", "attn2.to_q.weight", "ff.net.0.proj.weight"}

// foldable says whether a block's norms can fold: each has a scale and a
// shift, the products after them are stored as f16 or f32 (typeOf), and
// those that gain a bias have none yet.
func foldable(get func(string) *weights.Tensor, typeOf func(string) ggml.Type) bool {
	for _, name := range []string{"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias",
		"attn2.to_q.weight", "ff.net.0.proj.weight", "ff.net.0.proj.bias", "attn1.to_out.0.weight", "attn1.to_out.0.bias"} {
		if get(name) == nil {
			return false
		}
	}
	if get("attn2.to_q.bias") != nil {
		return false
	}
	for _, name := range foldedProducts {
		if t := typeOf(name); t != ggml.TypeF16 && t != ggml.TypeF32 {
			return false
		}
	}
	return true
}

// foldBlock folds each layer norm's scale γ and shift β of a transformer
// block into the products after it, as the weights load (set: replace or,
// with nil, drop a tensor of the block): W·(n·γ + β) = (W·diag γ)·n + W·β,
// so a step only normalises: three multiplies and an add fewer per block
// (with the fused projections and the feed-forward's bias below, SDXL's
// CFG step on a GPU has 2289 ops instead of 2707). The shifts become
// biases: the query's (W_q·β); none for the key, whose q·W_k·β is the same
// for every key of a query, which softmax ignores; the value's reaches the
// output unchanged, attention weights summing to 1, so it joins the output
// projection's bias (b_out + W_out·W_v·β); the feed-forward's first product
// had a bias already. That product's output is eight times its input, so
// its bias moves into the weight's spare columns (biasColumns), which
// multiply columns of ones appended to the input: a small copy of the input
// instead of an add over the output. Stored as f16 (ffType), the first of
// those columns holds the bias rounded and the second what rounding lost,
// so that the bias keeps f32's precision.
//
// It is done here, on the host, in float64 sums, rather than by graphs on
// the device: the same values on every backend. (Done on the device, the
// feed-forward's weight came out 30 % off on CUDA: ggml-cuda copies a
// source whose rows are one element apart, such as the [1, N] bias
// column, with its kernel for transposed matrices, which writes the
// destination as if contiguous, here over the weight's first rows instead
// of down its spare column.)
// The CPU's own kernels apply a norm's γ and β and a product's bias as they
// go, so there it is not done (FoldsNorms).
func foldBlock(get func(string) *weights.Tensor, full func(string) string, qkv *weights.Tensor, ffType ggml.Type, set func(string, *weights.Tensor)) error {
	n1w, n1b, n2w, n2b, n3w, n3b := get("norm1.weight"), get("norm1.bias"), get("norm2.weight"), get("norm2.bias"), get("norm3.weight"), get("norm3.bias")
	q, v, q2 := get("attn1.to_q.weight"), get("attn1.to_v.weight"), get("attn2.to_q.weight")
	outW, outB := get("attn1.to_out.0.weight"), get("attn1.to_out.0.bias")
	ffW, ffB := get("ff.net.0.proj.weight"), get("ff.net.0.proj.bias")
	for _, t := range []*weights.Tensor{qkv, q2, ffW, outW} {
		if len(t.Shape) != 2 {
			return fmt.Errorf("folding %s's norms: %s is shaped %v, want [out, in]", full("norm1"), t.Name, t.Shape)
		}
	}
	in := qkv.Shape[1]
	bias := func(name string, n int64, from []*weights.Tensor, compute func() ([]float32, error)) {
		t := weights.Computed(full(name), []int64{n}, from, compute)
		t.StoredAs = safetensors.F32
		set(name, t)
	}
	// scaled is w·diag(γ).
	scaled := func(w, gamma *weights.Tensor) func() ([]float32, error) {
		return func() ([]float32, error) {
			m, g, err := readWith(w, gamma)
			if err != nil {
				return nil, err
			}
			return m.scaledColumns(g, 0), nil
		}
	}
	set("attn1.to_qkv.weight", weights.Computed(qkv.Name, qkv.Shape, []*weights.Tensor{qkv, n1w}, scaled(qkv, n1w)))
	bias("attn1.to_qkv.bias", qkv.Shape[0], []*weights.Tensor{q, n1b}, func() ([]float32, error) {
		m, beta, err := readWith(q, n1b)
		if err != nil {
			return nil, err
		}
		qb := m.times(beta, nil)
		return append(qb, make([]float32, qkv.Shape[0]-int64(len(qb)))...), nil // the key's and value's: zero
	})
	bias("attn1.to_out.0.bias", outW.Shape[0], []*weights.Tensor{outB, outW, v, n1b}, func() ([]float32, error) {
		mv, beta, err := readWith(v, n1b)
		if err != nil {
			return nil, err
		}
		mo, b, err := readWith(outW, outB)
		if err != nil {
			return nil, err
		}
		if mo.cols != mv.rows {
			return nil, fmt.Errorf("%s is shaped %v, but %s gives %d values", outW.Name, outW.Shape, v.Name, mv.rows)
		}
		return mo.times(mv.times(beta, nil), b), nil
	})
	set("attn2.to_q.weight", weights.Computed(full("attn2.to_q.weight"), q2.Shape, []*weights.Tensor{q2, n2w}, scaled(q2, n2w)))
	bias("attn2.to_q.bias", q2.Shape[0], []*weights.Tensor{q2, n2b}, func() ([]float32, error) {
		m, beta, err := readWith(q2, n2b)
		if err != nil {
			return nil, err
		}
		return m.times(beta, nil), nil
	})
	set("ff.net.0.proj.weight", weights.Computed(full("ff.net.0.proj.weight"), []int64{ffW.Shape[0], in + biasColumns}, []*weights.Tensor{ffW, ffB, n3w, n3b},
		func() ([]float32, error) {
			m, beta, err := readWith(ffW, n3b)
			if err != nil {
				return nil, err
			}
			gamma, err := readVector(n3w, m.cols)
			if err != nil {
				return nil, err
			}
			b, err := readVector(ffB, m.rows)
			if err != nil {
				return nil, err
			}
			bias, w := m.times(beta, b), m.scaledColumns(gamma, biasColumns)
			for r, x := range bias {
				spare := w[int64(r)*(m.cols+biasColumns)+m.cols:][:biasColumns]
				spare[0] = x
				if ffType == ggml.TypeF16 {
					spare[0] = half.F16ToF32(half.F32ToF16(x))
					spare[1] = x - spare[0]
				}
			}
			return w, nil
		}))
	for _, name := range []string{"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias", "ff.net.0.proj.bias"} {
		set(name, nil) // folded: the step only normalises
	}
	return nil
}

// matrix is a 2-D weight as float32, [rows, cols] in PyTorch's order.
type matrix struct {
	v          []float32
	rows, cols int64
}

// readWith reads the 2-D tensor w and a vector x as long as its rows.
func readWith(w, x *weights.Tensor) (matrix, []float32, error) {
	v, err := w.Float32()
	if err != nil {
		return matrix{}, nil, err
	}
	m := matrix{v, w.Shape[0], w.Shape[1]}
	xv, err := readVector(x, m.cols)
	return m, xv, err
}

// readVector reads t as a vector of n values.
func readVector(t *weights.Tensor, n int64) ([]float32, error) {
	if t.Elements() != n {
		return nil, fmt.Errorf("%s has %d values, want %d", t.Name, t.Elements(), n)
	}
	return t.Float32()
}

// scaledColumns is m with column c multiplied by gamma[c], each row
// followed by spare zeros; without spare columns, m scaled in place.
func (m matrix) scaledColumns(gamma []float32, spare int64) []float32 {
	out := m.v
	if spare > 0 {
		out = make([]float32, m.rows*(m.cols+spare))
	}
	byRows(m, func(lo, hi int64) {
		for r := lo; r < hi; r++ {
			dst := out[r*(m.cols+spare):][:m.cols]
			for c, x := range m.v[r*m.cols : (r+1)*m.cols] {
				dst[c] = x * gamma[c]
			}
		}
	})
	return out
}

// times is m·x (+ b, when not nil), summed in float64.
func (m matrix) times(x, b []float32) []float32 {
	out := make([]float32, m.rows)
	byRows(m, func(lo, hi int64) {
		for r := lo; r < hi; r++ {
			row := m.v[r*m.cols : (r+1)*m.cols]
			var s0, s1 float64 // two sums, so that the additions overlap
			c := 0
			for ; c+1 < len(row); c += 2 {
				s0 += float64(row[c]) * float64(x[c])
				s1 += float64(row[c+1]) * float64(x[c+1])
			}
			if c < len(row) {
				s0 += float64(row[c]) * float64(x[c])
			}
			if b != nil {
				s0 += float64(b[r])
			}
			out[r] = float32(s0 + s1)
		}
	})
	return out
}

// byRows calls f on ranges of m's rows, on every core for large matrices:
// the loader converts only a few of SDXL's large tensors at a time, and a
// feed-forward weight has 13 million values.
func byRows(m matrix, f func(lo, hi int64)) {
	parallel.Ranges(int(m.rows), max(1, 1<<20/int(m.cols)), func(lo, hi int) { f(int64(lo), int64(hi)) })
}
