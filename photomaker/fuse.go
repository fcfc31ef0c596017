package photomaker

import (
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
)

// DefaultEps is the LayerNorm epsilon of every PhotoMaker module
// (torch.nn.LayerNorm's default).
const DefaultEps = 1e-5

// MLP is PhotoMaker's fuse-module MLP: LayerNorm → fc1 → GELU (erf) → fc2,
// with an optional residual around the whole block.
type MLP struct {
	Norm nn.LayerNorm `w:"layernorm"`
	FC1  nn.Linear    `w:"fc1"`
	FC2  nn.Linear    `w:"fc2"`
}

// Forward maps x [in, N] to [out, N], adding x back when residual is set.
func (m *MLP) Forward(c *ggml.Context, x *ggml.Tensor, residual bool, eps float32) *ggml.Tensor {
	h := m.Norm.Forward(c, x, eps)
	h = m.FC2.Forward(c, c.GELUErf(m.FC1.Forward(c, h)))
	if residual {
		h = c.Add(h, x)
	}
	return h
}

// FuseModule merges a class-word prompt embedding with an ID embedding:
//
//	fuse(p, id) = layer_norm(mlp2(mlp1(concat(p, id)) + p))
//
// where mlp1 has no residual and mlp2 has one.
type FuseModule struct {
	MLP1 MLP          `w:"mlp1"`
	MLP2 MLP          `w:"mlp2"`
	Norm nn.LayerNorm `w:"layer_norm"`

	// Eps is the LayerNorm epsilon (0: DefaultEps).
	Eps float32
}

// Width is the prompt-embedding width the module works at (2048 for
// SDXL, 128 for the tiny test adapters).
func (f *FuseModule) Width() int { return int(f.Norm.Weight.Ne(0)) }

// IDWidth is the width of the ID embeddings it fuses: mlp1's input width
// minus the prompt width.
func (f *FuseModule) IDWidth() int { return int(f.MLP1.Norm.Weight.Ne(0)) - f.Width() }

// check validates the shapes read from the weights.
func (f *FuseModule) check() error {
	d := f.Norm.Weight.Ne(0)
	in := f.MLP1.Norm.Weight.Ne(0)
	bad := func(what string, got, want int64) error {
		return fmt.Errorf("fuse_module: %s is %d wide, want %d", what, got, want)
	}
	switch {
	case in <= d:
		return fmt.Errorf("fuse_module: mlp1 input width %d is not larger than the embedding width %d", in, d)
	case f.MLP1.FC1.InFeatures() != in:
		return bad("mlp1.fc1 input", f.MLP1.FC1.InFeatures(), in)
	case f.MLP1.FC2.InFeatures() != f.MLP1.FC1.OutFeatures():
		return bad("mlp1.fc2 input", f.MLP1.FC2.InFeatures(), f.MLP1.FC1.OutFeatures())
	case f.MLP1.FC2.OutFeatures() != d:
		return bad("mlp1.fc2 output", f.MLP1.FC2.OutFeatures(), d)
	case f.MLP2.Norm.Weight.Ne(0) != d:
		return bad("mlp2.layernorm", f.MLP2.Norm.Weight.Ne(0), d)
	case f.MLP2.FC1.InFeatures() != d:
		return bad("mlp2.fc1 input", f.MLP2.FC1.InFeatures(), d)
	case f.MLP2.FC2.InFeatures() != f.MLP2.FC1.OutFeatures():
		return bad("mlp2.fc2 input", f.MLP2.FC2.InFeatures(), f.MLP2.FC1.OutFeatures())
	case f.MLP2.FC2.OutFeatures() != d:
		return bad("mlp2.fc2 output", f.MLP2.FC2.OutFeatures(), d)
	}
	return nil
}

func (f *FuseModule) eps() float32 {
	if f.Eps > 0 {
		return f.Eps
	}
	return DefaultEps
}

// Forward fuses prompt rows p [Width, K] with ID embeddings id
// [IDWidth, K] (row k with row k) and returns [Width, K].
func (f *FuseModule) Forward(c *ggml.Context, p, id *ggml.Tensor) *ggml.Tensor {
	if p.Ne(0) != int64(f.Width()) || id.Ne(0) != int64(f.IDWidth()) || p.Ne(1) != id.Ne(1) {
		panic(fmt.Sprintf("fuse_module: prompt rows %v and ID embeddings %v, want [%d K] and [%d K]",
			p.Shape(), id.Shape(), f.Width(), f.IDWidth()))
	}
	eps := f.eps()
	h := f.MLP1.Forward(c, c.Concat(p, id, 0), false, eps)
	h = f.MLP2.Forward(c, c.Add(h, p), true, eps)
	return f.Norm.Forward(c, h, eps)
}

// GatherRows returns the rows of prompt embeddings pe [Width, Seq] (one
// prompt) listed in rows, as [Width, len(rows)].
func GatherRows(c *ggml.Context, pe *ggml.Tensor, rows []int) *ggml.Tensor {
	idx := make([]int32, len(rows))
	for i, r := range rows {
		idx[i] = int32(r)
	}
	return c.GetRows(c.Reshape(pe, pe.Ne(0), pe.Ne(1)), c.InputI32(idx, int64(len(idx))))
}

// ScatterRows returns a copy of prompt embeddings pe (Seq rows of width
// values, row-major as PyTorch stores [Seq, width]) with row rows[k]
// replaced by row k of fused.
func ScatterRows(pe []float32, width int, rows []int, fused []float32) []float32 {
	out := append([]float32(nil), pe...)
	for k, r := range rows {
		copy(out[r*width:(r+1)*width], fused[k*width:(k+1)*width])
	}
	return out
}

// MaskRows returns the positions where mask is set, in order: the prompt
// rows that a class-token mask selects for fusion.
func MaskRows(mask []bool) []int {
	var rows []int
	for i, m := range mask {
		if m {
			rows = append(rows, i)
		}
	}
	return rows
}
