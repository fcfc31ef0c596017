package weights

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// LoRAPatch is one low-rank update W' = W + Scale·(Up @ Down) of a model tensor.
type LoRAPatch struct {
	// Target is the canonical name of the patched weight.
	Target string
	// Down is [r, in, ...], Up is [out, r, ...].
	Down, Up *Tensor
	// Alpha is the kohya/PEFT alpha scalar, or nil (scale 1).
	Alpha *Tensor
}

// LoRA key suffixes by role, across formats.
var loraSuffixes = []struct{ suffix, role string }{
	{".lora_down.weight", "down"}, {".lora_up.weight", "up"}, // kohya
	{".lora_A.weight", "down"}, {".lora_B.weight", "up"}, // PEFT
	{".lora.down.weight", "down"}, {".lora.up.weight", "up"}, // diffusers LoRACompatibleLinear
	{"_lora.down.weight", "down"}, {"_lora.up.weight", "up"}, // old attention processors (PhotoMaker)
	{".alpha", "alpha"},
}

func splitLoRAKey(name string) (module, role string, ok bool) {
	for _, s := range loraSuffixes {
		if m, found := strings.CutSuffix(name, s.suffix); found {
			return m, s.role, true
		}
	}
	return "", "", false
}

// kohyaTable maps kohya module keys (lora_unet_..., lora_te1_...) to
// canonical weight names, for both the diffusers-style and the original
// (sgm) style of UNet key that kohya tools write.
func kohyaTable(m *Set) map[string]string {
	table := map[string]string{}
	amb := map[string]bool{}
	add := func(k, v string) {
		if old, dup := table[k]; dup && old != v {
			amb[k] = true
		}
		table[k] = v
	}
	under := func(s string) string { return strings.ReplaceAll(s, ".", "_") }
	upHasAttn := func(i int) bool {
		return len(m.Prefix(fmt.Sprintf("unet.up_blocks.%d.attentions.", i)).Names()) > 0
	}
	for _, n := range m.Names() {
		path, ok := strings.CutSuffix(n, ".weight")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(path, "unet."):
			d := path[len("unet."):]
			add("lora_unet_"+under(d), n)
			if o, ok := unetToOriginal(d, upHasAttn); ok {
				add("lora_unet_"+under(o), n)
			}
		case strings.HasPrefix(path, "te1."):
			add("lora_te1_"+under(path[4:]), n)
			add("lora_te_"+under(path[4:]), n)
		case strings.HasPrefix(path, "te2."):
			add("lora_te2_"+under(path[4:]), n)
		}
	}
	for k := range amb {
		delete(table, k)
	}
	return table
}

// loraTarget maps a LoRA module key (name without the role suffix) to a
// canonical weight name.
func loraTarget(module string, kohya func() map[string]string) (string, bool) {
	if strings.HasPrefix(module, "lora_unet_") || strings.HasPrefix(module, "lora_te") {
		t, ok := kohya()[module]
		return t, ok
	}
	module = strings.TrimPrefix(module, "base_model.model.")
	// Old diffusers attention processors: <path>.processor.to_q → <path>.to_q.
	if i := strings.LastIndex(module, ".processor."); i >= 0 {
		proj := module[i+len(".processor."):]
		switch proj {
		case "to_q", "to_k", "to_v":
			module = module[:i] + "." + proj
		case "to_out":
			module = module[:i] + ".to_out.0"
		default:
			return "", false
		}
	}
	switch {
	case strings.HasPrefix(module, "unet."):
		return module + ".weight", true
	case strings.HasPrefix(module, "text_encoder_2.") || strings.HasPrefix(module, "text_encoder."):
		prefix, rest := "te1.", strings.TrimPrefix(module, "text_encoder.")
		if strings.HasPrefix(module, "text_encoder_2.") {
			prefix, rest = "te2.", strings.TrimPrefix(module, "text_encoder_2.")
		}
		if !strings.HasPrefix(rest, "text_model.") && !strings.HasPrefix(rest, "text_projection") {
			rest = "text_model." + rest
		}
		return prefix + rest + ".weight", true
	case hasAnyPrefix(module, "te1.", "te2."):
		return module + ".weight", true
	}
	return "", false
}

