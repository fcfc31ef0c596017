package weights

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// The keymap's sha256 of every original tensor matches the file: proves the
// reader and the keymap agree before anything is compared through them.
func TestKeymapSHA256MatchesSingleFile(t *testing.T) {
	f, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	entries := loadKeymap(t)
	require.Len(t, f.Tensors(), len(entries), "one keymap entry per tensor")
	for _, e := range entries {
		raw, err := f.Bytes(e.Dst)
		require.NoError(t, err, e.Dst)
		sum := sha256.Sum256(raw)
		require.Equal(t, e.SHA256, hex.EncodeToString(sum[:]), e.Dst)
	}
}

func openTiny(t testing.TB) *Model {
	t.Helper()
	m, err := Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestSingleFileMapsToDiffusersNames(t *testing.T) {
	m := openTiny(t)
	assert.Equal(t, SDXLSingleFile, m.Kind)
	assert.Empty(t, m.Warnings, "every tensor of the tiny single file must map")
	want := diffusersFromKeymap(t)
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	sort.Strings(wantNames)
	require.Equal(t, wantNames, m.Tensors.Names())
	assert.Equal(t, 937, m.Tensors.Len())

	// Every original tensor is the source of some canonical tensor.
	f, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	used := map[string]bool{}
	for _, n := range m.Tensors.Names() {
		tt, _ := m.Tensors.Get(n)
		used[tt.Source] = true
		assert.Equal(t, n, tt.Name)
		assert.Equal(t, golden.Path("tiny-sdxl.safetensors"), tt.File)
	}
	for _, ft := range f.Tensors() {
		assert.True(t, used[ft.Name], "original tensor %s unused", ft.Name)
	}
}

func TestSingleFileBytesMatchKeymapInverse(t *testing.T) {
	m := openTiny(t)
	for name, ref := range diffusersFromKeymap(t) {
		tt, ok := m.Tensors.Get(name)
		require.True(t, ok, name)
		assert.Equal(t, ref.dtype, tt.DType, name)
		assert.Equal(t, ref.shape, tt.Shape, name)
		got, err := tt.Bytes()
		require.NoError(t, err, name)
		require.True(t, bytes.Equal(ref.data, got), "bytes differ for %s", name)
	}
}

func TestSingleFileSpecialOps(t *testing.T) {
	m := openTiny(t)
	tests := []struct {
		name  string
		shape []int64
	}{
		{"te2.text_projection.weight", []int64{64, 64}},
		{"te2.text_model.encoder.layers.1.self_attn.k_proj.weight", []int64{64, 64}},
		{"te2.text_model.encoder.layers.0.self_attn.v_proj.bias", []int64{64}},
		{"vae.decoder.mid_block.attentions.0.to_out.0.weight", []int64{64, 64}},
		{"vae.encoder.mid_block.attentions.0.to_q.weight", []int64{64, 64}},
		{"te1.text_model.embeddings.token_embedding.weight", []int64{49408, 64}},
		{"unet.up_blocks.0.upsamplers.0.conv.weight", []int64{128, 128, 3, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt, ok := m.Tensors.Get(tc.name)
			require.True(t, ok)
			assert.Equal(t, tc.shape, tt.Shape)
			v, err := tt.Float32()
			require.NoError(t, err)
			assert.Len(t, v, int(tt.Elements()))
		})
	}
	// Prefix views strip the prefix but keep canonical Tensor.Name.
	te2 := m.Tensors.Prefix("te2.")
	tt, ok := te2.Get("text_projection.weight")
	require.True(t, ok)
	assert.Equal(t, "te2.text_projection.weight", tt.Name)
	assert.Equal(t, 37, te2.Len())
	assert.Equal(t, 620, m.Tensors.Prefix("unet.").Len())
	assert.Equal(t, 244, m.Tensors.Prefix("vae.").Len())
	assert.Equal(t, 36, m.Tensors.Prefix("te1.").Len())
	assert.NoError(t, te2.Close(), "closing a view is a no-op")
}

// writeDiffusersFolder writes a diffusers folder of the tiny model built from
// the keymap, exercising the .fp16 variant and a sharded component.
func writeDiffusersFolder(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	ref := diffusersFromKeymap(t)
	byComp := map[string][]safetensors.Entry{}
	for _, r := range ref {
		comp, name, _ := strings.Cut(r.src, "/")
		data := r.data
		byComp[comp] = append(byComp[comp], safetensors.Entry{Name: name, DType: r.dtype, Shape: r.shape, Data: func() ([]byte, error) { return data, nil }})
	}
	files := map[string]string{
		"unet": "diffusion_pytorch_model.fp16.safetensors", "vae": "diffusion_pytorch_model.safetensors",
		"text_encoder": "model.safetensors", "text_encoder_2": "model.safetensors",
	}
	configs := map[string]string{"unet": "unet.json", "vae": "vae.json", "text_encoder": "text_encoder.json", "text_encoder_2": "text_encoder_2.json"}
	for comp, entries := range byComp {
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
		cdir := filepath.Join(dir, comp)
		require.NoError(t, os.MkdirAll(cdir, 0o755))
		if comp == "vae" { // two shards and an index
			half := len(entries) / 2
			require.NoError(t, safetensors.Write(filepath.Join(cdir, "a.safetensors"), entries[:half], nil))
			require.NoError(t, safetensors.Write(filepath.Join(cdir, "b.safetensors"), entries[half:], nil))
			idx := `{"metadata":{},"weight_map":{`
			for i, e := range entries {
				shard := "a.safetensors"
				if i >= half {
					shard = "b.safetensors"
				}
				if i > 0 {
					idx += ","
				}
				idx += `"` + e.Name + `":"` + shard + `"`
			}
			require.NoError(t, os.WriteFile(filepath.Join(cdir, files[comp]+".index.json"), []byte(idx+"}}"), 0o644))
		} else {
			require.NoError(t, safetensors.Write(filepath.Join(cdir, files[comp]), entries, nil))
		}
		cfg, err := os.ReadFile(golden.Path("tiny-sdxl-configs/" + configs[comp]))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(cdir, "config.json"), cfg, 0o644))
	}
	for src, dst := range map[string]string{"model_index.json": "model_index.json", "scheduler.json": "scheduler/scheduler_config.json"} {
		b, err := os.ReadFile(golden.Path("tiny-sdxl-configs/" + src))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, dst), b, 0o644))
	}
	return dir
}

