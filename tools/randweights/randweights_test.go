package randweights

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/models/clip"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/models/vae"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// header reads a safetensors file's tensor names and shapes.
func header(t *testing.T, path string) map[string][]int64 {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]int64{}
	for _, ts := range f.Tensors() {
		out[ts.Name] = ts.Shape
	}
	return out
}

func specMap(specs []Spec, rename func(string) string) map[string][]int64 {
	out := map[string][]int64{}
	for _, s := range specs {
		n := s.Name
		if rename != nil {
			n = rename(n)
		}
		out[n] = s.Shape
	}
	return out
}

// The scaled-down layouts equal the bundled tiny models, which were made by
// the official conversion scripts: same names, same shapes.
func TestTinyLayoutsMatchBundledModels(t *testing.T) {
	// The bundled file was converted without CLIP-L's "text_model." level
	// (both spellings occur in real checkpoints).
	got := specMap(SDXLTensors(TinySDXL()), func(n string) string {
		return strings.Replace(n, PrefixTE1, "conditioner.embedders.0.transformer.", 1)
	})
	require.Equal(t, header(t, golden.Path("tiny-sdxl.safetensors")), got)
	for _, v := range []int{1, 2} {
		got := specMap(PhotoMakerTensors(TinyPhotoMaker(v)), nil)
		want := header(t, golden.Path(fmt.Sprintf("photomaker/photomaker-v%d-tiny.safetensors", v)))
		require.Equal(t, want, got, "v%d", v)
	}
}

// The full-size layout has the real SDXL base 1.0 parameter counts.
func TestFullSizeParameterCounts(t *testing.T) {
	specs := SDXLTensors(DefaultSDXL())
	require.EqualValues(t, 2_567_463_684, Params(specs, PrefixUNet))
	require.EqualValues(t, 83_653_863, Params(specs, PrefixVAE))
	require.EqualValues(t, 123_060_480, Params(specs, PrefixTE1))
	require.EqualValues(t, 694_659_840, Params(specs, PrefixTE2))
	names := map[string]bool{}
	for _, s := range specs {
		require.False(t, names[s.Name], "duplicate %s", s.Name)
		names[s.Name] = true
	}
	pm1 := PhotoMakerTensors(DefaultPhotoMaker(1))
	pm2 := PhotoMakerTensors(DefaultPhotoMaker(2))
	// CLIP ViT-L/14 vision tower: 303,179,776 parameters (without its 1024→768 projection).
	require.EqualValues(t, 303_179_776, Params(pm1, "id_encoder.vision_model."))
	require.Equal(t, Params(pm1, "lora_weights."), Params(pm2, "lora_weights."))
	require.Len(t, filter(pm1, "lora_weights."), 70*2*4*2) // 70 transformer blocks
	t.Logf("params: UNet %d, VAE %d, TE1 %d, TE2 %d; PhotoMaker v1 %d (LoRA %d), v2 %d (perceiver %d)",
		Params(specs, PrefixUNet), Params(specs, PrefixVAE), Params(specs, PrefixTE1), Params(specs, PrefixTE2),
		Params(pm1, ""), Params(pm1, "lora_weights."), Params(pm2, ""), Params(pm2, "id_encoder.qformer_perceiver."))
}

func filter(specs []Spec, prefix string) []Spec {
	var out []Spec
	for _, s := range specs {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// writeSparse writes specs' header and leaves the data a hole: a
// full-size file that costs no disk and no time (all values zero).
func writeSparse(t *testing.T, path string, specs []Spec) {
	t.Helper()
	hdr := map[string]any{}
	var off int64
	for _, s := range specs {
		n := 2 * s.Elements()
		hdr[s.Name] = map[string]any{"dtype": "F16", "shape": s.Shape, "data_offsets": [2]int64{off, off + n}}
		off += n
	}
	b, err := json.Marshal(hdr)
	require.NoError(t, err)
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, binary.Write(f, binary.LittleEndian, uint64(len(b))))
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(int64(8+len(b))+off))
}

