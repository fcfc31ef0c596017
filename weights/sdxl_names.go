package weights

import (
	"strconv"
	"strings"
)

// Name mapping from the original (Stability "sgm") single-file SDXL layout to
// canonical names. The rules below are structural: they work for any number
// of transformer blocks per attention, resnets or VAE levels.

// layoutOp says how a canonical tensor's bytes derive from the original one.
type layoutOp int

const (
	opSame      layoutOp = iota // same bytes, same shape
	opSqueeze                   // [o,i,1,1] → [o,i], same bytes
	opTranspose                 // 2-D transpose
)

// target is one canonical tensor produced from an original tensor.
type target struct {
	name string
	op   layoutOp
	part int // ≥0: part of 3 equal chunks along dim 0 (fused q,k,v); -1: whole
}

// mapStatus classifies an original name.
type mapStatus int

const (
	mapped  mapStatus = iota
	ignored           // known and irrelevant (position_ids, EMA, schedule buffers, ...)
	unknown
)

// Prefixes of the original single-file layout.
const (
	origUNet = "model.diffusion_model."
	origVAE  = "first_stage_model."
	origTE1  = "conditioner.embedders.0.transformer."
	origTE2  = "conditioner.embedders.1.model."
)

// ldmBuffers are DDPM schedule buffers that LDM-era checkpoints carry.
var ldmBuffers = map[string]bool{
	"betas": true, "alphas_cumprod": true, "alphas_cumprod_prev": true,
	"sqrt_alphas_cumprod": true, "sqrt_one_minus_alphas_cumprod": true,
	"log_one_minus_alphas_cumprod": true, "sqrt_recip_alphas_cumprod": true,
	"sqrt_recipm1_alphas_cumprod": true, "posterior_variance": true,
	"posterior_log_variance_clipped": true, "posterior_mean_coef1": true,
	"posterior_mean_coef2": true, "lvlb_weights": true, "logvar": true,
	"model_ema.decay": true, "model_ema.num_updates": true,
}

// mapOriginal maps one tensor name of a single-file SDXL checkpoint.
// vaeLevels is the number of VAE decoder levels (4 for SDXL), needed because
// the original layout numbers decoder levels bottom-up and diffusers top-down.
func mapOriginal(name string, shape []int64, vaeLevels int) ([]target, mapStatus) {
	switch {
	case strings.HasSuffix(name, "position_ids") || strings.HasSuffix(name, "logit_scale"):
		return nil, ignored
	case ldmBuffers[name], strings.HasPrefix(name, "model_ema."), strings.HasPrefix(name, "denoiser."),
		strings.HasPrefix(name, "first_stage_model.loss."), strings.HasPrefix(name, "conditioner.embedders.1.model.attn_mask"):
		return nil, ignored
	case strings.HasPrefix(name, origUNet):
		if d, ok := unetFromOriginal(name[len(origUNet):]); ok {
			return []target{{name: "unet." + d, part: -1}}, mapped
		}
	case strings.HasPrefix(name, origVAE):
		if d, op, ok := vaeFromOriginal(name[len(origVAE):], vaeLevels); ok {
			if op == opSqueeze && !(len(shape) == 4 && shape[2] == 1 && shape[3] == 1) {
				op = opSame
			}
			return []target{{name: "vae." + d, op: op, part: -1}}, mapped
		}
	case strings.HasPrefix(name, origTE1):
		rest := name[len(origTE1):]
		rest = strings.TrimPrefix(rest, "text_model.")
		if hasAnyPrefix(rest, "embeddings.", "encoder.", "final_layer_norm.") {
			return []target{{name: "te1.text_model." + rest, part: -1}}, mapped
		}
	case strings.HasPrefix(name, origTE2):
		if ts, ok := te2FromOpenCLIP(name[len(origTE2):]); ok {
			return ts, mapped
		}
	}
	return nil, unknown
}

