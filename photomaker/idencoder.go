package photomaker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/models/clip"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// Version is a PhotoMaker adapter generation.
type Version int

const (
	// V1 fuses one CLIP image embedding per photo into one copy of the
	// class word.
	V1 Version = 1
	// V2 turns each photo's face embedding (insightface, 512-d) plus the
	// CLIP hidden states into 2 ID tokens, fused into 2 copies of the class
	// word.
	V2 Version = 2
)

// TokensPerImage is how many class-word copies (and ID tokens) one photo
// takes: 1 for v1, 2 for v2.
func (v Version) TokensPerImage() int {
	if v == V2 {
		return 2
	}
	return 1
}

func (v Version) String() string { return fmt.Sprintf("PhotoMaker v%d", int(v)) }

// DetectVersion tells v1 from v2 by the tensor names under prefix (v2 has
// qformer_perceiver.*), not by the file name.
func DetectVersion(set *weights.Set, prefix string) (Version, error) {
	fuse, perceiver := false, false
	for _, n := range set.Prefix(prefix).Names() {
		fuse = fuse || strings.HasPrefix(n, "fuse_module.")
		perceiver = perceiver || strings.HasPrefix(n, "qformer_perceiver.")
	}
	switch {
	case perceiver:
		return V2, nil
	case fuse:
		return V1, nil
	}
	return 0, fmt.Errorf("%w: no fuse_module under %q", nn.ErrMissing, prefix)
}

// IDEncoderOptions holds what the ID encoder cannot read from its weights.
// The zero value is right for the official adapters.
type IDEncoderOptions struct {
	Vision    clip.VisionConfig
	Perceiver PerceiverConfig
	// Policy chooses each weight's device type (nil: all float32).
	Policy nn.TypePolicy
}

// IDEncoder is PhotoMaker's ID encoder: the CLIP vision tower, the fuse
// module and, for v2, the qformer perceiver, bound to device weights.
type IDEncoder struct {
	Version   Version
	Vision    *clip.VisionModel
	Fuse      FuseModule
	Perceiver *QFormerPerceiver // v2 only

	w *nn.Weights
}

// ErrIDInput is wrapped by the errors for photos, face embeddings or
// prompt rows that do not fit together, and by Generate's about a
// request's ID photos and face embeddings (with ErrInvalidRequest).
var ErrIDInput = errors.New("bad ID encoder input")

// LoadIDEncoder binds the ID encoder under prefix of set ("pm." for the
// canonical names of weights.Open), checks its shapes and uploads it for
// rt (nn.Runtime.Upload: to its device, or host memory it streams from).
func LoadIDEncoder(ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, opt IDEncoderOptions) (*IDEncoder, error) {
	if prefix != "" && !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	ver, err := DetectVersion(set, prefix)
	if err != nil {
		return nil, err
	}
	w := nn.NewWeights(len(set.Prefix(prefix).Names())+16, opt.Policy)
	e := &IDEncoder{Version: ver, w: w}
	if err := e.bind(set, prefix, opt); err != nil {
		w.Free()
		return nil, fmt.Errorf("%s ID encoder: %w", ver, err)
	}
	if err := rt.Upload(ctx, w, nil); err != nil {
		w.Free()
		return nil, fmt.Errorf("%s ID encoder: %w", ver, err)
	}
	e.Vision.Attn = rt.Attn
	if e.Perceiver != nil {
		e.Perceiver.Attn = rt.Attn
	}
	return e, nil
}

