package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

const exampleTarget = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"

func openAdapter(t testing.TB, rel string) *Model {
	t.Helper()
	m, err := Open(golden.Path(rel))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func f32(t testing.TB, tt *Tensor) []float32 {
	t.Helper()
	v, err := tt.Float32()
	require.NoError(t, err)
	return v
}

func TestMergePhotoMakerLoRAGolden(t *testing.T) {
	c := golden.FindCase(t, "unet.lora_v1_fused.example_weight")
	assert.Contains(t, c.ReferenceCall, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")
	before := golden.Ref(t, golden.String(t, c.Outputs["before"]))
	after := golden.Ref(t, golden.String(t, c.Outputs["after"]))

	m := openTiny(t)
	pm := openAdapter(t, "photomaker/photomaker-v1-tiny.safetensors")
	w, ok := m.Tensors.Get(exampleTarget)
	require.True(t, ok)
	require.Equal(t, before.Shape, w.Shape)
	assert.Equal(t, before.Data, f32(t, w), "'before' is the unmerged weight, exactly")

	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1)), 1e30} {
		_, err := MergeLoRA(m.Tensors, pm.LoRA, bad)
		require.ErrorContains(t, err, "LoRA scale", "scale %g", bad)
	}
	n, err := MergeLoRA(m.Tensors, pm.LoRA, 1)
	require.NoError(t, err)
	assert.Equal(t, pm.LoRA.Len()/2, n, "one merge per down/up pair")
	assert.Equal(t, 17*8, n, "17 transformer blocks × attn1/attn2 × q,k,v,out")

	merged, _ := m.Tensors.Get(exampleTarget)
	assert.Equal(t, safetensors.F32, merged.DType)
	assert.Equal(t, before.Shape, merged.Shape)
	assert.Equal(t, w.File, merged.File)
	assert.Equal(t, []string{golden.Path("photomaker/photomaker-v1-tiny.safetensors")}, merged.AlsoReads, "a loader releases the LoRA file's pages too")
	golden.AssertClose(t, "merged example weight", f32(t, merged), after.Data, 1e-6, 0)

	// Bytes and Float32 of a merged tensor agree.
	raw, err := merged.Bytes()
	require.NoError(t, err)
	got := f32(t, merged)
	for i := range got {
		require.Equal(t, math.Float32bits(got[i]), binary.LittleEndian.Uint32(raw[4*i:]))
	}
	// Untouched tensors stay as they were.
	other, _ := m.Tensors.Get("unet.conv_in.weight")
	assert.Equal(t, safetensors.F16, other.DType)
}

// loraEntry is one tensor of a LoRA file written by a test.
type loraEntry struct {
	shape []int64
	data  []float32
}

func writeLoRA(t *testing.T, tensors map[string]loraEntry) string {
	t.Helper()
	var entries []safetensors.Entry
	for name, e := range tensors {
		b := make([]byte, 4*len(e.data))
		for i, v := range e.data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		entries = append(entries, safetensors.Entry{Name: name, DType: safetensors.F32, Shape: e.shape, Data: func() ([]byte, error) { return b, nil }})
	}
	p := filepath.Join(t.TempDir(), "lora.safetensors")
	require.NoError(t, safetensors.Write(p, entries, nil))
	return p
}

// pmPairs lists the PhotoMaker LoRA's pairs as (canonical target, down, up).
type pair struct {
	target   string
	down, up loraEntry
}

func pmPairs(t *testing.T) []pair {
	pm := openAdapter(t, "photomaker/photomaker-v1-tiny.safetensors")
	var out []pair
	for _, n := range pm.LoRA.Names() {
		base, ok := strings.CutSuffix(n, "_lora.down.weight")
		if !ok {
			continue
		}
		path, proj, _ := strings.Cut(base, ".processor.")
		if proj == "to_out" {
			proj = "to_out.0"
		}
		d, _ := pm.LoRA.Get(n)
		u, _ := pm.LoRA.Get(base + "_lora.up.weight")
		out = append(out, pair{path + "." + proj + ".weight", loraEntry{d.Shape, f32(t, d)}, loraEntry{u.Shape, f32(t, u)}})
	}
	require.Len(t, out, 136)
	return out
}

func randEntry(rng *rand.Rand, shape ...int64) loraEntry {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.1)
	}
	return loraEntry{shape, v}
}

