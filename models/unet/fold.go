package unet

import (
	"context"
	"fmt"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
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
// by γ would change the quantization error) also get the biases that
// foldNorms fills (attn1.to_qkv.bias, attn2.to_q.bias), zero until then,
// and the feed-forward's first product gets biasColumns zero columns, where
// foldNorms puts its bias.
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
	for _, t := range derived {
		if t != nil {
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
	if !fold || !foldable(get, func(name string) ggml.Type {
		if name == "attn1.to_qkv.weight" {
			return nn.StoredType(policy, qkv.Name, qkv)
		}
		return nn.StoredType(policy, full(name), get(name))
	}) {
		return nil
	}
	zeros := func(name string, n int64) {
		derived[block+name] = weights.NewTensor(full(name), safetensors.F32, []int64{n}, "", func() ([]byte, error) { return make([]byte, 4*n), nil })
	}
	zeros("attn1.to_qkv.bias", qkv.Shape[0])
	zeros("attn2.to_q.bias", get("attn2.to_q.weight").Shape[0])
	padded, err := weights.PadRows(full("ff.net.0.proj.weight"), get("ff.net.0.proj.weight"), biasColumns)
	derived[block+"ff.net.0.proj.weight"] = padded
	return err
}

// biasColumns is how many columns the feed-forward's first product gains
// for its bias (foldNorms): one would do, eight keep its rows of f16 a
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
	if get("attn2.to_q.bias") != nil || get("ff.net.0.proj.weight").DType.Size() <= 0 { // the padding copies float bytes
		return false
	}
	for _, name := range foldedProducts {
		if t := typeOf(name); t != ggml.TypeF16 && t != ggml.TypeF32 {
			return false
		}
	}
	return true
}

// foldNorms folds, in device memory, each layer norm's scale γ and shift β
// of the blocks WeightSet prepared into the products after it:
// W·(n·γ + β) = (W·diag γ)·n + W·β, so a step only normalises: three
// multiplies and an add fewer per block, for a moment's work after loading
// (with the fused projections and the feed-forward's bias below, SDXL's
// CFG step on a GPU has 2289 ops instead of 2707). The shifts become
// biases: the query's (W_q·β); none for the key, whose q·W_k·β is the same
// for every key of a query, which softmax ignores; the value's reaches the output
// unchanged, attention weights summing to 1, so it joins the output
// projection's bias (b_out + W_out·W_v·β); the feed-forward's first product
// had a bias already. That product's output is eight times its input, so
// its bias moves into the weight's spare columns (biasColumns, WeightSet),
// which multiply columns of ones appended to the input: a small copy of
// the input instead of an add over the output. Its f16 columns hold the
// bias and the rest of its rounding, so that it keeps f32's precision. The
// CPU's own kernels apply a norm's γ and β and a product's bias as they
// go, so there this is not done (Load).
func (u *UNet) foldNorms(ctx context.Context) error {
	var blocks []*transformerBlock
	u.m.eachBlock(func(b *transformerBlock) {
		if b.Attn1.ToQKV.Bias != nil && b.Norm1 != nil {
			blocks = append(blocks, b)
		}
	})
	if len(blocks) == 0 {
		return nil
	}
	// Biases first, from the weights as loaded; then the weights scaled in
	// place, in a second graph (one graph would not order a product's read
	// of a weight before the write of its scaled copy).
	biases := func(c *ggml.Context) []*ggml.Tensor {
		var outs []*ggml.Tensor
		for _, b := range blocks {
			inner := b.Attn1.ToQKV.Weight.Ne(1) / 3
			p := c.MulMat(b.Attn1.ToQKV.Weight, b.Norm1.Bias) // [3·inner]: query, key, value
			row := func(t *ggml.Tensor, i int64) *ggml.Tensor {
				return c.View(t, [4]int64{inner, 1, 1, 1}, t.Nb(1), t.Nb(2), t.Nb(3), i*inner*t.Nb(0))
			}
			outBias := b.Attn1.ToOut.Bias
			outs = append(outs,
				c.Copy(row(p, 0), row(b.Attn1.ToQKV.Bias, 0)),
				c.Copy(c.Add(outBias, c.MulMat(b.Attn1.ToOut.Weight, row(p, 2))), outBias),
				c.Copy(c.MulMat(b.Attn2.ToQ.Weight, b.Norm2.Bias), b.Attn2.ToQ.Bias))
			// The feed-forward's bias, b + W·β (its spare columns are zero
			// yet), rounded to the weight's type, then what rounding lost.
			w := b.FF.In.Proj.Weight
			in := w.Ne(0) - biasColumns
			bias := c.Add(b.FF.In.Proj.Bias, c.MulMat(w, c.Concat(b.Norm3.Bias, c.Scale(c.Ones(biasColumns), 0), 0)))
			column := func(k int64) *ggml.Tensor {
				return c.View(w, [4]int64{1, w.Ne(1), 1, 1}, w.Nb(1), w.Nb(2), w.Nb(3), (in+k)*w.Nb(0))
			}
			rounded := c.Cast(bias, w.Type())
			outs = append(outs,
				c.Copy(c.Reshape(rounded, 1, w.Ne(1)), column(0)),
				c.Copy(c.Reshape(c.Sub(bias, c.Cast(rounded, ggml.TypeF32)), 1, w.Ne(1)), column(1)))
		}
		return outs
	}
	scales := func(c *ggml.Context) []*ggml.Tensor {
		var outs []*ggml.Tensor
		for _, b := range blocks {
			ffScale := c.Concat(b.Norm3.Weight, c.Ones(biasColumns), 0) // the bias columns stay
			for _, f := range []struct{ w, gamma *ggml.Tensor }{
				{b.Attn1.ToQKV.Weight, b.Norm1.Weight}, {b.Attn2.ToQ.Weight, b.Norm2.Weight}, {b.FF.In.Proj.Weight, ffScale},
			} {
				// In f32: Metal multiplies f32 tensors only.
				outs = append(outs, c.Copy(c.Mul(c.Cast(f.w, ggml.TypeF32), f.gamma), f.w))
			}
		}
		return outs
	}
	for _, build := range []func(c *ggml.Context) []*ggml.Tensor{biases, scales} {
		g, err := u.rt.PrepareWrites(build)
		if err != nil {
			return err
		}
		err = g.Compute(ctx)
		g.Close()
		if err != nil {
			return fmt.Errorf("folding the layer norms: %w", err)
		}
	}
	for _, b := range blocks {
		b.Norm1, b.Norm2, b.Norm3 = nil, nil, nil // folded: the step only normalises
	}
	return nil
}
