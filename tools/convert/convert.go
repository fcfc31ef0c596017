// Package convert writes model files as photomaker GGUF files: an SDXL
// checkpoint (any format weights.Open reads), optionally with a PhotoMaker
// adapter whose LoRA is merged into the UNet and whose ID encoder is stored
// alongside, or an adapter alone, with the big matrices converted or
// quantized to one chosen type and the tensors that must stay precise kept
// in float (see DefaultPolicy). It streams tensor by tensor, so memory does
// not grow with the model, and the output appears only when complete.
package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/mmap"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/gguf"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Options says what to convert.
type Options struct {
	// Src is an SDXL checkpoint (single file, diffusers folder, GGUF) or a
	// PhotoMaker adapter.
	Src string
	// PhotoMaker is an adapter to merge into an SDXL Src; empty for none.
	PhotoMaker string
	// Type is the type of the big matrices (one of Types).
	Type ggml.Type
	// Rules override the default policy; the first matching rule wins.
	Rules []Rule
	// Out is the GGUF file to write.
	Out string
	// Overwrite allows replacing an existing Out.
	Overwrite bool
	// LoRAScale scales the adapter's LoRA when merging (0 means 1).
	LoRAScale float32
	// Threads quantize in parallel (0: GOMAXPROCS).
	Threads int
	// Progress, if set, is called after each tensor is written.
	Progress func(done, total int, name string)
	// Check, if set, vets each model opened (the source, then a separate
	// adapter) before anything is written: photomaker.CheckWeights, so
	// that a file missing a weight is not passed on to a new one.
	Check func(*weights.Model) error
}

// TypeStats counts the tensors stored in one type.
type TypeStats struct {
	Tensors  int   `json:"tensors"`
	Elements int64 `json:"elements"`
	Bytes    int64 `json:"bytes"`
}

// Report says what was written (convert --json prints it, in the
// snake_case of the CLI's other JSON).
type Report struct {
	Out string `json:"out"`
	// Kinds are the models in the file ("sdxl", "photomaker-v1", ...).
	Kinds []string `json:"kinds"`
	// Tensors and Bytes count the tensors and their data bytes.
	Tensors int   `json:"tensors"`
	Bytes   int64 `json:"bytes"`
	// SourceBytes is the size of the same tensors in the input.
	SourceBytes int64 `json:"source_bytes"`
	// ByType has the statistics per stored type ("f16", "q4_K", ...).
	ByType map[string]TypeStats `json:"by_type"`
	// Fallbacks lists tensors stored in another type than asked, and why.
	Fallbacks []string `json:"fallbacks"`
	// LoRAMerged is the number of UNet weights the adapter's LoRA patched.
	LoRAMerged int `json:"lora_merged"`
	// Warnings are the inputs' warnings (skipped tensors, ...).
	Warnings []string `json:"warnings"`
}

// ErrExists is returned when Out exists and Overwrite is not set.
var ErrExists = errors.New("output file exists")

// entry is one tensor of the output.
type entry struct {
	name  string // canonical
	src   *weights.Tensor
	typ   gguf.Type
	raw   bool // copy src's bytes unchanged
	shape []int64
}

