package convert

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/gguf"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

var (
	tinySDXL = golden.Path("tiny-sdxl.safetensors")
	tinyV1   = golden.Path("photomaker/photomaker-v1-tiny.safetensors")
	tinyV2   = golden.Path("photomaker/photomaker-v2-tiny.safetensors")
	realV1   = golden.Path("photomaker/photomaker-v1-real.bin")
)

func convertTo(t *testing.T, o Options) (string, *Report) {
	t.Helper()
	if o.Out == "" {
		o.Out = filepath.Join(t.TempDir(), "out.gguf")
	}
	rep, err := Convert(context.Background(), o)
	require.NoError(t, err)
	return o.Out, rep
}

// reference opens the inputs the way Convert sees them: SDXL with the
// adapter's LoRA merged, plus the adapter's pm.* tensors.
func reference(t *testing.T, src, adapter string) map[string]*weights.Tensor {
	t.Helper()
	m, err := weights.Open(src)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	out := map[string]*weights.Tensor{}
	add := func(s *weights.Set, prefix string) {
		for _, n := range s.Names() {
			tt, _ := s.Get(n)
			out[prefix+n] = tt
		}
	}
	add(m.Tensors, "")
	if adapter != "" {
		a, err := weights.Open(adapter)
		require.NoError(t, err)
		t.Cleanup(func() { a.Close() })
		_, err = weights.MergeLoRA(m.Tensors, a.LoRA, 1)
		require.NoError(t, err)
		add(m.Tensors, "")
		add(a.Tensors, "")
	} else if m.LoRA != nil {
		add(m.LoRA, weights.LoRAPrefix)
	}
	return out
}

// gguTensors lists a converted file's tensors by canonical name.
func ggufTensors(t *testing.T, path string) (*weights.Model, map[string]*weights.Tensor) {
	t.Helper()
	m, err := weights.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	out := map[string]*weights.Tensor{}
	for _, n := range m.Tensors.Names() {
		out[n], _ = m.Tensors.Get(n)
	}
	if m.LoRA != nil {
		for _, n := range m.LoRA.Names() {
			out[weights.LoRAPrefix+n], _ = m.LoRA.Get(n)
		}
	}
	return m, out
}

func encodeAs(t *testing.T, typ ggml.Type, f []float32, ne0 int64) []byte {
	t.Helper()
	switch typ {
	case ggml.TypeF32:
		return ggml.F32Bytes(f)
	case ggml.TypeF16:
		b := make([]byte, 2*len(f))
		half.EncodeF16(b, f)
		return b
	case ggml.TypeBF16:
		b := make([]byte, 2*len(f))
		half.EncodeBF16(b, f)
		return b
	}
	b, err := ggml.Quantize(typ, f, ne0)
	require.NoError(t, err)
	return b
}

func storedType(t *testing.T, tt *weights.Tensor) ggml.Type {
	t.Helper()
	typ, err := ggml.ParseType(string(tt.DType))
	require.NoError(t, err, tt.Name)
	return typ
}

// Every tensor of the GGUF is the source converted to its stored type, byte
// for byte; f32 stores everything exactly.
func TestRoundTripFloatTypes(t *testing.T) {
	ref := reference(t, tinySDXL, tinyV1)
	for _, typ := range []ggml.Type{ggml.TypeF32, ggml.TypeF16, ggml.TypeBF16} {
		t.Run(typ.String(), func(t *testing.T) {
			out, rep := convertTo(t, Options{Src: tinySDXL, PhotoMaker: tinyV1, Type: typ})
			require.Equal(t, []string{"sdxl", "photomaker-v1"}, rep.Kinds)
			require.Equal(t, 136, rep.LoRAMerged)
			m, got := ggufTensors(t, out)
			require.Equal(t, weights.GGUF, m.Kind)
			require.NotNil(t, m.Adapter)
			require.Equal(t, weights.PhotoMakerV1, m.Adapter.Kind)
			require.Nil(t, m.Adapter.LoRA)
			require.Len(t, got, len(ref))
			require.Equal(t, len(ref), rep.Tensors)
			var total int64
			for name, want := range ref {
				g, ok := got[name]
				require.True(t, ok, name)
				require.Equal(t, want.Shape, g.Shape, name)
				st := storedType(t, g)
				if typ == ggml.TypeF32 {
					require.Equal(t, ggml.TypeF32, st, name)
				} else {
					require.Contains(t, []ggml.Type{typ, ggml.TypeF32, ggml.TypeF16}, st, name)
				}
				f, err := want.Float32()
				require.NoError(t, err)
				b, err := g.Bytes()
				require.NoError(t, err)
				require.Equal(t, encodeAs(t, st, f, 0), b, name)
				if typ == ggml.TypeF32 {
					gf, err := g.Float32()
					require.NoError(t, err)
					require.Equal(t, f, gf, name)
				}
				total += int64(len(b))
			}
			require.Equal(t, rep.Bytes, total)
			counts := 0
			for _, s := range rep.ByType {
				counts += s.Tensors
			}
			require.Equal(t, rep.Tensors, counts)
		})
	}
}