// Kohya (original and diffusers-style UNet keys, text encoders, alpha, conv),
// PEFT and diffusers LoRA formats all land on the same canonical weights.
func TestMergeLoRAFormats(t *testing.T) {
	pairs := pmPairs(t)
	ref := openTiny(t)
	// The reference result: the PhotoMaker keys at scale 0.5.
	pmModel := openAdapter(t, "photomaker/photomaker-v1-tiny.safetensors")
	_, err := MergeLoRA(ref.Tensors, pmModel.LoRA, 0.5)
	require.NoError(t, err)

	sourceOf := func(m *Model, canonical string) string {
		tt, ok := m.Tensors.Get(canonical)
		require.True(t, ok, canonical)
		return tt.Source
	}
	kohyaOrig := func(m *Model, target string) string { // from the file's own original name
		src := strings.TrimSuffix(strings.TrimPrefix(sourceOf(m, target), origUNet), ".weight")
		return "lora_unet_" + strings.ReplaceAll(src, ".", "_")
	}
	kohyaDiff := func(target string) string {
		return "lora_unet_" + strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(target, "unet."), ".weight"), ".", "_")
	}
	plain := openTiny(t)
	formats := []struct {
		name  string
		keys  func(target string) (down, up, alpha string)
		alpha float32 // 0: no alpha tensor
		scale float32
	}{
		{"kohya-original", func(tg string) (string, string, string) {
			k := kohyaOrig(plain, tg)
			return k + ".lora_down.weight", k + ".lora_up.weight", k + ".alpha"
		}, 2, 1}, // alpha/rank = 2/4
		{"kohya-diffusers", func(tg string) (string, string, string) {
			k := kohyaDiff(tg)
			return k + ".lora_down.weight", k + ".lora_up.weight", k + ".alpha"
		}, 8, 0.25},
		{"peft", func(tg string) (string, string, string) {
			k := strings.TrimSuffix(tg, ".weight")
			return k + ".lora_A.weight", k + ".lora_B.weight", ""
		}, 0, 0.5},
		{"peft-wrapped", func(tg string) (string, string, string) {
			k := "base_model.model." + strings.TrimSuffix(tg, ".weight")
			return k + ".lora_A.weight", k + ".lora_B.weight", ""
		}, 0, 0.5},
		{"diffusers", func(tg string) (string, string, string) {
			k := strings.TrimSuffix(tg, ".weight")
			return k + ".lora.down.weight", k + ".lora.up.weight", ""
		}, 0, 0.5},
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			tensors := map[string]loraEntry{}
			for _, p := range pairs {
				d, u, a := f.keys(p.target)
				tensors[d], tensors[u] = p.down, p.up
				if f.alpha != 0 {
					tensors[a] = loraEntry{[]int64{}, []float32{f.alpha}}
				}
			}
			lora, err := OpenLoRA(writeLoRA(t, tensors))
			require.NoError(t, err)
			defer lora.Close()
			m := openTiny(t)
			n, err := MergeLoRA(m.Tensors, lora, f.scale)
			require.NoError(t, err)
			require.Equal(t, len(pairs), n)
			for _, p := range pairs {
				a, _ := ref.Tensors.Get(p.target)
				b, _ := m.Tensors.Get(p.target)
				require.Equal(t, f32(t, a), f32(t, b), p.target)
			}
		})
	}
}