// Convert writes the GGUF file. On any error or cancellation no output file
// is left behind.
func Convert(ctx context.Context, o Options) (_ *Report, err error) {
	if o.Src == "" || o.Out == "" {
		return nil, errors.New("convert: a source and an output path are needed")
	}
	if !isOutputType(o.Type) {
		return nil, fmt.Errorf("convert: cannot convert to %s", o.Type)
	}
	if err := checkOut(o); err != nil {
		return nil, err
	}
	m, err := weights.Open(o.Src)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	rep := &Report{Out: o.Out, ByType: map[string]TypeStats{}}
	rep.Warnings = append(rep.Warnings, m.Warnings...)

	var sdxl, adapter *weights.Model
	extra := false // adapter tensors live outside m.Tensors
	switch {
	case m.Kind.IsPhotoMaker():
		if o.PhotoMaker != "" {
			return nil, fmt.Errorf("%s is a PhotoMaker adapter: convert it alone, or give an SDXL checkpoint as the source", o.Src)
		}
		adapter = m
	case m.Adapter != nil:
		if o.PhotoMaker != "" {
			return nil, fmt.Errorf("%s already holds a PhotoMaker adapter (%s)", o.Src, m.Adapter.Kind)
		}
		sdxl, adapter = m, m.Adapter
	default:
		sdxl = m
		if o.PhotoMaker != "" {
			a, err := weights.Open(o.PhotoMaker)
			if err != nil {
				return nil, err
			}
			defer a.Close()
			if !a.Kind.IsPhotoMaker() {
				return nil, fmt.Errorf("%s is not a PhotoMaker adapter (it looks like %s)", o.PhotoMaker, a.Kind)
			}
			if a.Adapter != nil || a.Kind == weights.GGUF {
				return nil, fmt.Errorf("%s holds an SDXL model, not just an adapter", o.PhotoMaker)
			}
			rep.Warnings = append(rep.Warnings, a.Warnings...)
			adapter, extra = a, true
		}
	}
	opened := []*weights.Model{m}
	if extra {
		opened = append(opened, adapter)
	}
	for _, c := range opened {
		if o.Check == nil {
			break
		}
		if err := o.Check(c); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	scale := o.LoRAScale
	if scale == 0 {
		scale = 1
	}
	merged := false
	if sdxl != nil && adapter != nil && adapter.LoRA != nil && adapter.LoRA.Len() > 0 {
		n, err := weights.MergeLoRA(sdxl.Tensors, adapter.LoRA, scale)
		if err != nil {
			return nil, fmt.Errorf("%s: merging the PhotoMaker LoRA into %s: %w", adapter.Path, o.Src, err)
		}
		rep.LoRAMerged, merged = n, true
	}

	// The plan: every tensor with its stored type.
	var names []string
	var plan []entry
	add := func(name string, t *weights.Tensor) error {
		e, fb, err := planTensor(name, t, o)
		if err != nil {
			return err
		}
		if fb != "" {
			rep.Fallbacks = append(rep.Fallbacks, name+": "+fb)
		}
		plan = append(plan, e)
		names = append(names, name)
		return nil
	}
	if sdxl != nil {
		rep.Kinds = append(rep.Kinds, weights.KindToken(sdxl.Kind))
		for _, n := range sdxl.Tensors.Names() {
			t, _ := sdxl.Tensors.Get(n)
			if err := add(n, t); err != nil {
				return nil, err
			}
		}
	}
	if adapter != nil {
		rep.Kinds = append(rep.Kinds, weights.KindToken(adapter.Kind))
		if sdxl == nil || extra {
			for _, n := range adapter.Tensors.Names() {
				t, _ := adapter.Tensors.Get(n)
				if err := add(n, t); err != nil {
					return nil, err
				}
			}
		}
		if sdxl == nil && adapter.LoRA != nil {
			for _, n := range adapter.LoRA.Names() {
				t, _ := adapter.LoRA.Get(n)
				if err := add(weights.LoRAPrefix+n, t); err != nil {
					return nil, err
				}
			}
		}
	}

	for _, r := range o.Rules { // a typo in a pattern would silently change nothing
		if !slices.ContainsFunc(names, r.Pattern.MatchString) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("rule %s matched no tensor (photomaker info --tensors lists the names it matches against)", r))
		}
	}

	w, err := gguf.Create(o.Out)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	for _, e := range plan {
		n := e.typ.RowBytes(e.shape[0]) * (e.src.Elements() / max(e.shape[0], 1))
		st := rep.ByType[e.typ.String()]
		st.Tensors++
		st.Elements += e.src.Elements()
		st.Bytes += n
		rep.ByType[e.typ.String()] = st
		rep.Bytes += n
		rep.SourceBytes += max(e.src.NBytes(), 0)
	}
	rep.Tensors = len(plan)
	if err := setMetadata(w, o, m, rep, merged, scale); err != nil {
		return nil, err
	}
	for i, e := range plan {
		if err := w.AddTensor(weights.ShortName(names[i]), e.typ, e.shape); err != nil {
			return nil, fmt.Errorf("%s: %w", names[i], err)
		}
	}

	release := mmap.NewReleaser(o.Src, o.PhotoMaker)
	for i, e := range plan {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := encode(e, o.Threads)
		if err != nil {
			return nil, fmt.Errorf("convert %s: %w", names[i], err)
		}
		if err := w.WriteTensorData(weights.ShortName(names[i]), data); err != nil {
			return nil, writeError(o.Out, err)
		}
		release.After(e.src.NBytes())
		if o.Progress != nil {
			o.Progress(i+1, len(plan), names[i])
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, writeError(o.Out, err)
	}
	return rep, nil
}

// writeError names the output in a write error, once: the file's own
// errors (atomicfile) name it already.
func writeError(out string, err error) error {
	if strings.Contains(err.Error(), out) {
		return err
	}
	return fmt.Errorf("write %s: %w", out, err)
}

// checkOut refuses to overwrite Out (unless asked) and to write over an input.
func checkOut(o Options) error {
	st, err := os.Stat(o.Out)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a folder", o.Out)
	}
	for _, in := range []string{o.Src, o.PhotoMaker} {
		if in == "" {
			continue
		}
		if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
			return fmt.Errorf("%s is also an input: write the output elsewhere", o.Out)
		}
	}
	if !o.Overwrite {
		return fmt.Errorf("%s: %w (overwrite it with --force)", o.Out, ErrExists)
	}
	return nil
}

