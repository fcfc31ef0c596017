package weights

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gophotomaker/photomaker/internal/pyjson"
)

// diffusersComponents maps a diffusers sub-folder to its canonical prefix.
var diffusersComponents = []struct{ dir, prefix string }{
	{"unet", "unet."}, {"vae", "vae."}, {"text_encoder", "te1."}, {"text_encoder_2", "te2."},
}

// weightCandidates are the weight file names tried in each component folder, in order.
var weightCandidates = []string{
	"diffusion_pytorch_model.safetensors", "model.safetensors",
	"diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
	"diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
	"diffusion_pytorch_model.fp16.safetensors.index.json", "model.fp16.safetensors.index.json",
	"diffusion_pytorch_model.bin", "pytorch_model.bin",
	"diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin",
	"diffusion_pytorch_model.bin.index.json", "pytorch_model.bin.index.json",
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// isDiffusersFolder reports whether dir looks like a diffusers pipeline folder.
func isDiffusersFolder(dir string) bool {
	return exists(filepath.Join(dir, "model_index.json")) || exists(filepath.Join(dir, "unet"))
}

// readConfigs loads model_index.json and the components' config.json files.
func readConfigs(dir string) (map[string]json.RawMessage, error) {
	cfg := map[string]json.RawMessage{}
	files := map[string]string{
		"model_index": "model_index.json", "unet": "unet/config.json", "vae": "vae/config.json",
		"text_encoder": "text_encoder/config.json", "text_encoder_2": "text_encoder_2/config.json",
		"scheduler": "scheduler/scheduler_config.json",
	}
	for k, rel := range files {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		b = pyjson.Sanitize(b) // diffusers writes -Infinity in scheduler configs
		if !json.Valid(b) {
			return nil, fmt.Errorf("%s: not valid JSON", filepath.Join(dir, rel))
		}
		cfg[k] = b
	}
	return cfg, nil
}

// checkDiffusersFamily rejects non-SDXL diffusers pipelines from their configs.
func checkDiffusersFamily(dir string, cfg map[string]json.RawMessage) error {
	var index struct {
		Class string          `json:"_class_name"`
		TE    json.RawMessage `json:"text_encoder"`
	}
	var unet struct {
		In        int    `json:"in_channels"`
		CrossAttn any    `json:"cross_attention_dim"`
		AddEmbed  string `json:"addition_embed_type"`
		Class     string `json:"_class_name"`
	}
	un := func(what, detail string) error { return &UnsupportedError{Path: dir, What: what, Detail: detail} }
	if raw, ok := cfg["model_index"]; ok {
		_ = json.Unmarshal(raw, &index)
		c := index.Class
		switch {
		case strings.Contains(c, "StableDiffusion3"):
			return un("a Stable Diffusion 3 pipeline", "model_index.json _class_name "+c)
		case strings.Contains(c, "Flux"):
			return un("a Flux pipeline", "model_index.json _class_name "+c)
		case strings.Contains(c, "Inpaint") && strings.Contains(c, "XL"):
			return un("an SDXL inpainting pipeline", "model_index.json _class_name "+c)
		}
	}
	if raw, ok := cfg["unet"]; ok {
		_ = json.Unmarshal(raw, &unet)
		switch ctx := unet.CrossAttn.(type) {
		case float64:
			if ctx == 768 {
				return un("an SD1.x pipeline", "UNet cross-attention context 768")
			}
			if ctx == 1024 {
				return un("an SD2.x pipeline", "UNet cross-attention context 1024")
			}
		}
		if unet.In == 9 {
			return un("an SDXL inpainting pipeline", "UNet conv_in has 9 input channels")
		}
		if unet.AddEmbed != "" && unet.AddEmbed != "text_time" {
			return un("a non-SDXL UNet", "addition_embed_type "+unet.AddEmbed)
		}
		if unet.AddEmbed == "" && unet.Class == "UNet2DConditionModel" {
			return un("an SD1.x/2.x pipeline", "UNet has no text_time addition embedding")
		}
	}
	if !exists(filepath.Join(dir, "text_encoder")) && exists(filepath.Join(dir, "text_encoder_2")) {
		return un("an SDXL refiner", "no text_encoder (CLIP-L) folder")
	}
	return nil
}

// componentFiles finds the weight files of one component folder.
func componentFiles(dir string) ([]string, error) {
	for _, c := range weightCandidates {
		p := filepath.Join(dir, c)
		if !exists(p) {
			continue
		}
		if !strings.HasSuffix(c, ".index.json") {
			return []string{p}, nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil || len(idx.WeightMap) == 0 {
			return nil, fmt.Errorf("%s: not a valid shard index", p)
		}
		seen := map[string]bool{}
		var files []string
		for _, f := range idx.WeightMap {
			if !filepath.IsLocal(f) {
				return nil, fmt.Errorf("%s: shard %q is outside the component folder", p, f)
			}
			if !seen[f] {
				seen[f] = true
				files = append(files, filepath.Join(dir, f))
			}
		}
		sort.Strings(files)
		return files, nil
	}
	return nil, fmt.Errorf("%s: no weights (looked for %s, ...)", dir, strings.Join(weightCandidates[:4], ", "))
}

// diffusersName maps a component's own tensor name to the canonical name
// ("" = ignore).
func diffusersName(prefix, name string) string {
	if strings.HasSuffix(name, "position_ids") || strings.HasSuffix(name, "logit_scale") {
		return ""
	}
	switch prefix {
	case "te1.", "te2.":
		if !strings.HasPrefix(name, "text_model.") && !strings.HasPrefix(name, "text_projection.") {
			name = "text_model." + name
		}
	case "vae.":
		// diffusers < 0.14 VAE attention names.
		for old, cur := range map[string]string{".attentions.0.query.": ".attentions.0.to_q.", ".attentions.0.key.": ".attentions.0.to_k.",
			".attentions.0.value.": ".attentions.0.to_v.", ".attentions.0.proj_attn.": ".attentions.0.to_out.0."} {
			name = strings.Replace(name, old, cur, 1)
		}
	}
	return prefix + name
}

func openDiffusers(dir string) (*Model, error) {
	if !isDiffusersFolder(dir) {
		if exists(filepath.Join(dir, "config.json")) {
			if _, err := componentFiles(dir); err == nil {
				return nil, fmt.Errorf("%s: this is one component of a diffusers model; open the folder above it (with model_index.json)", dir)
			}
		}
		return nil, fmt.Errorf("%s: a folder without model_index.json or unet/: not a diffusers model", dir)
	}
	cfg, err := readConfigs(dir)
	if err != nil {
		return nil, err
	}
	if err := checkDiffusersFamily(dir, cfg); err != nil {
		return nil, err
	}
	set := NewSet()
	m := &Model{Path: dir, Kind: SDXLDiffusers, Tensors: set, Configs: cfg}
	fail := func(err error) (*Model, error) {
		set.Close()
		return nil, err
	}
	for _, c := range diffusersComponents {
		cdir := filepath.Join(dir, c.dir)
		if !exists(cdir) {
			return fail(fmt.Errorf("%s: diffusers folder has no %s/ component", dir, c.dir))
		}
		files, err := componentFiles(cdir)
		if err != nil {
			return fail(err)
		}
		for _, p := range files {
			f, err := openTensorFile(p)
			if err != nil {
				return fail(err)
			}
			set.addCloser(f)
			for _, rt := range f.list() {
				canon := diffusersName(c.prefix, rt.Name)
				if canon == "" {
					continue
				}
				op := opSame
				if c.prefix == "vae." && len(rt.Shape) == 4 && rt.Shape[2] == 1 && rt.Shape[3] == 1 && strings.Contains(canon, ".attentions.0.to_") && strings.HasSuffix(canon, ".weight") {
					op = opSqueeze // old conversions stored VAE attention as 1×1 convs
				}
				if err := addMapped(set, f, rt, []target{{name: canon, op: op, part: -1}}); err != nil {
					return fail(fmt.Errorf("%s: %w", dir, err))
				}
			}
		}
	}
	if err := checkComplete(dir, set); err != nil {
		return fail(err)
	}
	return m, nil
}