// Text-encoder keys (including TE2's q/k/v split out of OpenCLIP's in_proj)
// and a kohya conv (LoCon) patch: W' = W + s·up@down checked elementwise.
func TestMergeLoRATextEncodersAndConv(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const r = 3
	cases := map[string]string{ // LoRA module key → canonical target
		"lora_te1_text_model_encoder_layers_0_self_attn_q_proj":       "te1.text_model.encoder.layers.0.self_attn.q_proj.weight",
		"lora_te2_text_model_encoder_layers_1_self_attn_k_proj":       "te2.text_model.encoder.layers.1.self_attn.k_proj.weight",
		"lora_te2_text_model_encoder_layers_0_mlp_fc1":                "te2.text_model.encoder.layers.0.mlp.fc1.weight",
		"text_encoder.text_model.encoder.layers.1.self_attn.out_proj": "te1.text_model.encoder.layers.1.self_attn.out_proj.weight",
		"text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj": "te2.text_model.encoder.layers.0.self_attn.v_proj.weight",
		"lora_unet_input_blocks_0_0":                                  "unet.conv_in.weight",
		"lora_unet_output_blocks_2_2_conv":                            "unet.up_blocks.0.upsamplers.0.conv.weight",
		"lora_unet_middle_block_1_transformer_blocks_1_ff_net_0_proj": "unet.mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj.weight",
	}
	plain := openTiny(t)
	tensors := map[string]loraEntry{}
	for key, target := range cases {
		w, ok := plain.Tensors.Get(target)
		require.True(t, ok, target)
		down := append([]int64{r}, w.Shape[1:]...)
		up := []int64{w.Shape[0], r}
		if len(w.Shape) == 4 {
			up = append(up, 1, 1)
		}
		if strings.HasPrefix(key, "lora_") {
			tensors[key+".lora_down.weight"] = randEntry(rng, down...)
			tensors[key+".lora_up.weight"] = randEntry(rng, up...)
			tensors[key+".alpha"] = loraEntry{[]int64{}, []float32{1.5}}
		} else {
			tensors[key+".lora_A.weight"] = randEntry(rng, down...)
			tensors[key+".lora_B.weight"] = randEntry(rng, up...)
		}
	}
	lora, err := OpenLoRA(writeLoRA(t, tensors))
	require.NoError(t, err)
	defer lora.Close()
	m := openTiny(t)
	n, err := MergeLoRA(m.Tensors, lora, 0.8)
	require.NoError(t, err)
	require.Equal(t, len(cases), n)
	for key, target := range cases {
		w, _ := plain.Tensors.Get(target)
		base := f32(t, w)
		var d, u loraEntry
		s := float32(0.8)
		if strings.HasPrefix(key, "lora_") {
			d, u = tensors[key+".lora_down.weight"], tensors[key+".lora_up.weight"]
			s *= 1.5 / r
		} else {
			d, u = tensors[key+".lora_A.weight"], tensors[key+".lora_B.weight"]
		}
		out, in := int(u.shape[0]), len(d.data)/r
		want := make([]float32, len(base))
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				var acc float64
				for k := 0; k < r; k++ {
					acc += float64(u.data[o*r+k]) * float64(d.data[k*in+i])
				}
				want[o*in+i] = float32(float64(base[o*in+i]) + float64(s)*acc)
			}
		}
		got, _ := m.Tensors.Get(target)
		golden.AssertClose(t, target, f32(t, got), want, 1e-6, 1e-6)
	}
}

func TestMergeLoRAErrors(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	ok := func(k string) map[string]loraEntry {
		return map[string]loraEntry{k + ".lora_down.weight": randEntry(rng, 4, 64), k + ".lora_up.weight": randEntry(rng, 64, 4)}
	}
	merge := func(ts map[string]loraEntry) error {
		lora, err := OpenLoRA(writeLoRA(t, ts))
		require.NoError(t, err)
		defer lora.Close()
		_, err = MergeLoRA(openTiny(t).Tensors, lora, 1)
		return err
	}
	unknown := ok("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q")
	for i := 0; i < 7; i++ {
		unknown[fmt.Sprintf("lora_unet_nonsense_%d.lora_down.weight", i)] = randEntry(rng, 1)
	}
	unknown["hada_w1_a"] = randEntry(rng, 1)
	err := merge(unknown)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "8 tensors with unrecognised names")
	assert.Contains(t, err.Error(), "hada_w1_a")
	assert.Contains(t, err.Error(), "(8 in all)")

	missing := ok("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
	assert.ErrorContains(t, merge(missing), "target weights the model does not have")

	half := ok("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q")
	delete(half, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight")
	assert.ErrorContains(t, merge(half), "no matching down/up pair")

	badShape := map[string]loraEntry{
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": randEntry(rng, 4, 63),
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight":   randEntry(rng, 64, 4),
	}
	assert.ErrorContains(t, merge(badShape), "does not match weight")
}

// Merging twice composes lazily: W + a·Δ + b·Δ.
func TestMergeLoRATwice(t *testing.T) {
	pm := openAdapter(t, "photomaker/photomaker-v1-tiny.safetensors")
	once, twice := openTiny(t), openTiny(t)
	_, err := MergeLoRA(once.Tensors, pm.LoRA, 1)
	require.NoError(t, err)
	for i := 0; i < 2; i++ {
		_, err = MergeLoRA(twice.Tensors, pm.LoRA, 0.5)
		require.NoError(t, err)
	}
	a, _ := once.Tensors.Get(exampleTarget)
	b, _ := twice.Tensors.Get(exampleTarget)
	golden.AssertClose(t, "twice at 0.5 vs once at 1", f32(t, b), f32(t, a), 1e-6, 1e-6)
	require.Len(t, b.AlsoReads, 1, "one file however many merges read it")
}