// planTensor picks the stored type and ggml shape of one tensor.
func planTensor(name string, t *weights.Tensor, o Options) (entry, string, error) {
	if len(t.Shape) > gguf.MaxDims {
		return entry{}, "", fmt.Errorf("%s: shape %v has more than %d dimensions", name, t.Shape, gguf.MaxDims)
	}
	shape := make([]int64, max(len(t.Shape), 1))
	shape[0] = 1
	for i, d := range t.Shape {
		shape[len(t.Shape)-1-i] = d
	}
	e := entry{name: name, src: t, shape: shape}
	if it, ok := intType(t.DType); ok {
		e.typ, e.raw = it, true
		return e, "", nil
	}
	if t.DType.Size() == 0 && !t.Quantized() {
		return entry{}, "", fmt.Errorf("%s: element type %s cannot be converted", name, t.DType)
	}
	c := choose(name, t, o.Type, o.Rules)
	e.typ = gguf.Type(c.typ)
	e.raw = sameType(t.DType, c.typ)
	return e, c.fallback, nil
}

// intType maps integer DTypes to their GGUF types.
func intType(d safetensors.DType) (gguf.Type, bool) {
	switch d {
	case safetensors.I64:
		return gguf.TypeI64, true
	case safetensors.I32:
		return gguf.TypeI32, true
	case safetensors.I16:
		return gguf.TypeI16, true
	case safetensors.I8:
		return gguf.TypeI8, true
	}
	return 0, false
}

// sameType reports whether data of DType d already is in type t.
func sameType(d safetensors.DType, t ggml.Type) bool {
	switch t {
	case ggml.TypeF32:
		return d == safetensors.F32
	case ggml.TypeF16:
		return d == safetensors.F16
	case ggml.TypeBF16:
		return d == safetensors.BF16
	}
	return t.Quantized() && d == weights.QuantDType(gguf.Type(t))
}

// encode produces the bytes of one tensor in its stored type.
func encode(e entry, threads int) ([]byte, error) {
	if e.raw {
		return e.src.Bytes()
	}
	f, err := e.src.Float32()
	if err != nil {
		return nil, err
	}
	t := ggml.Type(e.typ)
	if b, ok := ggml.EncodeFloat(t, f); ok {
		return b, nil
	}
	return ggml.QuantizeRows(t, f, e.shape[0], threads)
}

// setMetadata records what the file holds and how it was made.
func setMetadata(w *gguf.Writer, o Options, m *weights.Model, rep *Report, merged bool, scale float32) error {
	types := make([]string, 0, len(rep.ByType))
	for k := range rep.ByType {
		types = append(types, k)
	}
	sort.Strings(types)
	counts := make([]uint32, len(types))
	quantized := false
	for i, k := range types {
		counts[i] = uint32(rep.ByType[k].Tensors)
		if t, err := ggml.ParseType(k); err == nil && t.Quantized() {
			quantized = true
		}
	}
	rules := make([]string, len(o.Rules))
	for i, r := range o.Rules {
		rules[i] = r.String()
	}
	sources := []string{filepath.Base(o.Src)}
	if o.PhotoMaker != "" {
		sources = append(sources, filepath.Base(o.PhotoMaker))
	}
	pairs := []kv{
		{weights.KeyArchitecture, weights.GGUFArchitecture},
		{weights.KeyFormatVersion, weights.GGUFFormatVersion},
		{"general.name", trimExt(filepath.Base(o.Out))},
		{weights.KeyKinds, rep.Kinds},
		{"photomaker.source.files", sources},
		{"photomaker.source.kind", m.Kind.String()},
		{"photomaker.type", o.Type.String()},
		{"photomaker.policy.rules", rules},
		{"photomaker.policy.default", DefaultPolicy},
		{"photomaker.tensor_types", types},
		{"photomaker.tensor_counts", counts},
		{"photomaker.fallbacks", uint32(len(rep.Fallbacks))},
	}
	if quantized {
		pairs = append(pairs, kv{"general.quantization_version", uint32(2)})
	}
	if merged {
		pairs = append(pairs, kv{weights.KeyLoRAMerged, true}, kv{"photomaker.lora_scale", scale})
	}
	comps := make([]string, 0, len(m.Configs))
	for c := range m.Configs {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	for _, c := range comps {
		pairs = append(pairs, kv{weights.KeyConfigPrefix + c, string(m.Configs[c])})
	}
	for _, p := range pairs {
		if err := w.SetMetadata(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

type kv struct {
	k string
	v any
}

func trimExt(s string) string { return s[:len(s)-len(filepath.Ext(s))] }