// The full-size layouts open as what they claim, with no unknown tensor,
// and the model code infers the real SDXL / PhotoMaker architecture.
func TestFullSizeLayoutsOpen(t *testing.T) {
	dir := t.TempDir()
	sdxlPath := filepath.Join(dir, "sdxl.safetensors")
	writeSparse(t, sdxlPath, SDXLTensors(DefaultSDXL()))
	m, err := weights.Open(sdxlPath)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, weights.SDXLSingleFile, m.Kind)
	require.Empty(t, m.Warnings)

	cfg, err := unet.Infer(m.Tensors, "unet.")
	require.NoError(t, err)
	require.Equal(t, []int{320, 640, 1280}, cfg.BlockOutChannels)
	require.Equal(t, [][]int{nil, {2, 2}, {10, 10}}, cfg.DownDepth)
	require.Equal(t, []int{10}, cfg.MidDepth)
	require.Equal(t, [][]int{{10, 10, 10}, {2, 2, 2}, nil}, cfg.UpDepth)
	require.Equal(t, 2048, cfg.CrossAttentionDim)
	require.Equal(t, 2816, cfg.AddEmbedInDim)
	require.Equal(t, 320, cfg.TimeProjDim)
	require.Equal(t, 1280, cfg.TimeEmbedDim)

	w := nn.NewWeights(m.Tensors.Len(), nil)
	defer w.Free()
	te1, err := clip.BindText(w, m.Tensors, "te1.", clip.TextConfig{})
	require.NoError(t, err)
	require.Equal(t, clip.TextParams{Vocab: 49408, Positions: 77, Hidden: 768, Heads: 12, Layers: 12, Intermediate: 3072}, te1.Params)
	te2, err := clip.BindText(w, m.Tensors, "te2.", clip.TextConfig{})
	require.NoError(t, err)
	require.Equal(t, clip.TextParams{Vocab: 49408, Positions: 77, Hidden: 1280, Heads: 20, Layers: 32, Intermediate: 5120, Projection: 1280}, te2.Params)

	// The VAE is small enough to load for real (f16, zeros from the hole).
	rt, err := nn.NewRuntime("cpu", 0)
	require.NoError(t, err)
	defer rt.Close()
	v, err := vae.Load(context.Background(), rt, m.Tensors, "vae.", func(string, *weights.Tensor) ggml.Type { return ggml.TypeF16 })
	require.NoError(t, err)
	require.Equal(t, []int{128, 256, 512, 512}, v.Config.BlockOutChannels)
	require.True(t, v.Config.Encoder)
	v.Close()

	for _, version := range []int{1, 2} {
		path := filepath.Join(dir, fmt.Sprintf("pm-v%d.safetensors", version))
		writeSparse(t, path, PhotoMakerTensors(DefaultPhotoMaker(version)))
		pm, err := weights.Open(path)
		require.NoError(t, err)
		require.Equal(t, map[int]weights.Kind{1: weights.PhotoMakerV1, 2: weights.PhotoMakerV2}[version], pm.Kind)
		require.Empty(t, pm.Warnings)
		ver, err := photomaker.DetectVersion(pm.Tensors, "pm.")
		require.NoError(t, err)
		require.Equal(t, map[int]photomaker.Version{1: photomaker.V1, 2: photomaker.V2}[version], ver)
		pw := nn.NewWeights(pm.Tensors.Len(), nil)
		vm, err := clip.BindVision(pw, pm.Tensors, "pm.", clip.VisionConfig{})
		require.NoError(t, err)
		require.Equal(t, 1024, vm.Params.Hidden)
		require.Equal(t, 16, vm.Params.Heads)
		require.Equal(t, 24, vm.Params.Layers)
		require.Equal(t, 768, vm.Params.Projection)
		require.Equal(t, 1280, vm.Params.Projection2)
		if version == 2 {
			q, err := photomaker.BindPerceiver(pw, pm.Tensors, "pm.qformer_perceiver.", photomaker.PerceiverConfig{})
			require.NoError(t, err)
			require.Equal(t, 2048, q.Params.Dim)
			require.Equal(t, 16, q.Params.Heads)
			require.Equal(t, 4, q.Params.Depth)
			require.Equal(t, 1024, q.Params.Embedding)
		}
		pw.Free()
		// Every LoRA pair targets a UNet weight of the full-size SDXL.
		patches, err := weights.ResolveLoRA(m.Tensors, pm.LoRA)
		require.NoError(t, err)
		require.Len(t, patches, 70*8)
		require.NoError(t, pm.Close())
	}
}