// assertSameTensors checks that two models hold the same canonical names
// with identical dtypes, shapes and bytes.
func assertSameTensors(t *testing.T, want, got *Set) {
	t.Helper()
	require.Equal(t, want.Names(), got.Names())
	for _, n := range want.Names() {
		a, _ := want.Get(n)
		b, _ := got.Get(n)
		assert.Equal(t, a.DType, b.DType, n)
		assert.Equal(t, a.Shape, b.Shape, n)
		ab, err := a.Bytes()
		require.NoError(t, err, n)
		bb, err := b.Bytes()
		require.NoError(t, err, n)
		require.True(t, bytes.Equal(ab, bb), "bytes differ for %s", n)
	}
}

func TestDiffusersFolderFromKeymapMatchesSingleFile(t *testing.T) {
	dir := writeDiffusersFolder(t)
	d, err := Open(dir)
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, SDXLDiffusers, d.Kind)
	assert.Empty(t, d.Warnings)
	assertSameTensors(t, openTiny(t).Tensors, d.Tensors)

	for _, c := range []string{"model_index", "unet", "vae", "text_encoder", "text_encoder_2", "scheduler"} {
		assert.Contains(t, d.Configs, c)
	}
	var unet struct {
		CrossAttentionDim int   `json:"cross_attention_dim"`
		BlockOutChannels  []int `json:"block_out_channels"`
	}
	require.NoError(t, d.Config("unet", &unet))
	assert.Equal(t, 128, unet.CrossAttentionDim)
	assert.Equal(t, []int{32, 64, 128}, unet.BlockOutChannels)
	tt, _ := d.Tensors.Get("vae.decoder.conv_in.weight")
	assert.Contains(t, tt.File, filepath.Join("vae", ""))
}

