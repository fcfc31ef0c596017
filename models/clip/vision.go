package clip

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// VisionEmbeddings is CLIPVisionEmbeddings: a bias-free patch convolution,
// a learned class token and learned positions.
type VisionEmbeddings struct {
	Class    *ggml.Tensor `w:"class_embedding"`
	Patch    nn.Conv2D    `w:"patch_embedding"`
	Position nn.Embedding `w:"position_embedding"`
}

// VisionTransformer is CLIPVisionTransformer (the "vision_model" module).
type VisionTransformer struct {
	Embeddings VisionEmbeddings `w:"embeddings"`
	PreLN      nn.LayerNorm     `w:"pre_layrnorm"` // sic, as in the checkpoints
	Encoder    Encoder          `w:"encoder"`
	PostLN     nn.LayerNorm     `w:"post_layernorm"`
}

// VisionParams are the sizes read from a vision tower's weights.
type VisionParams struct {
	ImageSize, PatchSize int
	// Positions = (ImageSize/PatchSize)² + 1 (the class token).
	Positions            int
	Hidden, Heads        int
	Layers, Intermediate int
	// Projection and Projection2 are the widths of visual_projection and
	// visual_projection_2 (0 when absent).
	Projection, Projection2 int
}

// VisionModel is the CLIP vision tower of PhotoMaker's ID encoder with its
// two projections, bound to device weights.
type VisionModel struct {
	Model       VisionTransformer `w:"vision_model"`
	Projection  *nn.Linear        `w:"visual_projection,optional"`
	Projection2 *nn.Linear        `w:"visual_projection_2,optional"`

	Params VisionParams
	Config VisionConfig // resolved
	// Attn selects how attention is computed (LoadVision copies the runtime's).
	Attn nn.AttentionOptions

	prefix string
	loaded
}