func (e *IDEncoder) bind(set *weights.Set, prefix string, opt IDEncoderOptions) error {
	vm, err := clip.BindVision(e.w, set, prefix, opt.Vision)
	if err != nil {
		return err
	}
	e.Vision = vm
	if err := e.w.Bind(set, prefix+"fuse_module.", &e.Fuse); err != nil {
		return err
	}
	if err := e.Fuse.check(); err != nil {
		return err
	}
	vp := vm.Params
	if e.Version == V1 {
		if vp.Projection == 0 || vp.Projection2 == 0 {
			return fmt.Errorf("%w: v1 needs visual_projection and visual_projection_2", nn.ErrMissing)
		}
		if vp.Projection+vp.Projection2 != e.Fuse.IDWidth() {
			return fmt.Errorf("visual projections give %d+%d values, fuse_module expects %d", vp.Projection, vp.Projection2, e.Fuse.IDWidth())
		}
		return nil
	}
	q, err := BindPerceiver(e.w, set, prefix+"qformer_perceiver.", opt.Perceiver)
	if err != nil {
		return err
	}
	e.Perceiver = q
	if q.Params.Embedding != vp.Hidden {
		return fmt.Errorf("qformer_perceiver attends over %d-wide features, the vision tower gives %d", q.Params.Embedding, vp.Hidden)
	}
	if q.Params.Dim != e.Fuse.IDWidth() {
		return fmt.Errorf("qformer_perceiver gives %d-wide tokens, fuse_module expects %d", q.Params.Dim, e.Fuse.IDWidth())
	}
	return nil
}

// Close frees the device weights.
func (e *IDEncoder) Close() {
	if e.w != nil {
		e.w.Free()
		e.w = nil
	}
}

// Width is the prompt-embedding width the encoder fuses into (2048 for SDXL).
func (e *IDEncoder) Width() int { return e.Fuse.Width() }

// TokensPerImage is Version.TokensPerImage.
func (e *IDEncoder) TokensPerImage() int { return e.Version.TokensPerImage() }

// ImageSize is the side of the square photos the vision tower takes (224).
func (e *IDEncoder) ImageSize() int { return e.Vision.Params.ImageSize }

// FaceEmbeddingWidth is the width of v2's face embeddings (512), 0 for v1.
func (e *IDEncoder) FaceEmbeddingWidth() int {
	if e.Perceiver == nil {
		return 0
	}
	return e.Perceiver.Params.IDWidth
}

// IDTokens builds the ID tokens for photos pixels [S, S, 3, N] (and, for
// v2, face embeddings faces [512, N]; nil for v1): [IDWidth,
// N·TokensPerImage], the tokens of photo i at columns i·T … i·T+T-1.
func (e *IDEncoder) IDTokens(c *ggml.Context, pixels, faces *ggml.Tensor) *ggml.Tensor {
	v := e.Vision.Forward(c, pixels)
	if e.Version == V1 {
		return v.IDEmbeds
	}
	if faces == nil {
		panic("photomaker v2 ID encoder: face embeddings are required")
	}
	t := e.Perceiver.Forward(c, faces, v.Last) // [D, T, N]
	return c.Reshape(t, t.Ne(0), t.Ne(1)*t.Ne(2))
}

// Forward builds the fused prompt rows: prompt rows p [Width, K] (K = N·T,
// in the order their ID tokens come) fused with the ID tokens of pixels and
// faces (see IDTokens). Returns [Width, K].
func (e *IDEncoder) Forward(c *ggml.Context, pixels, faces, p *ggml.Tensor) *ggml.Tensor {
	return e.Fuse.Forward(c, p, e.IDTokens(c, pixels, faces))
}

// Encode fuses the photos into the prompt embeddings of one prompt and
// returns the updated embeddings (a new slice; promptEmbeds is untouched).
//
//   - pixels holds N photos, 3×S×S each (CHW, CLIPImageProcessor
//     normalisation), one after another;
//   - idEmbeds holds the N raw face embeddings (v2 only; nil for v1);
//   - promptEmbeds is the [Seq, Width] SDXL prompt embedding of the ID
//     prompt, row-major;
//   - classTokenMask marks the Seq rows to fuse: N·TokensPerImage of them.
//     The k-th marked row is fused with ID token k: v1's photo k, v2's
//     photo k/2, token k%2, as the official encoders do.
func (e *IDEncoder) Encode(ctx context.Context, rt *nn.Runtime, pixels []float32, idEmbeds [][]float32, promptEmbeds []float32, classTokenMask []bool) ([]float32, error) {
	if w := e.Width(); len(promptEmbeds) != len(classTokenMask)*w {
		return nil, fmt.Errorf("%w: %d prompt-embedding values for a %d-token mask of width %d", ErrIDInput, len(promptEmbeds), len(classTokenMask), w)
	}
	return e.EncodeRows(ctx, rt, pixels, idEmbeds, promptEmbeds, MaskRows(classTokenMask))
}