// The reference kit's own diffusers folder (written by diffusers and
// transformers) holds exactly the single file's tensors under our names.
func TestSharedDiffusersFolderMatchesSingleFile(t *testing.T) {
	dir := golden.SharedPath(t, "tiny-sdxl")
	d, err := Open(dir)
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, SDXLDiffusers, d.Kind)
	assert.Empty(t, d.Warnings)
	assertSameTensors(t, openTiny(t).Tensors, d.Tensors)
}

func TestDiffusersDuplicateNames(t *testing.T) {
	dir := writeDiffusersFolder(t)
	// A second text-encoder shard that repeats a tensor (with and without
	// text_model.) must be reported, naming both sources.
	cdir := filepath.Join(dir, "text_encoder")
	src, err := safetensors.Open(filepath.Join(cdir, "model.safetensors"))
	require.NoError(t, err)
	var entries []safetensors.Entry
	for _, tt := range src.Tensors() {
		name := tt.Name
		if name == "final_layer_norm.bias" {
			name = "text_model.final_layer_norm.bias"
		}
		data, err := src.Bytes(tt.Name)
		require.NoError(t, err)
		data = append([]byte(nil), data...)
		entries = append(entries, safetensors.Entry{Name: tt.Name, DType: tt.DType, Shape: tt.Shape, Data: func() ([]byte, error) { return data, nil }})
		if name != tt.Name {
			entries = append(entries, safetensors.Entry{Name: name, DType: tt.DType, Shape: tt.Shape, Data: func() ([]byte, error) { return data, nil }})
		}
	}
	src.Close()
	require.NoError(t, safetensors.Write(filepath.Join(cdir, "model.safetensors"), entries, nil))
	_, err = Open(dir)
	require.Error(t, err)
	var dup *DuplicateError
	require.ErrorAs(t, err, &dup)
	assert.Equal(t, "te1.text_model.final_layer_norm.bias", dup.Name)
	assert.Contains(t, err.Error(), "final_layer_norm.bias")
}

// The UNet name rules are invertible (kohya LoRAs use original-layout names).
func TestUNetNameRulesRoundTrip(t *testing.T) {
	m := openTiny(t)
	upHasAttn := func(i int) bool { return i < 2 }
	for _, n := range m.Tensors.Prefix("unet.").Names() {
		tt, _ := m.Tensors.Get("unet." + n)
		o, ok := unetToOriginal(n, upHasAttn)
		require.True(t, ok, n)
		assert.Equal(t, tt.Source, origUNet+o, n)
		back, ok := unetFromOriginal(o)
		require.True(t, ok, o)
		assert.Equal(t, n, back)
		// Module paths (kohya LoRA keys have no .weight) map the same way.
		mod := n[:strings.LastIndex(n, ".")]
		om, ok := unetToOriginal(mod, upHasAttn)
		require.True(t, ok, mod)
		assert.Equal(t, o[:strings.LastIndex(o, ".")], om, mod)
		back, ok = unetFromOriginal(om)
		require.True(t, ok, om)
		assert.Equal(t, mod, back)
	}
}

// Training checkpoints wrap everything in state_dict (as .ckpt files do).
func TestSingleFileStateDictWrapper(t *testing.T) {
	src, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer src.Close()
	var entries []safetensors.Entry
	for _, tt := range src.Tensors() {
		name := tt.Name
		entries = append(entries, safetensors.Entry{Name: "state_dict." + name, DType: tt.DType, Shape: tt.Shape, Data: func() ([]byte, error) { return src.Bytes(name) }})
	}
	p := filepath.Join(t.TempDir(), "wrapped.safetensors")
	require.NoError(t, safetensors.Write(p, entries, nil))
	m, err := Open(p)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, SDXLSingleFile, m.Kind)
	assert.Empty(t, m.Warnings)
	assertSameTensors(t, openTiny(t).Tensors, m.Tensors)
}
