// Package clip implements the CLIP transformers SDXL and PhotoMaker use: the
// text encoders (HF CLIPTextModel / CLIPTextModelWithProjection, as SDXL's
// CLIP-L and OpenCLIP bigG) and the vision tower of PhotoMaker's ID encoder
// (HF CLIPVisionModel plus visual_projection and visual_projection_2).
//
// Sizes (layers, widths, vocabulary, positions, patch size) are read from
// the weights. What the weights cannot tell — the activation, the head
// width, the LayerNorm epsilon and the pooling rule — comes from a config
// whose zero value picks the real SDXL/PhotoMaker conventions.
//
// Shapes in comments are ggml order (fastest first): a batch of B
// sequences of N tokens of width C is [C, N, B]; its memory layout equals
// PyTorch's [B, N, C], and the float slices this package returns use it.
package clip

import (
	"fmt"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// Activation is the MLP nonlinearity of an encoder layer.
type Activation int

const (
	// ActivationAuto picks by component: exact GELU for SDXL's second text
	// encoder (prefix "te2."), quick GELU otherwise (CLIP-L, the ViT-L/14
	// vision tower).
	ActivationAuto Activation = iota
	// QuickGELU is x·sigmoid(1.702x), OpenAI CLIP's activation.
	QuickGELU
	// GELU is exact (erf) GELU, OpenCLIP bigG's activation.
	GELU
)

func (a Activation) String() string {
	switch a {
	case QuickGELU:
		return "quick_gelu"
	case GELU:
		return "gelu"
	}
	return "auto"
}

func (a Activation) apply(c *ggml.Context, x *ggml.Tensor) *ggml.Tensor {
	if a == GELU {
		return c.GELUErf(x)
	}
	// x·sigmoid(1.702x) from exact ops: ggml's CPU gelu_quick reads an fp16
	// table (errors ~1e-3 after a few layers), its sigmoid is exact.
	return c.Mul(x, c.Sigmoid(c.Scale(x, 1.702)))
}

// DefaultHeadDim is the attention head width of every CLIP we load: CLIP-L
// (768/12), bigG (1280/20), ViT-L/14 (1024/16) and the tiny test models.
const DefaultHeadDim = 64

// DefaultEps is the LayerNorm epsilon of CLIP.
const DefaultEps = 1e-5

// TextConfig holds the text-encoder settings that cannot be read from the
// weights. The zero value is right for SDXL's encoders.
type TextConfig struct {
	// Activation of the MLPs; ActivationAuto chooses by prefix.
	Activation Activation
	// HeadDim is the width of one attention head (0: 64).
	HeadDim int
	// Eps is the LayerNorm epsilon (0: 1e-5).
	Eps float32
	// PoolToken selects the pooled position. 0 is transformers' legacy rule
	// that SDXL's configs trigger (eos_token_id 2): the position of the
	// largest id, i.e. the first <|endoftext|> of a normal prompt. A
	// positive id pools at that id's first occurrence (position 0 when it
	// is absent), as transformers does for configs with the real EOS id.
	PoolToken int
}

// VisionConfig holds the vision-tower settings that cannot be read from the
// weights. The zero value is right for PhotoMaker's ViT-L/14.
type VisionConfig struct {
	// Activation of the MLPs; ActivationAuto means quick GELU.
	Activation Activation
	// HeadDim is the width of one attention head (0: 64).
	HeadDim int
	// Eps is the LayerNorm epsilon (0: 1e-5).
	Eps float32
}

func (cfg TextConfig) resolve(prefix string) TextConfig {
	if cfg.Activation == ActivationAuto {
		cfg.Activation = QuickGELU
		if strings.HasPrefix(prefix, "te2.") {
			cfg.Activation = GELU
		}
	}
	if cfg.HeadDim <= 0 {
		cfg.HeadDim = DefaultHeadDim
	}
	if cfg.Eps <= 0 {
		cfg.Eps = DefaultEps
	}
	return cfg
}

func (cfg VisionConfig) resolve() VisionConfig {
	if cfg.Activation == ActivationAuto {
		cfg.Activation = QuickGELU
	}
	if cfg.HeadDim <= 0 {
		cfg.HeadDim = DefaultHeadDim
	}
	if cfg.Eps <= 0 {
		cfg.Eps = DefaultEps
	}
	return cfg
}

// normPrefix makes "te1" and "te1." the same prefix.
func normPrefix(p string) string {
	if p != "" && !strings.HasSuffix(p, ".") {
		return p + "."
	}
	return p
}

// shapeChecker collects the first shape mismatch among a model's weights.
type shapeChecker struct {
	prefix string
	err    error
}

// want checks that t (ggml order) has exactly the dimensions ne (ggml
// order, the rest 1). A nil t passes when optional.
func (s *shapeChecker) want(name string, t *ggml.Tensor, optional bool, ne ...int64) {
	if s.err != nil {
		return
	}
	if t == nil {
		if !optional {
			s.err = fmt.Errorf("clip: %s%s: missing", s.prefix, name)
		}
		return
	}
	got := t.Shape()
	exp := [4]int64{1, 1, 1, 1}
	copy(exp[:], ne)
	if got != exp {
		s.err = fmt.Errorf("clip: %s%s: shape %v (ggml order), want %v", s.prefix, name, got, exp)
	}
}

func (s *shapeChecker) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("clip: "+s.prefix+format, args...)
	}
}
