package weights

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/gophotomaker/photomaker/weights/gguf"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// The GGUF files photomaker convert writes: tensors under ShortName of their
// canonical names with ggml-order shapes, and this metadata.
const (
	// GGUFArchitecture is the general.architecture of our files.
	GGUFArchitecture = "photomaker"
	// GGUFFormatVersion is the layout version written and the newest read.
	GGUFFormatVersion uint32 = 1

	KeyArchitecture  = "general.architecture"
	KeyFormatVersion = "photomaker.format_version" // uint32
	// KeyKinds lists what the file holds ([]string of KindToken values):
	// "sdxl", "photomaker-v1", "photomaker-v2".
	KeyKinds = "photomaker.kinds"
	// KeyConfigPrefix + component ("vae", "scheduler", ...) holds the JSON
	// config of a diffusers folder the file was converted from.
	KeyConfigPrefix = "photomaker.config."
	// KeyLoRAMerged (bool) says the adapter's LoRA is merged into the UNet.
	KeyLoRAMerged = "photomaker.lora_merged"
	// LoRAPrefix starts the canonical names of an adapter's unmerged LoRA
	// tensors in a GGUF (lora.<the adapter's LoRA name>).
	LoRAPrefix = "lora."
)

// KindToken is the name of a kind in GGUF metadata ("" for kinds that are
// not stored).
func KindToken(k Kind) string {
	switch k {
	case SDXLSingleFile, SDXLDiffusers, GGUF:
		return "sdxl"
	case PhotoMakerV1:
		return "photomaker-v1"
	case PhotoMakerV2:
		return "photomaker-v2"
	}
	return ""
}

// ggufDType maps a GGUF tensor type to a Tensor DType.
func ggufDType(t gguf.Type) (safetensors.DType, bool) {
	switch t {
	case gguf.TypeF32:
		return safetensors.F32, true
	case gguf.TypeF16:
		return safetensors.F16, true
	case gguf.TypeBF16:
		return safetensors.BF16, true
	case gguf.TypeF64:
		return safetensors.F64, true
	case gguf.TypeI64:
		return safetensors.I64, true
	case gguf.TypeI32:
		return safetensors.I32, true
	case gguf.TypeI16:
		return safetensors.I16, true
	case gguf.TypeI8:
		return safetensors.I8, true
	}
	if t.Valid() && t.BlockSize() > 1 {
		return QuantDType(t), true
	}
	return "", false
}

// openGGUF opens a GGUF file written by photomaker convert: an SDXL model,
// a PhotoMaker adapter, or both (Model.Adapter).
func openGGUF(path string) (_ *Model, err error) {
	gf, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			gf.Close()
		}
	}()
	if arch, _ := gf.String(KeyArchitecture); arch != GGUFArchitecture {
		what := "a GGUF file without general.architecture"
		if arch != "" {
			what = fmt.Sprintf("a GGUF file for architecture %q", arch)
		}
		return nil, &UnsupportedError{Path: path, What: what,
			Detail: "photomaker reads the GGUF files photomaker convert writes; convert the original checkpoint"}
	}
	ver, ok := gf.Uint32(KeyFormatVersion)
	if !ok {
		return nil, fmt.Errorf("%s: %w: no %s", path, gguf.ErrFormat, KeyFormatVersion)
	}
	if ver == 0 || ver > GGUFFormatVersion {
		return nil, fmt.Errorf("%s: photomaker GGUF format version %d is newer than this program reads (%d): update photomaker", path, ver, GGUFFormatVersion)
	}
	kinds, _ := gf.Strings(KeyKinds)
	hasSDXL := slices.Contains(kinds, "sdxl")
	pmKind := Unknown
	for _, k := range kinds {
		switch k {
		case "photomaker-v1":
			pmKind = PhotoMakerV1
		case "photomaker-v2":
			pmKind = PhotoMakerV2
		}
	}
	if !hasSDXL && pmKind == Unknown {
		return nil, fmt.Errorf("%s: %w: %s is %q, naming no model photomaker knows", path, gguf.ErrFormat, KeyKinds, kinds)
	}

	set := NewSet(gf)
	lora := NewSet()
	adapter := NewSet()
	for _, ti := range gf.Tensors() {
		name, ok := LongName(ti.Name)
		if !ok {
			return nil, fmt.Errorf("%s: %w: tensor %q is not a photomaker short name", path, gguf.ErrFormat, ti.Name)
		}
		if slices.Contains(ti.Shape, 0) { // we never write empty tensors: a damaged header
			return nil, fmt.Errorf("%s: %w: tensor %q has shape %v, with no values: the file is damaged; convert it again", path, gguf.ErrFormat, name, ti.Shape)
		}
		dtype, ok := ggufDType(ti.Type)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q has type %s, which photomaker does not read", path, name, ti.Type)
		}
		shape := make([]int64, len(ti.Shape))
		for i, d := range ti.Shape {
			shape[len(shape)-1-i] = d
		}
		short := ti.Name
		t := &Tensor{Name: name, DType: dtype, Shape: shape, File: path, Source: short,
			load: func() ([]byte, error) { return gf.Bytes(short) }}
		if rest, isLoRA := strings.CutPrefix(name, LoRAPrefix); isLoRA {
			t.Name = rest
			err = lora.Add(t)
		} else {
			err = set.Add(t)
			if err == nil && strings.HasPrefix(name, "pm.") {
				err = adapter.Add(t)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	configs := map[string]json.RawMessage{}
	for _, k := range gf.Keys() {
		if comp, ok := strings.CutPrefix(k, KeyConfigPrefix); ok {
			v, isStr := gf.String(k)
			if !isStr || !json.Valid([]byte(v)) {
				return nil, fmt.Errorf("%s: %w: %s is not a JSON string", path, gguf.ErrFormat, k)
			}
			configs[comp] = json.RawMessage(v)
		}
	}
	if lora.Len() == 0 {
		lora = nil
	}
	if pmKind != Unknown {
		if err := checkAdapter(path, set); err != nil {
			return nil, err
		}
	}
	if !hasSDXL {
		m := &Model{Path: path, Kind: pmKind, Tensors: set, LoRA: lora, Configs: configs}
		if lora == nil {
			m.Warnings = append(m.Warnings, "adapter has no lora_weights")
		}
		return m, nil
	}
	if err := checkComplete(path, set); err != nil {
		return nil, err
	}
	if lora != nil {
		return nil, fmt.Errorf("%s: %w: unmerged LoRA tensors beside an SDXL model", path, gguf.ErrFormat)
	}
	m := &Model{Path: path, Kind: GGUF, Tensors: set, Configs: configs}
	if pmKind != Unknown {
		m.Adapter = &Model{Path: path, Kind: pmKind, Tensors: adapter}
	}
	return m, nil
}