func solid(c color.RGBA) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, 255
	}
	return img
}

// A scaled-down random SDXL and adapters load through the public API and
// generate (one step, 64×64) with finite output.
func TestTinyRoundTripGenerates(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "sdxl.safetensors")
	require.NoError(t, WriteSDXL(t.Context(), model, 1, TinySDXL()))
	m, err := weights.Open(model)
	require.NoError(t, err)
	require.Equal(t, weights.SDXLSingleFile, m.Kind)
	require.Empty(t, m.Warnings)
	cfg, err := unet.Infer(m.Tensors, "unet.")
	require.NoError(t, err)
	require.Equal(t, []int{32, 64, 128}, cfg.BlockOutChannels)
	require.NoError(t, m.Close())

	for _, version := range []int{1, 2} {
		adapter := filepath.Join(dir, fmt.Sprintf("pm-v%d.safetensors", version))
		require.NoError(t, WritePhotoMakerConfig(t.Context(), adapter, 2, TinyPhotoMaker(version)))
		p, err := photomaker.Load(context.Background(), photomaker.Config{Model: model, PhotoMaker: adapter, Device: "cpu", WeightType: "f16"})
		require.NoError(t, err)
		req := photomaker.Request{Prompt: "a photo of a man img", Width: 64, Height: 64, Steps: 1, Seed: 3, Guidance: 1,
			IDImages: []image.Image{solid(color.RGBA{200, 150, 120, 255}), solid(color.RGBA{90, 90, 90, 255})}}
		if version == 2 {
			req.IDEmbeds = [][]float32{make([]float32, 512), make([]float32, 512)}
		}
		var last photomaker.Progress
		req.Progress = func(ev photomaker.Progress) { last = ev }
		res, err := p.Generate(context.Background(), req)
		require.NoError(t, err)
		require.Equal(t, photomaker.Progress{Stage: "decode", Done: 1, Total: 1}, last)
		require.Len(t, res.Images, 1)
		require.Equal(t, image.Rect(0, 0, 64, 64), res.Images[0].Bounds())
		require.NoError(t, p.Close())
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	cfg := TinyPhotoMaker(2)
	require.NoError(t, WritePhotoMakerConfig(t.Context(), a, 7, cfg))
	require.NoError(t, WritePhotoMakerConfig(t.Context(), b, 7, cfg))
	require.NoError(t, WritePhotoMakerConfig(t.Context(), c, 8, cfg))
	require.Equal(t, fileHash(t, a), fileHash(t, b))
	require.NotEqual(t, fileHash(t, a), fileHash(t, c))

	// The values themselves are pinned: a change of generator changes
	// every cached random model and must be deliberate.
	s := Spec{Name: "x.weight", Shape: []int64{3, chunk + 5}, Init: Normal, Scale: Std}
	sum := sha256.Sum256(Generate(s, 42))
	require.Equal(t, "4cd9dd5a03ec4c8f", hex.EncodeToString(sum[:8]))
	s.Init, s.Scale = Uniform, 0.03
	sum = sha256.Sum256(Generate(s, 42))
	require.Equal(t, "6e58c5330c7716f6", hex.EncodeToString(sum[:8]))
}

func TestValuesLookUniform(t *testing.T) {
	const bound = 0.03
	v := make([]float32, 1<<21)
	half.DecodeF16(v, Generate(Spec{Name: "w", Shape: []int64{int64(len(v))}, Init: Uniform, Scale: bound}, 1))
	var sum, sq float64
	var hist [10]int
	for _, x := range v {
		require.Less(t, math.Abs(float64(x)), bound*(1+1e-3)) // fp16 rounding
		sum += float64(x)
		sq += float64(x) * float64(x)
		hist[min(9, int((float64(x)+bound)/(2*bound)*10))]++
	}
	n := float64(len(v))
	require.InDelta(t, 0, sum/n, 1e-4)
	require.InDelta(t, bound/math.Sqrt(3), math.Sqrt(sq/n), 1e-4)
	for i, c := range hist {
		require.InDelta(t, n/10, float64(c), n/10*0.01, "decile %d", i)
	}
}