// ResolveLoRA pairs a LoRA's down/up (and alpha) tensors and maps them to
// tensors of m. It understands PhotoMaker's attention-processor keys, kohya
// keys (lora_unet_*, lora_te1_*, lora_te2_*, lora_te_*) and diffusers/PEFT
// keys (unet.*.lora_A/lora_B, *.lora.down/up, text_encoder*.). Unknown keys,
// unpaired halves and targets m lacks are errors.
func ResolveLoRA(m *Set, lora *Set) ([]LoRAPatch, error) {
	var table map[string]string
	kohya := func() map[string]string {
		if table == nil {
			table = kohyaTable(m)
		}
		return table
	}
	byTarget := map[string]*LoRAPatch{}
	var unknownKeys, missing []string
	for _, n := range lora.Names() {
		module, role, ok := splitLoRAKey(n)
		var target string
		if ok {
			target, ok = loraTarget(module, kohya)
		}
		if !ok {
			unknownKeys = append(unknownKeys, n)
			continue
		}
		if _, ok := m.Get(target); !ok {
			missing = append(missing, fmt.Sprintf("%s (for %s)", target, n))
			continue
		}
		p := byTarget[target]
		if p == nil {
			p = &LoRAPatch{Target: target}
			byTarget[target] = p
		}
		t, _ := lora.Get(n)
		slot := map[string]**Tensor{"down": &p.Down, "up": &p.Up, "alpha": &p.Alpha}[role]
		if *slot != nil {
			return nil, fmt.Errorf("LoRA: two %s tensors for %s: %s and %s", role, target, (*slot).Name, n)
		}
		*slot = t
	}
	few := func(s []string) string {
		sort.Strings(s)
		if len(s) > 5 {
			return strings.Join(s[:5], ", ") + fmt.Sprintf(", ... (%d in all)", len(s))
		}
		return strings.Join(s, ", ")
	}
	if len(unknownKeys) > 0 {
		return nil, fmt.Errorf("LoRA: %d tensors with unrecognised names: %s", len(unknownKeys), few(unknownKeys))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("LoRA: %d tensors target weights the model does not have: %s", len(missing), few(missing))
	}
	patches := make([]LoRAPatch, 0, len(byTarget))
	for _, p := range byTarget {
		if p.Down == nil || p.Up == nil {
			return nil, fmt.Errorf("LoRA: %s has no matching down/up pair", p.Target)
		}
		base, _ := m.Get(p.Target)
		if err := checkPatchShapes(p, base); err != nil {
			return nil, err
		}
		patches = append(patches, *p)
	}
	sort.Slice(patches, func(i, j int) bool { return patches[i].Target < patches[j].Target })
	return patches, nil
}

func checkPatchShapes(p *LoRAPatch, base *Tensor) error {
	d, u := p.Down.Shape, p.Up.Shape
	if len(d) < 2 || len(u) < 2 || len(base.Shape) < 2 {
		return fmt.Errorf("LoRA: %s: down %v / up %v / weight %v are not matrices", p.Target, d, u, base.Shape)
	}
	r := d[0]
	upRest := int64(1)
	for _, x := range u[1:] {
		upRest *= x
	}
	if upRest != r || u[0] != base.Shape[0] || u[0]*(p.Down.Elements()/r) != base.Elements() {
		return fmt.Errorf("LoRA: %s: up %v @ down %v does not match weight %v", p.Target, u, d, base.Shape)
	}
	if p.Alpha != nil && p.Alpha.Elements() != 1 {
		return fmt.Errorf("LoRA: %s: alpha has shape %v, want a scalar", p.Target, p.Alpha.Shape)
	}
	return nil
}

// MaxLoRAScale bounds a LoRA's merge scale: far beyond any useful one,
// and short of what overflows the merged weights.
const MaxLoRAScale = 100

// MergeLoRA replaces every tensor of m that lora patches with a lazily
// computed float32 tensor W + scale·(alpha/rank)·(up @ down) (alpha/rank = 1
// without an alpha tensor). The arithmetic is float32, as in diffusers'
// fuse_lora. lora must stay open while m's merged tensors are read. It
// returns the number of merged tensors.
func MergeLoRA(m *Set, lora *Set, scale float32) (merged int, err error) {
	if !(math.Abs(float64(scale)) <= MaxLoRAScale) { // NaN too
		return 0, fmt.Errorf("LoRA scale %g: want a number from -%d to %d (1 is the LoRA as trained)", scale, MaxLoRAScale, MaxLoRAScale)
	}
	patches, err := ResolveLoRA(m, lora)
	if err != nil {
		return 0, err
	}
	for _, p := range patches {
		base, _ := m.Get(p.Target)
		m.Replace(p.Target, mergedTensor(base, p, scale))
	}
	return len(patches), nil
}

func mergedTensor(base *Tensor, p LoRAPatch, scale float32) *Tensor {
	compute := func() ([]float32, error) {
		w, err := base.Float32()
		if err != nil {
			return nil, err
		}
		down, err := p.Down.Float32()
		if err != nil {
			return nil, err
		}
		up, err := p.Up.Float32()
		if err != nil {
			return nil, err
		}
		r := int(p.Down.Shape[0])
		s := scale
		if p.Alpha != nil {
			a, err := p.Alpha.Float32()
			if err != nil {
				return nil, err
			}
			s *= a[0] / float32(r)
		}
		out := int(p.Up.Shape[0])
		in := len(down) / r
		if out*in != len(w) {
			return nil, fmt.Errorf("merging the LoRA into %s: its update has %d×%d values, the weight %d", base.Name, out, in, len(w))
		}
		// up·down on ggml's CPU kernels, one thread (the loader merges
		// several tensors at once), a few MB of rows at a time so the
		// update never needs a second weight-sized buffer.
		rows := max(1, (1<<21)/in)
		for o0 := 0; o0 < out; o0 += rows {
			o1 := min(out, o0+rows)
			delta, err := ggml.MatMul(up[o0*r:o1*r], o1-o0, r, down, in, 1)
			if err != nil {
				return nil, fmt.Errorf("merging the LoRA into %s: %w", base.Name, err)
			}
			for i, d := range delta {
				w[o0*in+i] += s * d
			}
		}
		return w, nil
	}
	return Computed(base.Name, base.Shape, []*Tensor{base, p.Down, p.Up}, compute)
}