// Quantized tensors hold exactly ggml.Quantize of the source values, and
// read back as ggml's dequantization of those bytes.
func TestRoundTripQuantized(t *testing.T) {
	ref := reference(t, tinySDXL, tinyV1)
	values := map[string][]float32{} // the merged LoRA is slow to recompute
	for name, want := range ref {
		f, err := want.Float32()
		require.NoError(t, err)
		values[name] = f
	}
	for _, typ := range []ggml.Type{ggml.TypeQ8_0, ggml.TypeQ5_0, ggml.TypeQ5_1, ggml.TypeQ4_0, ggml.TypeQ4_1,
		ggml.TypeQ4_K, ggml.TypeQ5_K, ggml.TypeQ6_K, ggml.TypeQ3_K, ggml.TypeQ2_K} {
		t.Run(typ.String(), func(t *testing.T) {
			out, rep := convertTo(t, Options{Src: tinySDXL, PhotoMaker: tinyV1, Type: typ, Threads: 3})
			_, got := ggufTensors(t, out)
			quantized := 0
			for name, want := range ref {
				g := got[name]
				require.NotNil(t, g, name)
				st := storedType(t, g)
				f := values[name]
				b, err := g.Bytes()
				require.NoError(t, err)
				ne0 := want.Shape[len(want.Shape)-1]
				require.Equal(t, encodeAs(t, st, f, ne0), b, name)
				if !st.Quantized() {
					require.Contains(t, []ggml.Type{ggml.TypeF32, ggml.TypeF16}, st, name)
					continue
				}
				quantized++
				require.True(t, g.Quantized())
				require.False(t, strings.HasSuffix(name, ".bias") || strings.Contains(name, "norm") ||
					strings.Contains(name, "embedding") || strings.HasPrefix(name, "vae."), "%s must stay float", name)
				require.Zero(t, ne0%st.BlockSize(), name)
				if st != typ {
					require.Equal(t, typ.FitRow(ne0), st, name)
					require.Equal(t, int64(32), st.BlockSize(), "%s: a k-quant's fallback is its 32-block sibling", name)
				}
				deq, err := ggml.Dequantize(st, b, want.Elements())
				require.NoError(t, err)
				gf, err := g.Float32()
				require.NoError(t, err)
				require.Equal(t, deq, gf, name)
			}
			require.Positive(t, quantized)
			if typ.BlockSize() == 256 {
				require.NotEmpty(t, rep.Fallbacks, "the tiny model's 64/128-wide rows need the 32-block fallback")
				require.Positive(t, rep.ByType[typ.String()].Tensors, "the 256-wide rows keep %s", typ)
			} else {
				require.Empty(t, rep.Fallbacks)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	m, err := weights.Open(tinySDXL)
	require.NoError(t, err)
	defer m.Close()
	get := func(n string) *weights.Tensor {
		tt, ok := m.Tensors.Get(n)
		require.True(t, ok, n)
		return tt
	}
	rules, err := ParseRules(`attn1\.to_q\.weight$=q8_0,^te2\.=f32,conv1\.weight=q8_0`)
	require.NoError(t, err)
	for _, tc := range []struct {
		name     string
		typ      ggml.Type
		rules    []Rule
		want     ggml.Type
		fallback bool
	}{
		{"unet.conv_in.bias", ggml.TypeQ4_K, nil, ggml.TypeF32, false},
		{"unet.down_blocks.1.resnets.0.norm1.weight", ggml.TypeF16, nil, ggml.TypeF32, false},
		{"unet.conv_in.weight", ggml.TypeQ4_0, nil, ggml.TypeF16, false},
		{"unet.conv_in.weight", ggml.TypeBF16, nil, ggml.TypeBF16, false},
		{"unet.time_embedding.linear_1.weight", ggml.TypeQ8_0, nil, ggml.TypeF16, false},
		{"unet.add_embedding.linear_2.weight", ggml.TypeBF16, nil, ggml.TypeBF16, false},
		{"te1.text_model.embeddings.token_embedding.weight", ggml.TypeQ4_K, nil, ggml.TypeF16, false},
		{"vae.decoder.conv_in.weight", ggml.TypeF32, nil, ggml.TypeF32, false},
		{"vae.decoder.mid_block.attentions.0.to_q.weight", ggml.TypeQ8_0, nil, ggml.TypeF16, false},
		{"vae.decoder.mid_block.attentions.0.to_q.weight", ggml.TypeBF16, nil, ggml.TypeF16, false},
		{"te1.text_model.encoder.layers.0.mlp.fc1.weight", ggml.TypeQ8_0, nil, ggml.TypeQ8_0, false},
		{"te1.text_model.encoder.layers.0.mlp.fc1.weight", ggml.TypeQ6_K, nil, ggml.TypeQ8_0, true},
		{"te1.text_model.encoder.layers.0.mlp.fc1.weight", ggml.TypeQ5_K, nil, ggml.TypeQ8_0, true},
		{"te1.text_model.encoder.layers.0.mlp.fc1.weight", ggml.TypeQ2_K, nil, ggml.TypeQ4_0, true},
		// user rules: first match wins, override the defaults
		{"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", ggml.TypeQ4_0, rules, ggml.TypeQ8_0, false},
		{"te2.text_model.encoder.layers.0.mlp.fc1.weight", ggml.TypeQ4_0, rules, ggml.TypeF32, false},
		{"unet.down_blocks.0.resnets.0.conv1.weight", ggml.TypeF16, rules, ggml.TypeF16, true},
		{"te2.text_model.embeddings.token_embedding.weight", ggml.TypeQ4_0, rules, ggml.TypeF32, false},
	} {
		c := choose(tc.name, get(tc.name), tc.typ, tc.rules)
		require.Equal(t, tc.want, c.typ, "%s at %s", tc.name, tc.typ)
		require.Equal(t, tc.fallback, c.fallback != "", "%s at %s: %q", tc.name, tc.typ, c.fallback)
	}
	// A quantizing rule never quantizes biases.
	r, err := ParseRules(`.*=q8_0`)
	require.NoError(t, err)
	require.Equal(t, ggml.TypeF32, choose("unet.conv_in.bias", get("unet.conv_in.bias"), ggml.TypeF16, r).typ)
}

func TestParseRules(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{`^unet\.=q8_0`, []string{`^unet\.=q8_0`}, ""},
		{`a=F16, b=q4_k`, []string{`a=f16`, `b=q4_K`}, ""},
		{`x{1,3}=q8_0,y=f32`, []string{`x{1,3}=q8_0`, `y=f32`}, ""},
		{`a==b=f16`, []string{`a==b=f16`}, ""},
		{`unet=q9_X`, nil, "unknown type"},
		{`unet=i32`, nil, "unknown type"},
		{`unet`, nil, "not REGEX=TYPE"},
		{`=f16`, nil, "empty pattern"},
		{`a(=f16`, nil, "missing closing"},
		{`a=f16,`, []string{`a=f16`}, ""},
		{` a=f16 ,, b=f32`, []string{`a=f16`, `b=f32`}, ""},
	} {
		rules, err := ParseRules(tc.in)
		if tc.err != "" {
			require.ErrorIs(t, err, ErrRules, tc.in)
			require.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		var got []string
		for _, r := range rules {
			got = append(got, r.String())
		}
		require.Equal(t, tc.want, got, tc.in)
	}
}

func TestMetadata(t *testing.T) {
	rules, err := ParseRules(`^pm\.=f16,^nomatch=f16`)
	require.NoError(t, err)
	out, rep := convertTo(t, Options{Src: tinySDXL, PhotoMaker: tinyV1, Type: ggml.TypeQ8_0, Rules: rules, LoRAScale: 0.5})
	require.Equal(t, []string{"rule ^nomatch=f16 matched no tensor (photomaker info --tensors lists the names it matches against)"}, rep.Warnings)
	f, err := gguf.Open(out)
	require.NoError(t, err)
	defer f.Close()
	s, _ := f.String("general.architecture")
	require.Equal(t, "photomaker", s)
	v, _ := f.Uint32(weights.KeyFormatVersion)
	require.Equal(t, weights.GGUFFormatVersion, v)
	kinds, _ := f.Strings(weights.KeyKinds)
	require.Equal(t, []string{"sdxl", "photomaker-v1"}, kinds)
	src, _ := f.Strings("photomaker.source.files")
	require.Equal(t, []string{"tiny-sdxl.safetensors", "photomaker-v1-tiny.safetensors"}, src)
	typ, _ := f.String("photomaker.type")
	require.Equal(t, "q8_0", typ)
	r, _ := f.Strings("photomaker.policy.rules")
	require.Equal(t, []string{`^pm\.=f16`, `^nomatch=f16`}, r)
	def, _ := f.Strings("photomaker.policy.default")
	require.Equal(t, DefaultPolicy, def)
	types, _ := f.Strings("photomaker.tensor_types")
	counts, _ := f.Metadata()["photomaker.tensor_counts"].([]uint32)
	require.Len(t, counts, len(types))
	for i, k := range types {
		require.Equal(t, rep.ByType[k].Tensors, int(counts[i]), k)
	}
	merged, _ := f.Bool(weights.KeyLoRAMerged)
	require.True(t, merged)
	scale, _ := f.Float32("photomaker.lora_scale")
	require.Equal(t, float32(0.5), scale)
	for _, ti := range f.Tensors() {
		if strings.HasPrefix(ti.Name, "pm.") && len(ti.Shape) > 1 {
			require.Contains(t, []gguf.Type{gguf.TypeF16}, ti.Type, ti.Name)
		}
	}
}

// An adapter converts alone (LoRA kept unmerged under lora.*), bf16/f32
// sources byte-identical, and the result works as an adapter again.
func TestAdapterAlone(t *testing.T) {
	for _, src := range []string{realV1, tinyV2} {
		t.Run(filepath.Base(src), func(t *testing.T) {
			ref := reference(t, src, "")
			out, rep := convertTo(t, Options{Src: src, Type: ggml.TypeBF16})
			require.Len(t, rep.Kinds, 1)
			m, got := ggufTensors(t, out)
			require.True(t, m.Kind.IsPhotoMaker())
			require.Equal(t, 272, m.LoRA.Len())
			require.Len(t, got, len(ref))
			for name, want := range ref {
				g := got[name]
				require.NotNil(t, g, name)
				require.Equal(t, want.Shape, g.Shape, name)
				f, err := want.Float32()
				require.NoError(t, err)
				b, err := g.Bytes()
				require.NoError(t, err)
				require.Equal(t, encodeAs(t, storedType(t, g), f, 0), b, name)
				if want.DType == safetensors.BF16 || (want.DType == safetensors.F32 && g.DType == safetensors.F32) {
					wb, err := want.Bytes()
					require.NoError(t, err)
					require.Equal(t, wb, b, "%s: same type must copy the bytes", name)
				}
			}
			// SDXL + the converted adapter = SDXL + the original adapter.
			a, err := Convert(context.Background(), Options{Src: tinySDXL, PhotoMaker: out, Type: ggml.TypeF32, Out: filepath.Join(t.TempDir(), "both.gguf")})
			require.NoError(t, err)
			require.Equal(t, 136, a.LoRAMerged)
		})
	}
}

// A GGUF converts again: same type copies bytes, others requantize from
// the dequantized values.
func TestReconvertGGUF(t *testing.T) {
	q8, _ := convertTo(t, Options{Src: tinySDXL, PhotoMaker: tinyV1, Type: ggml.TypeQ8_0})
	again, rep := convertTo(t, Options{Src: q8, Type: ggml.TypeQ8_0})
	require.Equal(t, []string{"sdxl", "photomaker-v1"}, rep.Kinds)
	_, a := ggufTensors(t, q8)
	_, b := ggufTensors(t, again)
	require.Len(t, b, len(a))
	for n, ta := range a {
		ba, err := ta.Bytes()
		require.NoError(t, err)
		bb, err := b[n].Bytes()
		require.NoError(t, err)
		require.Equal(t, ba, bb, n)
	}
	q4, _ := convertTo(t, Options{Src: q8, Type: ggml.TypeQ4_0})
	_, c := ggufTensors(t, q4)
	for n, ta := range a {
		if !ta.Quantized() {
			continue
		}
		f, err := ta.Float32()
		require.NoError(t, err)
		cb, err := c[n].Bytes()
		require.NoError(t, err)
		require.Equal(t, encodeAs(t, ggml.TypeQ4_0, f, ta.Shape[len(ta.Shape)-1]), cb, n)
	}
	_, err := Convert(context.Background(), Options{Src: q8, PhotoMaker: tinyV1, Type: ggml.TypeF16, Out: filepath.Join(t.TempDir(), "x.gguf")})
	require.ErrorContains(t, err, "already holds a PhotoMaker adapter")
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "no output file, temporary or final, may be left")
}

func TestCancelLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Convert(ctx, Options{Src: tinySDXL, Type: ggml.TypeQ4_0, Out: filepath.Join(dir, "out.gguf"),
		Progress: func(done, total int, name string) {
			if done == 5 {
				cancel()
			}
		}})
	require.ErrorIs(t, err, context.Canceled)
	requireEmptyDir(t, dir)
}

func TestBadInputLeavesNoFile(t *testing.T) {
	srcDir := t.TempDir()
	full, err := os.ReadFile(tinySDXL)
	require.NoError(t, err)
	truncated := filepath.Join(srcDir, "truncated.safetensors")
	require.NoError(t, os.WriteFile(truncated, full[:len(full)/2], 0o644))
	garbage := filepath.Join(srcDir, "garbage.safetensors")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not a model file at all"), 0o644))
	q8, _ := convertTo(t, Options{Src: tinySDXL, Type: ggml.TypeQ8_0})
	ggufBytes, err := os.ReadFile(q8)
	require.NoError(t, err)
	truncGGUF := filepath.Join(srcDir, "truncated.gguf")
	require.NoError(t, os.WriteFile(truncGGUF, ggufBytes[:len(ggufBytes)-1000], 0o644))
	empty := filepath.Join(srcDir, "empty.safetensors")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))

	for _, tc := range []struct{ src, adapter, msg string }{
		{truncated, "", "truncated.safetensors"},
		{garbage, "", "unrecognised file format"},
		{truncGGUF, "", "truncated"},
		{empty, "", "empty"},
		{filepath.Join(srcDir, "missing.safetensors"), "", "no such file"},
		{tinySDXL, garbage, "garbage.safetensors"},
		{tinySDXL, tinySDXL, "not a PhotoMaker adapter"},
		{tinyV1, tinyV1, "is a PhotoMaker adapter"},
	} {
		dir := t.TempDir()
		_, err := Convert(context.Background(), Options{Src: tc.src, PhotoMaker: tc.adapter, Type: ggml.TypeQ4_K, Out: filepath.Join(dir, "out.gguf")})
		require.ErrorContains(t, err, tc.msg, tc.src)
		requireEmptyDir(t, dir)
	}
}