// kitStats summarises a tensor's values: RMS, and whether they look
// uniform (peak/RMS near √3) or bell-shaped (well above).
func kitStats(v []float32) (rms float64, uniform bool) {
	var sq, peak float64
	for _, x := range v {
		sq += float64(x) * float64(x)
		peak = math.Max(peak, math.Abs(float64(x)))
	}
	rms = math.Sqrt(sq / float64(len(v)))
	return rms, rms > 0 && peak/rms < 2
}

// The generator initialises every tensor the way the reference kit's random
// models were initialised by diffusers and transformers: per tensor, the
// same distribution family and the same scale (within sampling noise), on
// the bundled tiny models, whose sizes the tiny configurations reproduce.
// The kit's PhotoMaker LoRA is random by its own recipe and not compared.
func TestInitialisationMatchesReferenceModels(t *testing.T) {
	cases := []struct {
		file   string
		specs  []Spec
		rename func(string) string
	}{
		{"tiny-sdxl.safetensors", SDXLTensors(TinySDXL()), func(n string) string {
			return strings.Replace(n, PrefixTE1, "conditioner.embedders.0.transformer.", 1)
		}},
		{"photomaker/photomaker-v1-tiny.safetensors", PhotoMakerTensors(TinyPhotoMaker(1)), nil},
		{"photomaker/photomaker-v2-tiny.safetensors", PhotoMakerTensors(TinyPhotoMaker(2)), nil},
	}
	for _, tc := range cases {
		f, err := safetensors.Open(golden.Path(tc.file))
		require.NoError(t, err)
		compared := 0
		for _, s := range tc.specs {
			name := s.Name
			if tc.rename != nil {
				name = tc.rename(name)
			}
			if strings.HasPrefix(name, "lora_weights.") {
				continue
			}
			want, err := f.Float32(name)
			require.NoError(t, err)
			got := make([]float32, s.Elements())
			half.DecodeF16(got, Generate(s, 1))
			wantRMS, wantUniform := kitStats(want)
			gotRMS, gotUniform := kitStats(got)
			if wantRMS == 0 || len(want) < 256 { // zeros, or too few values to tell the family
				require.True(t, gotRMS >= wantRMS/2 && gotRMS <= 2*wantRMS, "%s: %s: RMS %g, kit %g", tc.file, name, gotRMS, wantRMS)
				continue
			}
			require.Equal(t, wantUniform, gotUniform, "%s: %s: distribution family", tc.file, name)
			require.InDelta(t, wantRMS, gotRMS, 0.1*wantRMS, "%s: %s: scale", tc.file, name)
			compared++
		}
		require.NoError(t, f.Close())
		require.Greater(t, compared, 20, tc.file)
	}
}

func TestValuesLookNormal(t *testing.T) {
	s := Spec{Name: "w", Shape: []int64{1 << 21}, Init: Normal, Scale: Std}
	b := Generate(s, 1)
	v := make([]float32, s.Elements())
	half.DecodeF16(v, b)
	var sum, sq float64
	maxAbs := 0.0
	for _, x := range v {
		sum += float64(x)
		sq += float64(x) * float64(x)
		maxAbs = math.Max(maxAbs, math.Abs(float64(x)))
	}
	n := float64(len(v))
	mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
	require.InDelta(t, 0, mean, 1e-4)
	require.InDelta(t, Std, std, 2e-4)
	require.LessOrEqual(t, maxAbs, 3.47*Std)
	require.Greater(t, maxAbs, 3*Std)

	ones := Generate(Spec{Name: "n.weight", Shape: []int64{4}, Init: Ones}, 1)
	f := make([]float32, 4)
	half.DecodeF16(f, ones)
	require.Equal(t, []float32{1, 1, 1, 1}, f)
	require.True(t, slices.Equal(make([]byte, 8), Generate(Spec{Name: "b", Shape: []int64{4}, Init: Zeros}, 1)))
}

// A canceled context stops the writer between tensors and leaves no file
// (bench --random interrupted while writing 7.6 GB).
func TestWriteStopsWhenCanceled(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sdxl.safetensors")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := WriteSDXL(ctx, path, 1, TinySDXL())
	require.ErrorIs(t, err, context.Canceled)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "no file, no temporary file")
}
