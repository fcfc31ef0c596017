package weights

import (
	"fmt"
	"sort"
	"strings"
)

// Kind is what a path holds.
type Kind int

// Kinds of model files.
const (
	Unknown        Kind = iota
	SDXLSingleFile      // original-layout single-file SDXL checkpoint
	SDXLDiffusers       // diffusers folder
	PhotoMakerV1        // PhotoMaker v1 adapter (id_encoder + lora_weights)
	PhotoMakerV2        // PhotoMaker v2 adapter (adds qformer_perceiver)
	GGUF                // SDXL checkpoint in a GGUF file written by photomaker convert (Model.Adapter holds an embedded PhotoMaker adapter)
)

func (k Kind) String() string {
	switch k {
	case SDXLSingleFile:
		return "SDXL single-file checkpoint"
	case SDXLDiffusers:
		return "SDXL diffusers folder"
	case PhotoMakerV1:
		return "PhotoMaker v1 adapter"
	case PhotoMakerV2:
		return "PhotoMaker v2 adapter"
	case GGUF:
		return "SDXL GGUF"
	}
	return "unknown"
}

// IsPhotoMaker reports whether k is a PhotoMaker adapter.
func (k Kind) IsPhotoMaker() bool { return k == PhotoMakerV1 || k == PhotoMakerV2 }

// UnsupportedError says what an unsupported file looks like.
type UnsupportedError struct {
	Path string
	// What is a short description such as "an SD1.5 checkpoint".
	What string
	// Detail gives the evidence.
	Detail string
	// NotCheckpoint is set for component files (a VAE, a LoRA) given where a
	// full model was expected.
	NotCheckpoint bool
}