func TestOutputChecks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gguf")
	require.NoError(t, os.WriteFile(out, []byte("keep me"), 0o644))
	_, err := Convert(context.Background(), Options{Src: tinyV1, Type: ggml.TypeF16, Out: out})
	require.ErrorIs(t, err, ErrExists)
	b, _ := os.ReadFile(out)
	require.Equal(t, "keep me", string(b))
	_, err = Convert(context.Background(), Options{Src: tinyV1, Type: ggml.TypeF16, Out: out, Overwrite: true})
	require.NoError(t, err)
	m, err := weights.Open(out)
	require.NoError(t, err)
	m.Close()
	_, err = Convert(context.Background(), Options{Src: out, Type: ggml.TypeF16, Out: out, Overwrite: true})
	require.ErrorContains(t, err, "also an input")
	_, err = Convert(context.Background(), Options{Src: tinyV1, Type: ggml.TypeI32, Out: filepath.Join(dir, "x.gguf")})
	require.Error(t, err)
	_, err = ParseType("i32")
	require.Error(t, err)
	for _, typ := range Types {
		p, err := ParseType(strings.ToUpper(typ.String()))
		require.NoError(t, err)
		require.Equal(t, typ, p)
	}
}

// Reading a foreign or damaged GGUF fails with a clear error.
func TestOpenForeignGGUF(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "llama.gguf")
	w, err := gguf.Create(p)
	require.NoError(t, err)
	require.NoError(t, w.SetMetadata("general.architecture", "llama"))
	require.NoError(t, w.AddTensor("token_embd.weight", gguf.TypeF32, []int64{4, 2}))
	require.NoError(t, w.WriteTensorData("token_embd.weight", make([]byte, 32)))
	require.NoError(t, w.Close())
	_, err = weights.Open(p)
	var ue *weights.UnsupportedError
	require.True(t, errors.As(err, &ue), "%v", err)
	require.ErrorContains(t, err, `"llama"`)

	p2 := filepath.Join(dir, "future.gguf")
	w, err = gguf.Create(p2)
	require.NoError(t, err)
	require.NoError(t, w.SetMetadata(weights.KeyArchitecture, weights.GGUFArchitecture))
	require.NoError(t, w.SetMetadata(weights.KeyFormatVersion, uint32(99)))
	require.NoError(t, w.Close())
	_, err = weights.Open(p2)
	require.ErrorContains(t, err, "newer")
}

func TestProgressAndQuantizeThreads(t *testing.T) {
	var calls, last int
	_, rep := convertTo(t, Options{Src: tinyV1, Type: ggml.TypeQ8_0, Progress: func(done, total int, name string) {
		calls++
		require.Equal(t, calls, done)
		require.NotEmpty(t, name)
		last = total
	}})
	require.Equal(t, rep.Tensors, calls)
	require.Equal(t, rep.Tensors, last)
}