func hasAnyPrefix(s string, ps ...string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func atoi(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0 && strconv.Itoa(n) == s
}

func join(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// --- UNet -------------------------------------------------------------------

// resnet sub-module names: original ResBlock ↔ diffusers ResnetBlock2D.
var resnetOrig2Diff = map[string]string{
	"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
	"out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}

func resnetSub(p []string, table map[string]string) (string, bool) {
	for n := 2; n >= 1; n-- {
		if len(p) >= n {
			if d, ok := table[strings.Join(p[:n], ".")]; ok {
				return join(d, strings.Join(p[n:], ".")), true
			}
		}
	}
	return "", false
}

var resnetDiff2Orig = invert(resnetOrig2Diff)

func invert(m map[string]string) map[string]string {
	r := make(map[string]string, len(m))
	for k, v := range m {
		r[v] = k
	}
	return r
}

// unetFromOriginal maps a name below model.diffusion_model. to its diffusers name.
func unetFromOriginal(rest string) (string, bool) {
	p := strings.Split(rest, ".")
	if len(p) < 2 {
		return "", false
	}
	tail := func(i int) string { return strings.Join(p[i:], ".") }
	pair := map[string]string{"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
		"out.0": "conv_norm_out", "out.2": "conv_out"}
	if d, ok := pair[p[0]+"."+p[1]]; ok {
		return join(d, tail(2)), true
	}
	switch p[0] {
	case "label_emb":
		if len(p) >= 3 && p[1] == "0" && (p[2] == "0" || p[2] == "2") {
			return join(map[string]string{"0": "add_embedding.linear_1", "2": "add_embedding.linear_2"}[p[2]], tail(3)), true
		}
	case "input_blocks":
		n, ok1 := atoi(p[1])
		if len(p) < 3 || !ok1 {
			return "", false
		}
		if n == 0 {
			if p[2] == "0" {
				return join("conv_in", tail(3)), true
			}
			return "", false
		}
		i, j := (n-1)/3, (n-1)%3
		blk := "down_blocks." + strconv.Itoa(i)
		switch {
		case j == 2 && p[2] == "0" && len(p) >= 4 && p[3] == "op":
			return join(blk, "downsamplers.0.conv", tail(4)), true
		case j < 2 && p[2] == "0":
			if s, ok := resnetSub(p[3:], resnetOrig2Diff); ok {
				return join(blk, "resnets."+strconv.Itoa(j), s), true
			}
		case j < 2 && p[2] == "1":
			return join(blk, "attentions."+strconv.Itoa(j), tail(3)), true
		}
	case "middle_block":
		switch p[1] {
		case "0", "2":
			if s, ok := resnetSub(p[2:], resnetOrig2Diff); ok {
				return join("mid_block.resnets."+map[string]string{"0": "0", "2": "1"}[p[1]], s), true
			}
		case "1":
			return join("mid_block.attentions.0", tail(2)), true
		}
	case "output_blocks":
		if len(p) < 3 {
			return "", false
		}
		n, ok1 := atoi(p[1])
		m, ok2 := atoi(p[2])
		if !ok1 || !ok2 {
			return "", false
		}
		i, j := n/3, n%3
		blk := "up_blocks." + strconv.Itoa(i)
		switch {
		case m == 0:
			if s, ok := resnetSub(p[3:], resnetOrig2Diff); ok {
				return join(blk, "resnets."+strconv.Itoa(j), s), true
			}
		case (m == 1 || m == 2) && len(p) >= 4 && p[3] == "conv" && j == 2:
			return join(blk, "upsamplers.0.conv", tail(4)), true
		case m == 1:
			return join(blk, "attentions."+strconv.Itoa(j), tail(3)), true
		}
	}
	return "", false
}

// unetToOriginal is the inverse of unetFromOriginal. upHasAttn reports
// whether up block i has attentions (which moves its upsampler from index 1
// to index 2 of the original output block).
func unetToOriginal(d string, upHasAttn func(int) bool) (string, bool) {
	p := strings.Split(d, ".")
	tail := func(i int) string { return strings.Join(p[i:], ".") }
	simple := map[string]string{"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
		"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
	if len(p) < 2 {
		p = append(p, "")
	}
	if o, ok := simple[p[0]+"."+p[1]]; ok {
		return join(o, tail(2)), true
	}
	switch p[0] {
	case "conv_in":
		return join("input_blocks.0.0", tail(1)), true
	case "conv_norm_out":
		return join("out.0", tail(1)), true
	case "conv_out":
		return join("out.2", tail(1)), true
	case "down_blocks", "up_blocks":
		if len(p) < 4 {
			return "", false
		}
		i, ok := atoi(p[1])
		if !ok {
			return "", false
		}
		j, ok := atoi(p[3])
		if !ok {
			return "", false
		}
		down := p[0] == "down_blocks"
		n := 3*i + j
		blocks := "output_blocks."
		if down {
			n, blocks = 3*i+j+1, "input_blocks."
		}
		switch p[2] {
		case "resnets":
			if s, ok := resnetSub(p[4:], resnetDiff2Orig); ok {
				return join(blocks+strconv.Itoa(n)+".0", s), true
			}
		case "attentions":
			return join(blocks+strconv.Itoa(n)+".1", tail(4)), true
		case "downsamplers":
			if down && j == 0 && len(p) >= 5 && p[4] == "conv" {
				return join("input_blocks."+strconv.Itoa(3*i+3)+".0.op", tail(5)), true
			}
		case "upsamplers":
			if !down && j == 0 && len(p) >= 5 && p[4] == "conv" {
				m := "1"
				if upHasAttn != nil && upHasAttn(i) {
					m = "2"
				}
				return join("output_blocks."+strconv.Itoa(3*i+2)+"."+m+".conv", tail(5)), true
			}
		}
	case "mid_block":
		if len(p) < 3 {
			return "", false
		}
		switch p[1] + "." + p[2] {
		case "resnets.0", "resnets.1":
			if s, ok := resnetSub(p[3:], resnetDiff2Orig); ok {
				return join("middle_block."+map[string]string{"0": "0", "1": "2"}[p[2]], s), true
			}
		case "attentions.0":
			return join("middle_block.1", tail(3)), true
		}
	}
	return "", false
}

// --- VAE --------------------------------------------------------------------

var vaeAttnOrig2Diff = map[string]string{"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}

func vaeResnet(p []string) (string, bool) {
	if len(p) < 2 {
		return "", false
	}
	switch p[0] {
	case "nin_shortcut":
		return join("conv_shortcut", strings.Join(p[1:], ".")), true
	case "norm1", "norm2", "conv1", "conv2":
		return strings.Join(p, "."), true
	}
	return "", false
}

// vaeFromOriginal maps a name below first_stage_model. to its diffusers name.
func vaeFromOriginal(rest string, levels int) (string, layoutOp, bool) {
	p := strings.Split(rest, ".")
	if len(p) < 2 {
		return "", opSame, false
	}
	if p[0] == "quant_conv" || p[0] == "post_quant_conv" {
		return rest, opSame, true
	}
	if p[0] != "encoder" && p[0] != "decoder" || len(p) < 3 {
		return "", opSame, false
	}
	coder := p[0]
	switch p[1] {
	case "conv_in", "conv_out":
		return rest, opSame, true
	case "norm_out":
		return join(coder, "conv_norm_out", strings.Join(p[2:], ".")), opSame, true
	case "down", "up":
		i, ok := atoi(p[2])
		if len(p) < 5 || !ok || (p[1] == "down") != (coder == "encoder") {
			return "", opSame, false
		}
		blk := coder + ".down_blocks." + p[2]
		if p[1] == "up" {
			if i >= levels {
				return "", opSame, false
			}
			blk = coder + ".up_blocks." + strconv.Itoa(levels-1-i)
		}
		switch p[3] {
		case "block":
			if _, ok := atoi(p[4]); ok {
				if s, ok := vaeResnet(p[5:]); ok {
					return join(blk, "resnets."+p[4], s), opSame, true
				}
			}
		case "downsample", "upsample":
			if p[4] == "conv" && (p[3] == "downsample") == (coder == "encoder") {
				return join(blk, p[3]+"rs.0", strings.Join(p[4:], ".")), opSame, true
			}
		}
	case "mid":
		if len(p) < 4 {
			return "", opSame, false
		}
		switch p[2] {
		case "block_1", "block_2":
			if s, ok := vaeResnet(p[3:]); ok {
				return join(coder, "mid_block.resnets."+map[string]string{"block_1": "0", "block_2": "1"}[p[2]], s), opSame, true
			}
		case "attn_1":
			if d, ok := vaeAttnOrig2Diff[p[3]]; ok && len(p) > 4 {
				op := opSame
				if p[3] != "norm" && p[4] == "weight" {
					op = opSqueeze
				}
				return join(coder, "mid_block.attentions.0", d, strings.Join(p[4:], ".")), op, true
			}
		}
	}
	return "", opSame, false
}

// --- text encoder 2 (OpenCLIP bigG) ------------------------------------------

var openclipBlock = map[string]string{
	"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj",
}

// te2FromOpenCLIP maps a name below conditioner.embedders.1.model.
func te2FromOpenCLIP(rest string) ([]target, bool) {
	one := func(n string, op layoutOp) ([]target, bool) {
		return []target{{name: "te2." + n, op: op, part: -1}}, true
	}
	switch rest {
	case "token_embedding.weight":
		return one("text_model.embeddings.token_embedding.weight", opSame)
	case "positional_embedding":
		return one("text_model.embeddings.position_embedding.weight", opSame)
	case "ln_final.weight", "ln_final.bias":
		return one("text_model.final_layer_norm."+rest[len("ln_final."):], opSame)
	case "text_projection":
		return one("text_projection.weight", opTranspose)
	}
	const rb = "transformer.resblocks."
	if !strings.HasPrefix(rest, rb) {
		return nil, false
	}
	num, sub, ok := strings.Cut(rest[len(rb):], ".")
	if _, isNum := atoi(num); !ok || !isNum {
		return nil, false
	}
	layer := "text_model.encoder.layers." + num + "."
	switch sub {
	case "attn.in_proj_weight", "attn.in_proj_bias":
		kind := "weight"
		if strings.HasSuffix(sub, "bias") {
			kind = "bias"
		}
		var ts []target
		for k, qkv := range []string{"q_proj", "k_proj", "v_proj"} {
			ts = append(ts, target{name: "te2." + layer + "self_attn." + qkv + "." + kind, part: k})
		}
		return ts, true
	}
	for o, d := range openclipBlock {
		if strings.HasPrefix(sub, o+".") {
			return one(layer+d+sub[len(o):], opSame)
		}
	}
	return nil, false
}
