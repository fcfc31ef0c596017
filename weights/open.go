package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Model is an opened model path: an SDXL checkpoint (single file or diffusers
// folder) or a PhotoMaker adapter.
type Model struct {
	Path string
	Kind Kind
	// Tensors holds the canonical tensors: unet./vae./te1./te2. for SDXL,
	// pm. for a PhotoMaker adapter.
	Tensors *Set
	// LoRA holds a PhotoMaker adapter's LoRA under the file's own names with
	// "lora_weights." stripped (unet.<path>.processor.to_q_lora.down.weight, ...);
	// nil for other kinds. Merge it with MergeLoRA.
	LoRA *Set
	// Configs holds the JSON configs of a diffusers folder by component:
	// "model_index", "unet", "vae", "text_encoder", "text_encoder_2", "scheduler".
	Configs map[string]json.RawMessage
	// Warnings lists tensors that were not understood and were skipped.
	Warnings []string
	// Adapter is the PhotoMaker adapter stored in the same file as the SDXL
	// model (a GGUF written by photomaker convert), or nil. Its Tensors are
	// the pm.* tensors, which Tensors holds too; its LoRA is nil when the
	// LoRA was merged into the UNet at conversion.
	Adapter *Model
}

// Close closes every file behind the model.
func (m *Model) Close() error {
	var err error
	if m.Adapter != nil && m.Adapter != m {
		err = m.Adapter.Close()
	}
	if m.Tensors != nil {
		err = errors.Join(err, m.Tensors.Close())
	}
	if m.LoRA != nil {
		if e := m.LoRA.Close(); err == nil {
			err = e
		}
	}
	return err
}

// Config decodes the config of a diffusers component into v.
func (m *Model) Config(component string, v any) error {
	raw, ok := m.Configs[component]
	if !ok {
		return fmt.Errorf("%s: no %s config", m.Path, component)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %s config: %w", m.Path, component, err)
	}
	return nil
}

// Open detects what path is (single-file SDXL checkpoint in safetensors or
// PyTorch format, diffusers folder, PhotoMaker adapter) and opens it lazily.
// Unsupported model families get an *UnsupportedError naming what the file
// looks like.
func Open(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openDiffusers(path)
	}
	format, err := sniff(path)
	if err != nil {
		return nil, err
	}
	if format == fmtGGUF {
		return openGGUF(path)
	}
	f, err := openTensorFile(path)
	if err != nil {
		return nil, err
	}
	m, err := openFile(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func openFile(path string, f tensorFile) (*Model, error) {
	list := f.list()
	wrap := commonWrapper(list)
	ix := newNameIndex(list, wrap)
	kind, err := classify(path, ix)
	if err != nil {
		return nil, err
	}
	if kind.IsPhotoMaker() {
		return buildAdapter(path, kind, f, list, wrap)
	}
	return buildSingleFile(path, f, list, wrap, ix)
}

// vaeDecoderLevels counts first_stage_model.decoder.up.N levels (4 for SDXL).
func vaeDecoderLevels(ix *nameIndex) int {
	levels := 0
	const p = origVAE + "decoder.up."
	for _, n := range ix.names {
		if rest, ok := strings.CutPrefix(n, p); ok {
			num, _, _ := strings.Cut(rest, ".")
			if i, ok := atoi(num); ok && i+1 > levels {
				levels = i + 1
			}
		}
	}
	return levels
}

func buildSingleFile(path string, f tensorFile, list []rawTensor, wrap string, ix *nameIndex) (*Model, error) {
	set := NewSet(f)
	m := &Model{Path: path, Kind: SDXLSingleFile, Tensors: set, Configs: map[string]json.RawMessage{}}
	levels := vaeDecoderLevels(ix)
	var skipped []string
	for _, rt := range list {
		name := strings.TrimPrefix(rt.Name, wrap)
		ts, status := mapOriginal(name, rt.Shape, levels)
		switch status {
		case mapped:
			if err := addMapped(set, f, rt, ts); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		case unknown:
			skipped = append(skipped, rt.Name)
		}
	}
	m.Warnings = summarize("unrecognised tensors skipped", skipped)
	if err := checkComplete(path, set); err != nil {
		return nil, err
	}
	return m, nil
}

// requiredSDXL are tensors every SDXL checkpoint has.
var requiredSDXL = []string{
	"unet.conv_in.weight", "unet.add_embedding.linear_1.weight", "vae.decoder.conv_in.weight", "vae.post_quant_conv.weight",
	"te1.text_model.embeddings.token_embedding.weight", "te2.text_model.embeddings.token_embedding.weight", "te2.text_projection.weight",
}

func checkComplete(path string, set *Set) error {
	var missing []string
	for _, n := range requiredSDXL {
		if _, ok := set.Get(n); !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: incomplete SDXL model: missing %s", path, strings.Join(missing, ", "))
	}
	return nil
}

// summarize turns a list of names into at most 11 warning lines.
func summarize(what string, names []string) []string {
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	out := []string{fmt.Sprintf("%d %s", len(names), what)}
	for i, n := range names {
		if i == 10 {
			out = append(out, fmt.Sprintf("... and %d more", len(names)-10))
			break
		}
		out = append(out, "  "+n)
	}
	return out
}

// buildAdapter maps a PhotoMaker adapter: id_encoder.* → pm.*, lora_weights.* → Model.LoRA.
func buildAdapter(path string, kind Kind, f tensorFile, list []rawTensor, wrap string) (*Model, error) {
	set := NewSet(f)
	lora := NewSet()
	m := &Model{Path: path, Kind: kind, Tensors: set, LoRA: lora}
	var skipped []string
	for _, rt := range list {
		name := strings.TrimPrefix(rt.Name, wrap)
		var err error
		switch {
		case strings.HasPrefix(name, "id_encoder."):
			err = addMapped(set, f, rt, []target{{name: "pm." + strings.TrimPrefix(name, "id_encoder."), part: -1}})
		case strings.HasPrefix(name, "lora_weights."):
			err = addMapped(lora, f, rt, []target{{name: strings.TrimPrefix(name, "lora_weights."), part: -1}})
		default:
			skipped = append(skipped, rt.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	m.Warnings = summarize("tensors outside id_encoder/lora_weights skipped", skipped)
	if err := checkAdapter(path, set); err != nil {
		return nil, err
	}
	if lora.Len() == 0 {
		m.Warnings = append(m.Warnings, "adapter has no lora_weights")
	}
	return m, nil
}

// checkAdapter checks that set holds a PhotoMaker ID encoder (pm.*).
func checkAdapter(path string, set *Set) error {
	for _, n := range []string{"pm.vision_model.embeddings.patch_embedding.weight", "pm.visual_projection.weight", "pm.visual_projection_2.weight", "pm.fuse_module.mlp1.fc1.weight"} {
		if _, ok := set.Get(n); !ok {
			return fmt.Errorf("%s: incomplete PhotoMaker adapter: missing %s", path, strings.Replace(n, "pm.", "id_encoder.", 1))
		}
	}
	return nil
}

// OpenLoRA opens a LoRA file (kohya, diffusers/PEFT, or a PhotoMaker
// adapter's lora_weights) with the file's own tensor names, ready for
// MergeLoRA. The Set must be closed after merging is no longer needed (merged
// tensors read from it lazily).
func OpenLoRA(path string) (*Set, error) {
	f, err := openTensorFile(path)
	if err != nil {
		return nil, err
	}
	list := f.list()
	wrap := commonWrapper(list)
	set := NewSet(f)
	isPM := false
	for _, rt := range list {
		if strings.HasPrefix(rt.Name, wrap+"lora_weights.") {
			isPM = true
		}
	}
	for _, rt := range list {
		name := strings.TrimPrefix(rt.Name, wrap)
		if isPM {
			var ok bool
			if name, ok = strings.CutPrefix(name, "lora_weights."); !ok {
				continue
			}
		}
		if err := addMapped(set, f, rt, []target{{name: name, part: -1}}); err != nil {
			set.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if set.Len() == 0 {
		set.Close()
		return nil, errors.New(path + ": no LoRA tensors")
	}
	if isPM && set.Len() < len(list) { // the ID encoder's tensors were left out
		slog.Warn(path + " is a PhotoMaker adapter: only its LoRA is merged; pass it as the adapter (--photomaker) to generate from ID photos")
	}
	return set, nil
}