// BindVision declares the vision tower under prefix (e.g. "pm.", holding
// vision_model.* and the projections) in w and validates its shapes.
func BindVision(w *nn.Weights, set *weights.Set, prefix string, cfg VisionConfig) (*VisionModel, error) {
	prefix = normPrefix(prefix)
	m := &VisionModel{prefix: prefix, Config: cfg.resolve()}
	if err := w.Bind(set, prefix, m); err != nil {
		return nil, fmt.Errorf("clip vision tower %s: %w", prefix, err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadVision binds the vision tower under prefix, stores its weights for rt
// (nn.Runtime.Upload) as policy says (nil: all float32) and returns it
// ready to run.
func LoadVision(ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, cfg VisionConfig, policy nn.TypePolicy) (*VisionModel, error) {
	return loadOwned(ctx, rt, set, prefix, policy, func(w *nn.Weights) (*VisionModel, error) { return BindVision(w, set, prefix, cfg) })
}

func (m *VisionModel) check() error {
	s := &shapeChecker{prefix: m.prefix}
	vm := &m.Model
	emb := &vm.Embeddings
	patch := emb.Patch.Weight // [P, P, 3, C]
	hidden, ps := patch.Ne(3), patch.Ne(0)
	s.want("vision_model.embeddings.patch_embedding.weight", patch, false, ps, ps, 3, hidden)
	s.want("vision_model.embeddings.patch_embedding.bias", emb.Patch.Bias, true, hidden)
	s.want("vision_model.embeddings.class_embedding", emb.Class, false, hidden)
	npos := emb.Position.Weight.Ne(1)
	s.want("vision_model.embeddings.position_embedding.weight", emb.Position.Weight, false, hidden, npos)
	grid := int64(0)
	for grid*grid < npos-1 {
		grid++
	}
	if grid == 0 || grid*grid != npos-1 {
		s.fail("vision_model.embeddings.position_embedding.weight: %d positions is not a square grid plus the class token", npos)
	}
	for _, ln := range []struct {
		n string
		l *nn.LayerNorm
	}{{"pre_layrnorm", &vm.PreLN}, {"post_layernorm", &vm.PostLN}} {
		s.want("vision_model."+ln.n+".weight", ln.l.Weight, false, hidden)
		s.want("vision_model."+ln.n+".bias", ln.l.Bias, true, hidden)
	}
	sub := &shapeChecker{prefix: m.prefix + "vision_model."}
	inter := vm.Encoder.check(sub, hidden)
	if s.err == nil {
		s.err = sub.err
	}
	heads := headsFor(s, hidden, m.Config.HeadDim)
	var proj [2]int64
	for i, p := range []*nn.Linear{m.Projection, m.Projection2} {
		if p == nil {
			continue
		}
		name := []string{"visual_projection", "visual_projection_2"}[i]
		proj[i] = p.Weight.Ne(1)
		s.want(name+".weight", p.Weight, false, hidden, proj[i])
		s.want(name+".bias", p.Bias, true, proj[i])
	}
	if s.err != nil {
		return s.err
	}
	m.Params = VisionParams{
		ImageSize: int(grid * ps), PatchSize: int(ps), Positions: int(npos),
		Hidden: int(hidden), Heads: heads,
		Layers: len(vm.Encoder.Layers), Intermediate: int(inter),
		Projection: int(proj[0]), Projection2: int(proj[1]),
	}
	return nil
}

// NewInput checks that every image is 3×ImageSize×ImageSize float32 values
// (CHW, normalised as CLIPImageProcessor does) and declares the batch as an
// input [W, H, 3, B] of c.
func (m *VisionModel) NewInput(c *ggml.Context, images [][]float32) (*ggml.Tensor, error) {
	if err := m.CheckImages(images); err != nil {
		return nil, err
	}
	s := m.Params.ImageSize
	flat := make([]float32, 0, len(images)*3*s*s)
	for _, im := range images {
		flat = append(flat, im...)
	}
	return c.InputF32(flat, int64(s), int64(s), 3, int64(len(images))), nil
}

// CheckImages reports why images cannot be encoded, or nil.
func (m *VisionModel) CheckImages(images [][]float32) error {
	if len(images) == 0 {
		return fmt.Errorf("clip %s: no images to encode", m.prefix)
	}
	s := m.Params.ImageSize
	for i, im := range images {
		if len(im) != 3*s*s {
			return fmt.Errorf("clip %s: image %d has %d values, want 3×%d×%d = %d", m.prefix, i, len(im), s, s, 3*s*s)
		}
	}
	return nil
}

// VisionOutputs are the graph nodes of a vision forward pass.
type VisionOutputs struct {
	// Last is last_hidden_state [C, Positions, B] (before post_layernorm).
	Last *ggml.Tensor
	// Pooled is post_layernorm(Last[:, 0]) [C, B].
	Pooled *ggml.Tensor
	// Projected and Projected2 are visual_projection(Pooled) and
	// visual_projection_2(Pooled) (nil without the projection).
	Projected, Projected2 *ggml.Tensor
	// IDEmbeds is Projected ++ Projected2 along the width [P1+P2, B] (nil
	// unless both projections exist): PhotoMaker v1's ID embedding.
	IDEmbeds *ggml.Tensor
}

// Forward builds the tower's graph for pixels [W, H, 3, B].
func (m *VisionModel) Forward(c *ggml.Context, pixels *ggml.Tensor) VisionOutputs {
	vm := &m.Model
	emb := &vm.Embeddings
	C, P, B := int64(m.Params.Hidden), int64(m.Params.Positions), pixels.Ne(3)
	if pixels.Ne(0) != int64(m.Params.ImageSize) || pixels.Ne(1) != int64(m.Params.ImageSize) || pixels.Ne(2) != 3 {
		panic(fmt.Sprintf("clip %s: pixels %v, want [%d %d 3 B]", m.prefix, pixels.Shape(), m.Params.ImageSize, m.Params.ImageSize))
	}
	ps := m.Params.PatchSize
	x := emb.Patch.Forward(c, pixels, ps, 0)         // [G, G, C, B]
	x = c.Reshape(x, P-1, C, B)                      // [G·G, C, B]
	x = c.Cont(c.Permute(x, 1, 0, 2, 3))             // [C, G·G, B]
	pos := c.Cast(emb.Position.Weight, ggml.TypeF32) // [C, P]
	class := c.Add(c.Cast(emb.Class, ggml.TypeF32), c.View(pos, [4]int64{C, 1, 1, 1}, pos.Nb(1), pos.Nb(1), pos.Nb(1), 0))
	rest := c.View(pos, [4]int64{C, P - 1, 1, 1}, pos.Nb(1), pos.Nb(1)*(P-1), pos.Nb(1)*(P-1), pos.Nb(1))
	// [C, P, B]: class+pos[0], then patches+pos[1:]. A concatenation rather
	// than a zero row padded in front: Metal pads only at the end.
	x = c.Concat(c.Repeat(class, c.NewTensor(ggml.TypeF32, C, 1, B, 1)), c.Add(x, c.Cont(rest)), 1)

	x = vm.PreLN.Forward(c, x, m.Config.Eps)
	hidden := vm.Encoder.Forward(c, x, nil, LayerOptions{
		Heads: m.Params.Heads, Activation: m.Config.Activation, Eps: m.Config.Eps, Attn: m.Attn,
	})
	out := VisionOutputs{Last: hidden[len(hidden)-1]}
	cls := c.View(out.Last, [4]int64{C, B, 1, 1}, out.Last.Nb(2), out.Last.Nb(2)*B, out.Last.Nb(2)*B, 0)
	out.Pooled = vm.PostLN.Forward(c, c.Cont(cls), m.Config.Eps) // [C, B]
	if m.Projection != nil {
		out.Projected = m.Projection.Forward(c, out.Pooled)
	}
	if m.Projection2 != nil {
		out.Projected2 = m.Projection2.Forward(c, out.Pooled)
	}
	if out.Projected != nil && out.Projected2 != nil {
		out.IDEmbeds = c.Concat(out.Projected, out.Projected2, 0)
	}
	return out
}

// VisionResult holds the tower's outputs as float32 in PyTorch layout.
type VisionResult struct {
	Batch, Positions, Width int
	// Last is last_hidden_state [B, Positions, Width].
	Last []float32
	// Pooled is pooler_output [B, Width].
	Pooled []float32
	// Projected [B, P1] and Projected2 [B, P2]; nil when absent.
	Projected, Projected2 []float32
}

// IDEmbeds returns Projected ++ Projected2 per image [B, P1+P2], or nil.
func (r *VisionResult) IDEmbeds() []float32 {
	if r.Projected == nil || r.Projected2 == nil {
		return nil
	}
	p1, p2 := len(r.Projected)/r.Batch, len(r.Projected2)/r.Batch
	out := make([]float32, 0, r.Batch*(p1+p2))
	for b := 0; b < r.Batch; b++ {
		out = append(out, r.Projected[b*p1:(b+1)*p1]...)
		out = append(out, r.Projected2[b*p2:(b+1)*p2]...)
	}
	return out
}

// Encode runs the tower on a batch of CHW images.
func (m *VisionModel) Encode(ctx context.Context, rt *nn.Runtime, images [][]float32) (*VisionResult, error) {
	if err := m.CheckImages(images); err != nil {
		return nil, err
	}
	var nproj [2]bool
	outs, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		px, err := m.NewInput(c, images)
		if err != nil {
			panic(err) // already checked
		}
		o := m.Forward(c, px)
		list := []*ggml.Tensor{o.Last, o.Pooled}
		for i, p := range []*ggml.Tensor{o.Projected, o.Projected2} {
			if p != nil {
				nproj[i] = true
				list = append(list, p)
			}
		}
		return list
	})
	if err != nil {
		return nil, fmt.Errorf("clip %s: %w", m.prefix, err)
	}
	r := &VisionResult{Batch: len(images), Positions: m.Params.Positions, Width: m.Params.Hidden,
		Last: outs[0].Data, Pooled: outs[1].Data}
	k := 2
	if nproj[0] {
		r.Projected = outs[k].Data
		k++
	}
	if nproj[1] {
		r.Projected2 = outs[k].Data
	}
	return r, nil
}