func (e *UnsupportedError) Error() string {
	msg := fmt.Sprintf("%s: not supported: this looks like %s", e.Path, e.What)
	if e.NotCheckpoint {
		msg = fmt.Sprintf("%s: this is %s, not a checkpoint", e.Path, e.What)
	}
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// nameIndex answers prefix and shape questions about a file's tensor list.
type nameIndex struct {
	names  []string // sorted
	shapes map[string][]int64
}

func newNameIndex(ts []rawTensor, strip string) *nameIndex {
	ix := &nameIndex{shapes: make(map[string][]int64, len(ts))}
	for _, t := range ts {
		n := strings.TrimPrefix(t.Name, strip)
		ix.names = append(ix.names, n)
		ix.shapes[n] = t.Shape
	}
	sort.Strings(ix.names)
	return ix
}

func (ix *nameIndex) hasPrefix(p string) bool {
	i := sort.SearchStrings(ix.names, p)
	return i < len(ix.names) && strings.HasPrefix(ix.names[i], p)
}

func (ix *nameIndex) contains(sub string) bool {
	for _, n := range ix.names {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}

func (ix *nameIndex) all(pred func(string) bool) bool {
	for _, n := range ix.names {
		if !pred(n) {
			return false
		}
	}
	return len(ix.names) > 0
}

// dim returns shape[i] of name, or -1.
func (ix *nameIndex) dim(name string, i int) int64 {
	s, ok := ix.shapes[name]
	if !ok || i >= len(s) {
		return -1
	}
	return s[i]
}

// contextDim finds the UNet cross-attention context width (attn2.to_k in features) under prefix.
func (ix *nameIndex) contextDim(prefix string) int64 {
	for _, n := range ix.names {
		if strings.HasPrefix(n, prefix) && strings.HasSuffix(n, "attn2.to_k.weight") {
			return ix.dim(n, 1)
		}
	}
	return -1
}

// commonWrapper returns a prefix such as "state_dict." that wraps every name
// of a training checkpoint, or "".
func commonWrapper(ts []rawTensor) string {
	for _, w := range []string{"state_dict.", "module.", "model_state_dict."} {
		ok := len(ts) > 0
		for _, t := range ts {
			if !strings.HasPrefix(t.Name, w) {
				ok = false
				break
			}
		}
		if ok {
			return w
		}
	}
	return ""
}

func isLoRAName(n string) bool {
	return strings.HasPrefix(n, "lora_unet_") || strings.HasPrefix(n, "lora_te") ||
		strings.Contains(n, ".lora_down.") || strings.Contains(n, ".lora_up.") ||
		strings.Contains(n, ".lora_A.") || strings.Contains(n, ".lora_B.") ||
		strings.Contains(n, ".lora.down.") || strings.Contains(n, "_lora.down.")
}

// classify decides what a single file holds from its tensor names and shapes.
func classify(path string, ix *nameIndex) (Kind, error) {
	unsupported := func(what, detail string) (Kind, error) {
		return Unknown, &UnsupportedError{Path: path, What: what, Detail: detail}
	}
	notCkpt := func(what, detail string) (Kind, error) {
		return Unknown, &UnsupportedError{Path: path, What: what, Detail: detail, NotCheckpoint: true}
	}
	switch {
	case ix.hasPrefix("id_encoder."):
		if ix.hasPrefix("id_encoder.qformer_perceiver.") {
			return PhotoMakerV2, nil
		}
		return PhotoMakerV1, nil
	case ix.hasPrefix("lora_weights."):
		return notCkpt("a PhotoMaker LoRA without its ID encoder", "only lora_weights.* tensors")
	case ix.hasPrefix(origUNet+"joint_blocks.") || ix.hasPrefix("joint_blocks."):
		return unsupported("a Stable Diffusion 3 checkpoint", "MMDiT joint_blocks")
	case ix.hasPrefix(origUNet+"double_blocks.") || ix.hasPrefix("double_blocks."):
		return unsupported("a Flux checkpoint", "double_blocks / single_blocks transformer")
	case ix.hasPrefix(origUNet):
		return classifyLDM(path, ix)
	case ix.all(isLoRAName):
		return notCkpt("a LoRA", "apply it to an SDXL model: generate --lora FILE[:SCALE]")
	case ix.all(func(n string) bool { return strings.HasPrefix(n, origVAE) }):
		return notCkpt("a VAE", "only first_stage_model.* tensors")
	case ix.hasPrefix("decoder.up.") || ix.hasPrefix("decoder.up_blocks."):
		if ix.all(func(n string) bool {
			return hasAnyPrefix(n, "encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
		}) {
			return notCkpt("a VAE", "only encoder/decoder tensors")
		}
	case ix.hasPrefix("conv_in.") && ix.hasPrefix("down_blocks."):
		return notCkpt("a diffusers UNet weights file", "open the diffusers folder that holds it")
	case ix.hasPrefix("text_model.") || ix.hasPrefix("embeddings.token_embedding."):
		return notCkpt("a text encoder", "open the diffusers folder that holds it")
	}
	if ix.contains("lora") {
		return notCkpt("a LoRA", "apply it to an SDXL model: generate --lora FILE[:SCALE]")
	}
	first := ix.names
	if len(first) > 5 {
		first = first[:5]
	}
	return Unknown, fmt.Errorf("%s: unrecognised model: no SDXL or PhotoMaker tensors among %d (first: %s)", path, len(ix.names), strings.Join(first, ", "))
}

func classifyLDM(path string, ix *nameIndex) (Kind, error) {
	ctx := ix.contextDim(origUNet)
	ctxs := fmt.Sprintf("UNet cross-attention context %d", ctx)
	un := func(what, detail string) (Kind, error) {
		return Unknown, &UnsupportedError{Path: path, What: what, Detail: detail}
	}
	switch {
	case ix.hasPrefix("cond_stage_model.transformer.") || (!ix.hasPrefix("conditioner.") && ctx == 768):
		return un("an SD1.x checkpoint", ctxs+", single CLIP-L text encoder cond_stage_model.transformer")
	case ix.hasPrefix("cond_stage_model.model.") || (!ix.hasPrefix("conditioner.") && ctx == 1024):
		return un("an SD2.x checkpoint", ctxs+", single OpenCLIP-H text encoder")
	case ix.hasPrefix("conditioner.embedders.0.model.") && !ix.hasPrefix("conditioner.embedders.1."):
		return un("an SDXL refiner", "one OpenCLIP text encoder, no CLIP-L")
	case !ix.hasPrefix("conditioner.embedders."):
		return un("a UNet-only checkpoint", ctxs+", no text encoders or VAE")
	}
	if in := ix.dim(origUNet+"input_blocks.0.0.weight", 1); in != 4 {
		if in < 0 {
			return Unknown, fmt.Errorf("%s: incomplete SDXL checkpoint: the UNet's first convolution (%sinput_blocks.0.0.weight) is missing or misshapen; download the file again", path, origUNet)
		}
		if in == 9 {
			return un("an SDXL inpainting checkpoint", "UNet conv_in has 9 input channels")
		}
		return un(fmt.Sprintf("an SDXL variant with %d UNet input channels", in), "conv_in expects 4 latent channels")
	}
	if !ix.hasPrefix(origUNet + "label_emb.") {
		return un("an SD-family checkpoint without SDXL's label_emb", ctxs)
	}
	return SDXLSingleFile, nil
}
