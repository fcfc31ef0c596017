package convert

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/weights"
)

// Types lists the types a file can be converted to.
var Types = []ggml.Type{ggml.TypeF32, ggml.TypeF16, ggml.TypeBF16, ggml.TypeQ8_0, ggml.TypeQ5_0, ggml.TypeQ5_1,
	ggml.TypeQ4_0, ggml.TypeQ4_1, ggml.TypeQ4_K, ggml.TypeQ5_K, ggml.TypeQ6_K, ggml.TypeQ3_K, ggml.TypeQ2_K}

// ParseType accepts the names of Types, case-insensitively.
func ParseType(s string) (ggml.Type, error) {
	t, err := ggml.ParseType(strings.TrimSpace(s))
	if err == nil && isOutputType(t) {
		return t, nil
	}
	names := make([]string, len(Types))
	for i, t := range Types {
		names[i] = t.String()
	}
	return 0, fmt.Errorf("unknown type %q (want one of %s)", s, strings.Join(names, ", "))
}

func isOutputType(t ggml.Type) bool {
	for _, u := range Types {
		if u == t {
			return true
		}
	}
	return false
}

// Rule stores the tensors whose canonical names match Pattern in Type.
type Rule struct {
	Pattern *regexp.Regexp
	Type    ggml.Type
}

func (r Rule) String() string { return r.Pattern.String() + "=" + r.Type.String() }

// ErrRules is wrapped by every rule-parsing error.
var ErrRules = errors.New("bad --rules")

// ParseRules parses "REGEX=TYPE,REGEX=TYPE,...". A rule's type follows its
// last '='; a comma that does not end a rule (one inside a regex such as
// `{1,3}`) stays part of the regex. Patterns are Go regular expressions
// matched anywhere in the canonical tensor name (anchor with ^ and $).
func ParseRules(s string) ([]Rule, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var rules []Rule
	pending := ""
	for _, piece := range strings.Split(s, ",") {
		item := piece
		if pending == "" && strings.TrimSpace(piece) == "" {
			continue // a stray or trailing comma
		}
		if pending != "" {
			item = pending + "," + piece
		}
		i := strings.LastIndexByte(item, '=')
		if i < 0 {
			pending = item
			continue
		}
		typ, err := ParseType(item[i+1:])
		if err != nil {
			if _, isType := ggml.ParseType(strings.TrimSpace(item[i+1:])); isType == nil {
				return nil, fmt.Errorf("%w: rule %q: %v", ErrRules, item, err)
			}
			pending = item // the '=' belongs to the regex; the rule goes on after the comma
			continue
		}
		pat := strings.TrimSpace(item[:i])
		if pat == "" {
			return nil, fmt.Errorf("%w: rule %q has an empty pattern", ErrRules, item)
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, fmt.Errorf("%w: rule %q: %v", ErrRules, item, err)
		}
		rules = append(rules, Rule{Pattern: re, Type: typ})
		pending = ""
	}
	if pending != "" {
		if i := strings.LastIndexByte(pending, '='); i >= 0 {
			_, err := ParseType(pending[i+1:])
			return nil, fmt.Errorf("%w: rule %q: %v", ErrRules, pending, err)
		}
		return nil, fmt.Errorf("%w: %q is not REGEX=TYPE", ErrRules, pending)
	}
	return rules, nil
}

// DefaultPolicy describes the built-in rules, in the order they apply
// (after the user's rules); it is recorded in every file's metadata.
var DefaultPolicy = []string{
	"1-D tensors, biases and norms: f32",
	"embeddings (token, position, class, patch, time, add): the chosen type if it is f32/f16/bf16, else f16",
	"vae.*: f32 if the chosen type is f32, else f16",
	"integer tensors: unchanged",
	"rows (ne0) that are not whole blocks: k-quants fall back to a 32-block type (q2_K/q3_K→q4_0, q4_K/q5_K/q6_K→q8_0), other types to f16",
	"everything else: the chosen type",
}

// choice is the type picked for one tensor and, when the type asked for
// could not be used (a k-quant for rows that are not whole 256-blocks, a
// user rule's type that does not fit), why.
type choice struct {
	typ      ggml.Type
	fallback string // "" or "q4_K→q8_0: row of 320 is not a multiple of 256"
}

// choose picks the stored type of a tensor for chosen type typ.
func choose(name string, t *weights.Tensor, typ ggml.Type, rules []Rule) choice {
	want, user := typ, false
	for _, r := range rules {
		if r.Pattern.MatchString(name) {
			want, user = r.Type, true
			break
		}
	}
	if user && want.Quantized() && (len(t.Shape) < 2 || strings.HasSuffix(name, ".bias")) {
		return choice{typ: ggml.TypeF32, fallback: fmt.Sprintf("%s→f32: 1-D tensors and biases are not quantized", want)}
	}
	if !user {
		switch {
		case len(t.Shape) < 2 || strings.HasSuffix(name, ".bias") || isNorm(name):
			return choice{typ: ggml.TypeF32}
		case strings.Contains(name, "embedding"):
			want = floatOr(typ, ggml.TypeF16)
		case strings.HasPrefix(name, "vae."):
			want = ggml.TypeF16
			if typ == ggml.TypeF32 {
				want = ggml.TypeF32
			}
		}
	}
	c := fitRow(want, rowLen(t))
	if !user && c.typ == ggml.TypeF16 {
		c.fallback = "" // rows that fit no block (3×3 and 1×1 convs) are kept f16 by design
	}
	return c
}

// isNorm matches the normalization layers of SDXL, CLIP and PhotoMaker
// (norm1, group_norm, layer_norm1, conv_norm_out, final_layer_norm,
// pre_layrnorm, post_layernorm, layernorm, token_norm, ...).
func isNorm(name string) bool {
	return strings.Contains(name, "norm")
}

func floatOr(t, other ggml.Type) ggml.Type {
	if t.Quantized() {
		return other
	}
	return t
}

// rowLen is ne0, the contiguous dimension (PyTorch's last).
func rowLen(t *weights.Tensor) int64 {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// fitRow returns want, or a type whose blocks fit a row of n elements.
func fitRow(want ggml.Type, n int64) choice {
	got := want.FitRow(n)
	if got == want {
		return choice{typ: want}
	}
	return choice{typ: got, fallback: fmt.Sprintf("%s→%s: row of %d is not a multiple of %d", want, got, n, want.BlockSize())}
}