// EncodeRows is Encode with the rows to fuse listed explicitly: ID token k
// is fused into row rows[k] (IDPrompt.FusionRows gives them for several
// identities).
func (e *IDEncoder) EncodeRows(ctx context.Context, rt *nn.Runtime, pixels []float32, idEmbeds [][]float32, promptEmbeds []float32, rows []int) ([]float32, error) {
	n, faces, err := e.checkInputs(pixels, idEmbeds, promptEmbeds, rows)
	if err != nil {
		return nil, err
	}
	w, s := e.Width(), int64(e.ImageSize())
	out, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		px := c.InputF32(pixels, s, s, 3, int64(n))
		var f *ggml.Tensor
		if faces != nil {
			f = c.InputF32(faces, int64(e.FaceEmbeddingWidth()), int64(n))
		}
		pe := c.InputF32(promptEmbeds, int64(w), int64(len(promptEmbeds)/w))
		return []*ggml.Tensor{e.Forward(c, px, f, GatherRows(c, pe, rows))}
	})
	if err != nil {
		return nil, fmt.Errorf("%s ID encoder: %w", e.Version, err)
	}
	return ScatterRows(promptEmbeds, w, rows, out[0].Data), nil
}

// checkInputs validates Encode's inputs and returns the photo count and
// the flattened face embeddings (nil for v1).
func (e *IDEncoder) checkInputs(pixels []float32, idEmbeds [][]float32, promptEmbeds []float32, rows []int) (int, []float32, error) {
	s := e.ImageSize()
	per := 3 * s * s
	if len(pixels) == 0 || len(pixels)%per != 0 {
		return 0, nil, fmt.Errorf("%w: %d pixel values is not a whole number of 3×%d×%d photos", ErrIDInput, len(pixels), s, s)
	}
	n := len(pixels) / per
	w := e.Width()
	if len(promptEmbeds) == 0 || len(promptEmbeds)%w != 0 {
		return 0, nil, fmt.Errorf("%w: %d prompt-embedding values is not a whole number of %d-wide rows", ErrIDInput, len(promptEmbeds), w)
	}
	seq := len(promptEmbeds) / w
	if want := n * e.TokensPerImage(); len(rows) != want {
		return 0, nil, fmt.Errorf("%w: %d photos need %d class-word tokens in the prompt (%d per photo), the prompt has %d",
			ErrIDInput, n, want, e.TokensPerImage(), len(rows))
	}
	seen := map[int]bool{}
	for _, r := range rows {
		if r < 0 || r >= seq || seen[r] {
			return 0, nil, fmt.Errorf("%w: row %d to fuse is repeated or outside the %d-token prompt", ErrIDInput, r, seq)
		}
		seen[r] = true
	}
	if e.Version == V1 {
		if len(idEmbeds) != 0 {
			return 0, nil, fmt.Errorf("%w: PhotoMaker v1 takes no face embeddings", ErrIDInput)
		}
		return n, nil, nil
	}
	fw := e.FaceEmbeddingWidth()
	if len(idEmbeds) != n {
		return 0, nil, fmt.Errorf("%w: PhotoMaker v2 needs one face embedding per photo: %d photos, %d embeddings", ErrIDInput, n, len(idEmbeds))
	}
	faces := make([]float32, 0, n*fw)
	for i, f := range idEmbeds {
		if len(f) != fw {
			return 0, nil, fmt.Errorf("%w: face embedding %d has %d values, want %d", ErrIDInput, i, len(f), fw)
		}
		faces = append(faces, f...)
	}
	return n, faces, nil
}
