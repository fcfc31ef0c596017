package weights

import "strings"

// GGMLMaxName is ggml's GGML_MAX_NAME: a tensor name must be shorter.
const GGMLMaxName = 64

// shortWords abbreviates whole dot-separated components of canonical names.
// Every abbreviation starts with an upper-case letter, which canonical names
// never use, so the mapping is reversible; a component of the input that
// starts with an upper-case letter or '~' is escaped with a leading '~'.
// Never change or reuse an entry: GGUF files store short names.
var shortWords = [][2]string{
	{"down_blocks", "D"}, {"up_blocks", "U"}, {"mid_block", "M"},
	{"attentions", "A"}, {"transformer_blocks", "T"}, {"resnets", "R"},
	{"downsamplers", "DS"}, {"upsamplers", "US"},
	{"attn1", "A1"}, {"attn2", "A2"}, {"to_out", "O"},
	{"time_emb_proj", "TE"}, {"conv_shortcut", "CS"},
	{"proj_in", "PI"}, {"proj_out", "PO"},
	{"time_embedding", "TM"}, {"add_embedding", "AE"},
	{"conv_norm_out", "CNO"}, {"group_norm", "GN"},
	{"encoder", "E"}, {"decoder", "DE"},
	{"text_model", "X"}, {"layers", "L"}, {"self_attn", "S"},
	{"embeddings", "EM"}, {"token_embedding", "TOK"}, {"position_embedding", "POS"},
	{"final_layer_norm", "FLN"}, {"layer_norm1", "LN1"}, {"layer_norm2", "LN2"},
	{"text_projection", "TP"},
	{"vision_model", "V"}, {"patch_embedding", "PE"}, {"class_embedding", "CE"},
	{"pre_layrnorm", "PRE"}, {"post_layernorm", "POST"},
	{"visual_projection", "VP"}, {"visual_projection_2", "VP2"},
	{"fuse_module", "F"}, {"layernorm", "LNM"},
	{"qformer_perceiver", "Q"}, {"perceiver_resampler", "P"},
	{"token_proj", "TKP"}, {"token_norm", "TKN"},
	{"processor", "PR"},
	{"to_q_lora", "QL"}, {"to_k_lora", "KL"}, {"to_v_lora", "VL"}, {"to_out_lora", "OL"},
	{"weight", "W"}, {"bias", "B"},
}

var (
	toShort = map[string]string{}
	toLong  = map[string]string{}
)

func init() {
	for _, w := range shortWords {
		if _, dup := toShort[w[0]]; dup {
			panic("weights: duplicate short word " + w[0])
		}
		if _, dup := toLong[w[1]]; dup {
			panic("weights: duplicate abbreviation " + w[1])
		}
		if w[1] == "" || w[1][0] < 'A' || w[1][0] > 'Z' {
			panic("weights: abbreviation must start upper-case: " + w[1])
		}
		toShort[w[0]], toLong[w[1]] = w[1], w[0]
	}
}

func needsEscape(c string) bool {
	return c != "" && (c[0] == '~' || (c[0] >= 'A' && c[0] <= 'Z'))
}

// ShortName abbreviates a canonical name for ggml, which limits names to
// GGMLMaxName-1 bytes. It is deterministic and invertible by LongName for
// every string; for every tensor name of the supported models (SDXL, its
// LoRAs, PhotoMaker v1/v2) the result is shorter than GGMLMaxName.
// Example: unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_out.0.weight
// → unet.U.0.A.2.T.9.A2.O.0.W
func ShortName(canonical string) string {
	parts := strings.Split(canonical, ".")
	for i, p := range parts {
		if s, ok := toShort[p]; ok {
			parts[i] = s
		} else if needsEscape(p) {
			parts[i] = "~" + p
		}
	}
	return strings.Join(parts, ".")
}

// LongName inverts ShortName. It reports false for a string ShortName cannot
// produce (an unknown abbreviation).
func LongName(short string) (string, bool) {
	parts := strings.Split(short, ".")
	for i, p := range parts {
		switch {
		case p == "":
		case p[0] == '~':
			if !needsEscape(p[1:]) {
				return "", false
			}
			parts[i] = p[1:]
		case p[0] >= 'A' && p[0] <= 'Z':
			l, ok := toLong[p]
			if !ok {
				return "", false
			}
			parts[i] = l
		}
	}
	return strings.Join(parts, "."), true
}
