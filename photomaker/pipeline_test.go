package photomaker

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

func loadTiny(t *testing.T, adapter string) *Pipeline {
	t.Helper()
	return loadTinyWith(t, adapter, nil)
}

// loadTinyWith is loadTiny with the config edited by edit (may be nil).
func loadTinyWith(t *testing.T, adapter string, edit func(*Config)) *Pipeline {
	t.Helper()
	cfg := Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", WeightType: "f32"}
	if adapter != "" {
		cfg.PhotoMaker = golden.Path(adapter)
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := Load(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func pixels(img image.Image) []uint8 {
	b := img.Bounds()
	var out []uint8
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			out = append(out, uint8(r>>8), uint8(g>>8), uint8(bb>>8))
		}
	}
	return out
}

func TestTextToImageSeeds(t *testing.T) {
	p := loadTiny(t, "")
	req := Request{Prompt: "a photo of a cat", Width: 64, Height: 64, Steps: 2, Seed: 7, RNG: "torch-cpu"}
	a, err := p.Generate(context.Background(), req)
	require.NoError(t, err)
	require.Len(t, a.Images, 1)
	require.Equal(t, image.Rect(0, 0, 64, 64), a.Images[0].Bounds())
	b, err := p.Generate(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, pixels(a.Images[0]), pixels(b.Images[0]), "same seed, same image")
	req.Seed = 8
	c, err := p.Generate(context.Background(), req)
	require.NoError(t, err)
	require.NotEqual(t, pixels(a.Images[0]), pixels(c.Images[0]), "another seed, another image")
}

func TestBadRequests(t *testing.T) {
	p := loadTiny(t, "")
	for _, r := range []Request{
		{Prompt: "x", Width: 60, Height: 64, Steps: 1},
		{Prompt: "x", Width: 64, Height: 64, Steps: -1},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, Sampler: "plms"},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, RNG: "dice"},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, N: -2},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, IDImages: []image.Image{image.NewRGBA(image.Rect(0, 0, 8, 8))}},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, Guidance: math.NaN()},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, Guidance: math.Inf(1)},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, Guidance: 1e300},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, StyleStrength: math.NaN()},
		{Prompt: "x", Width: 64, Height: 64, Steps: 1, StyleStrength: -5},
	} {
		_, err := p.Generate(context.Background(), r)
		require.ErrorIs(t, err, ErrInvalidRequest, "%+v", r)
	}
	// Latents that turn NaN (damaged weights, an absurd LoRA scale) give
	// an error, not a black image.
	nan := make([]float32, 4*8*8)
	nan[5] = float32(math.NaN())
	_, err := p.Generate(context.Background(), Request{Prompt: "x", Width: 64, Height: 64, Steps: 1, InitialLatents: nan})
	require.ErrorIs(t, err, ErrNotFinite)
}

// Zero guidance and style strength mean the defaults; NoGuidance and
// NoStyleDelay ask for no guidance and a style strength of 0 %.
func TestRequestDefaultsAndExplicitZeros(t *testing.T) {
	r := Request{Prompt: "x", Steps: 10}
	require.NoError(t, r.fill())
	require.Equal(t, DefaultGuidance, r.Guidance)
	require.Equal(t, DefaultStyleStrength, r.StyleStrength)
	require.Equal(t, 2, r.StartMergeStep())
	r = Request{Prompt: "x", Steps: 10, Sampler: " EULER_a ", RNG: "TORCH-CPU"}
	require.NoError(t, r.fill())
	require.Equal(t, "euler_a", r.Sampler)
	require.Equal(t, "torch-cpu", r.RNG)
	r = Request{Prompt: "x", Steps: 10, Guidance: NoGuidance, StyleStrength: NoStyleDelay}
	require.NoError(t, r.fill())
	require.Equal(t, 0.0, r.Guidance)
	require.Equal(t, 0.0, r.StyleStrength)
	require.Equal(t, 0, r.StartMergeStep())
	// Karras sigmas are named where the sampler takes them.
	for sampler, want := range map[string]string{"euler": "Sampler: euler karras,", "dpmpp_2m": "Sampler: dpmpp_2m karras,", "ddim": "Sampler: ddim,", "euler_a": "Sampler: euler_a,"} {
		require.Contains(t, (&Request{Sampler: sampler, Karras: true}).Parameters(), want)
	}
}

func TestCancel(t *testing.T) {
	p := loadTiny(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Generate(ctx, Request{Prompt: "x", Width: 64, Height: 64, Steps: 3})
	require.ErrorIs(t, err, context.Canceled)
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(context.Background(), Config{})
	require.ErrorContains(t, err, "no model")
	_, err = Load(context.Background(), Config{Model: golden.Path("photomaker/photomaker-v1-tiny.safetensors"), Device: "cpu"})
	require.ErrorContains(t, err, "PhotoMaker adapter, not an SDXL checkpoint")
	_, err = Load(context.Background(), Config{Model: golden.Path("tiny-sdxl.safetensors"), PhotoMaker: golden.Path("tiny-sdxl.safetensors"), Device: "cpu"})
	require.ErrorContains(t, err, "not a PhotoMaker adapter")
}

// Concurrent callers are serialized on one pipeline and get the same images
// as sequential calls; Close waits for a running generation.
func TestConcurrentCallers(t *testing.T) {
	p := loadTiny(t, "")
	req := Request{Prompt: "a photo of a cat", Width: 64, Height: 64, Steps: 2, Seed: 3, RNG: "torch-cpu"}
	want, err := p.Generate(context.Background(), req)
	require.NoError(t, err)
	errs := make(chan error, 4)
	imgs := make(chan image.Image, 4)
	for i := 0; i < 4; i++ {
		go func() {
			r, err := p.Generate(context.Background(), req)
			if err == nil {
				imgs <- r.Images[0]
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		require.NoError(t, <-errs)
		require.Equal(t, pixels(want.Images[0]), pixels(<-imgs))
	}
	require.NoError(t, p.Close())
	_, err = p.Generate(context.Background(), req)
	require.ErrorIs(t, err, ErrClosed)
}

func TestV2NeedsOneEmbeddingPerPhoto(t *testing.T) {
	p := loadTiny(t, "photomaker/photomaker-v2-tiny.safetensors")
	photos := []image.Image{image.NewRGBA(image.Rect(0, 0, 32, 32)), image.NewRGBA(image.Rect(0, 0, 32, 32))}
	base := Request{Prompt: "a photo of a man img", Width: 64, Height: 64, Steps: 1, IDImages: photos}
	_, err := p.Generate(context.Background(), base)
	require.ErrorIs(t, err, ErrInvalidRequest)
	require.ErrorContains(t, err, "face embedding per ID photo")
	base.IDEmbeds = [][]float32{make([]float32, 512)}
	_, err = p.Generate(context.Background(), base)
	require.ErrorContains(t, err, "1 face embeddings for 2 ID photos")
	base.IDEmbeds = append(base.IDEmbeds, make([]float32, 512))
	_, err = p.Generate(context.Background(), base)
	require.NoError(t, err)
}

// Empty and punctuation-only prompts are valid (diffusers encodes them);
// a checkpoint without a VAE is refused at load, naming what is missing.
func TestOddPromptsAndIncompleteCheckpoint(t *testing.T) {
	p := loadTiny(t, "")
	for _, prompt := range []string{"", "!!! ,,, ..."} {
		_, err := p.Generate(context.Background(), Request{Prompt: prompt, Width: 64, Height: 64, Steps: 1})
		require.NoError(t, err, "%q", prompt)
	}
	src, err := safetensors.Open(golden.Path("tiny-sdxl.safetensors"))
	require.NoError(t, err)
	defer src.Close()
	var entries []safetensors.Entry
	for _, tt := range src.Tensors() {
		if strings.HasPrefix(tt.Name, "first_stage_model.") {
			continue
		}
		name := tt.Name
		entries = append(entries, safetensors.Entry{Name: name, DType: tt.DType, Shape: tt.Shape, Data: func() ([]byte, error) { return src.Bytes(name) }})
	}
	noVAE := filepath.Join(t.TempDir(), "no-vae.safetensors")
	require.NoError(t, safetensors.Write(noVAE, entries, nil))
	_, err = Load(context.Background(), Config{Model: noVAE, Device: "cpu"})
	require.Error(t, err)
	require.ErrorContains(t, err, "vae")
}

// Tiled VAE decoding (memory mode) yields an image of the same size that
// stays close to the whole decode (GroupNorm statistics are per tile, so it
// cannot be exact on this random model).
func TestTiledDecode(t *testing.T) {
	whole := loadTiny(t, "")
	cfg := Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", WeightType: "f32", VAETile: 8}
	tiled, err := Load(context.Background(), cfg)
	require.NoError(t, err)
	defer tiled.Close()
	req := Request{Prompt: "a cat", Width: 128, Height: 128, Steps: 1, Seed: 5}
	a, err := whole.Generate(context.Background(), req)
	require.NoError(t, err)
	b, err := tiled.Generate(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, a.Images[0].Bounds(), b.Images[0].Bounds())
	pa, pb := pixels(a.Images[0]), pixels(b.Images[0])
	var diff float64
	for i := range pa {
		diff += math.Abs(float64(pa[i]) - float64(pb[i]))
	}
	mean := diff / float64(len(pa))
	t.Logf("tiled vs whole decode: mean abs difference %.2f levels", mean)
	require.NotEqual(t, pa, pb, "tiling was used")
	require.Less(t, mean, 40.0)
}

// Low-VRAM mode puts the encoders on a CPU runtime of their own; the
// result is the same image.
func TestEncodersOnCPU(t *testing.T) {
	a := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	b, err := Load(context.Background(), Config{Model: golden.Path("tiny-sdxl.safetensors"),
		PhotoMaker: golden.Path("photomaker/photomaker-v1-tiny.safetensors"), Device: "cpu", WeightType: "f32", EncodersOnCPU: true})
	require.NoError(t, err)
	defer b.Close()
	require.NotSame(t, b.rt, b.encRT)
	req := Request{Prompt: "a photo of a man img", Width: 64, Height: 64, Steps: 2, Seed: 9,
		IDImages: []image.Image{face(t, "astronaut_0.png")}}
	ra, err := a.Generate(context.Background(), req)
	require.NoError(t, err)
	rb, err := b.Generate(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, pixels(ra.Images[0]), pixels(rb.Images[0]))
}

// The demo's aspect presets (e.g. 1024×680) give latent sides that are not
// multiples of the UNet's downscale; they work as in diffusers.
func TestNonSquareOddLatents(t *testing.T) {
	p := loadTiny(t, "")
	res, err := p.Generate(context.Background(), Request{Prompt: "a cat", Width: 64, Height: 40, Steps: 1})
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 64, 40), res.Images[0].Bounds())
}

// With no --type, weights keep the checkpoint's own type, and a LoRA merged
// into an f16 weight is stored as f16 again rather than as its f32 result.
func TestDefaultWeightPolicy(t *testing.T) {
	policy, err := weightPolicy("")
	require.NoError(t, err)
	merged := &weights.Tensor{Name: "unet.x.attn1.to_q.weight", DType: "F32", StoredAs: "F16", Shape: []int64{64, 64}}
	require.Equal(t, ggml.TypeF16, policy(merged.Name, merged))
	q := &weights.Tensor{Name: "unet.x.proj.weight", DType: "Q4_K", Shape: []int64{256, 256}}
	require.Equal(t, ggml.TypeQ4_K, policy(q.Name, q))
	bias := &weights.Tensor{Name: "unet.x.proj.bias", DType: "F16", Shape: []int64{256}}
	require.Equal(t, ggml.TypeF32, policy(bias.Name, bias))
}

// A community LoRA in kohya format is merged at load: scale 0 changes
// nothing, scale 1 changes the image.
func TestCommunityLoRA(t *testing.T) {
	base := loadTiny(t, "")
	w, _ := base.model.Tensors.Get("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight")
	out, in := w.Shape[0], w.Shape[1]
	const r = 4
	vals := func(n int64, v float32) func() ([]byte, error) {
		return func() ([]byte, error) {
			x := make([]float32, n)
			for i := range x {
				x[i] = v * float32(i%7-3)
			}
			return ggml.F32Bytes(x), nil
		}
	}
	key := "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
	path := filepath.Join(t.TempDir(), "style.safetensors")
	require.NoError(t, safetensors.Write(path, []safetensors.Entry{
		{Name: key + ".lora_down.weight", DType: safetensors.F32, Shape: []int64{r, in}, Data: vals(r*in, 0.05)},
		{Name: key + ".lora_up.weight", DType: safetensors.F32, Shape: []int64{out, r}, Data: vals(out*r, 0.05)},
		{Name: key + ".alpha", DType: safetensors.F32, Shape: []int64{}, Data: func() ([]byte, error) { return ggml.F32Bytes([]float32{r}), nil }},
	}, nil))
	req := Request{Prompt: "a cat", Width: 64, Height: 64, Steps: 2, Seed: 4}
	want, err := base.Generate(context.Background(), req)
	require.NoError(t, err)
	for _, c := range []struct {
		scale float32
		same  bool
	}{{0, true}, {1, false}} {
		p, err := Load(context.Background(), Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", WeightType: "f32",
			LoRAs: []LoRA{{Path: path, Scale: c.scale}}})
		require.NoError(t, err)
		got, err := p.Generate(context.Background(), req)
		require.NoError(t, err)
		p.Close()
		if c.same {
			require.Equal(t, pixels(want.Images[0]), pixels(got.Images[0]))
		} else {
			require.NotEqual(t, pixels(want.Images[0]), pixels(got.Images[0]))
		}
	}
	_, err = Load(context.Background(), Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu",
		LoRAs: []LoRA{{Path: golden.Path("tiny-sdxl.safetensors"), Scale: 1}}})
	require.Error(t, err)
}

// ID photos the encoder cannot take and bad face embeddings are refused
// before any work (they panicked in the resize, or ran out of memory).
func TestBadIDInputs(t *testing.T) {
	face := image.NewRGBA(image.Rect(0, 0, 8, 8))
	var typedNil *image.RGBA
	emb := func(v float32) []float32 { e := make([]float32, 512); e[3] = v; return e }
	for _, tc := range []struct {
		r    Request
		want string
	}{
		{Request{IDImages: []image.Image{nil}}, "ID photo 1: no image (nil)"},
		{Request{IDImages: []image.Image{face, typedNil}}, "ID photo 2: no image (a nil *image.RGBA)"},
		{Request{IDImages: []image.Image{image.NewRGBA(image.Rect(0, 0, 0, 0))}}, "the image is empty (0×0)"},
		{Request{IDImages: []image.Image{image.NewRGBA(image.Rect(0, 0, 1, 17))}}, "1×17 is more than 16 times longer than wide"},
		{Request{IDImages: []image.Image{face}, IDEmbeds: [][]float32{emb(float32(math.NaN()))}}, "face embedding 1 holds NaN"},
		{Request{People: []Person{{Class: "man", Images: []image.Image{face, face}, IDEmbeds: [][]float32{emb(1)}}}}, "1 face embeddings for 2 photos of the man"},
		{Request{People: []Person{{Class: "woman", Images: []image.Image{&image.RGBA{Rect: image.Rectangle{Min: image.Pt(5, 5), Max: image.Pt(4, 9)}}}}}}, "the woman's ID photo 1: the image is empty (-1×4)"},
		{Request{IDImages: []image.Image{image.NewUniform(color.White)}}, "is too large a photo"}, // the whole plane
	} {
		tc.r.Prompt = "x"
		err := tc.r.fill()
		require.ErrorIs(t, err, ErrInvalidRequest, tc.want)
		require.ErrorIs(t, err, ErrIDInput, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
	ok := Request{Prompt: "x", IDImages: []image.Image{image.NewRGBA(image.Rect(3, 3, 19, 259))}} // 16:1, off the origin
	require.NoError(t, ok.fill())
}

// Config values that would abort ggml or fail every Generate are refused
// by Load; Kind and Device answer after Close.
func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.WeightType = "i32" }, `weight type "i32"`},
		{func(c *Config) { c.Threads = -3 }, "Threads must not be negative"},
		{func(c *Config) { c.VAETile = 1 }, "VAETile must be -1"},
		{func(c *Config) { c.VAETile, c.Threads = -5, runtime.NumCPU()+1 }, "VAETile must be -1"}, // past the threads' clamp
	} {
		cfg := Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu"}
		tc.edit(&cfg)
		_, err := Load(context.Background(), cfg)
		require.ErrorContains(t, err, tc.want)
	}
	p := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	require.NoError(t, p.Close())
	require.Equal(t, "PhotoMaker v1 adapter", p.Kind())
	require.Equal(t, "CPU", p.Device())
	require.Nil(t, p.CPUFallbacks())
}

// Request.TimestepSpacing replaces the model's spacing (leading for SDXL):
// one trailing step denoises from timestep 999 instead of 1, and Result
// reports the spacing used.
func TestTimestepSpacing(t *testing.T) {
	p := loadTiny(t, "")
	req := Request{Prompt: "a photo of a cat", Width: 64, Height: 64, Steps: 1, Seed: 3}
	leading, err := p.Generate(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, "leading", leading.Request.TimestepSpacing)
	req.TimestepSpacing = " Trailing "
	trailing, err := p.Generate(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, "trailing", trailing.Request.TimestepSpacing)
	require.Contains(t, trailing.Request.Parameters(), ", Timestep spacing: trailing")
	require.NotEqual(t, leading.Images[0], trailing.Images[0])
	req.TimestepSpacing = "spread"
	_, err = p.Generate(t.Context(), req)
	require.ErrorIs(t, err, ErrInvalidRequest)
	require.ErrorContains(t, err, `unknown timestep spacing "spread" (want leading, linspace, trailing)`)

	// Config.TimestepSpacing is the default of a pipeline's requests.
	q := loadTinyWith(t, "", func(c *Config) { c.TimestepSpacing = "TRAILING" })
	req.TimestepSpacing = ""
	res, err := q.Generate(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, "trailing", res.Request.TimestepSpacing)
	require.Equal(t, trailing.Images[0], res.Images[0])
	req.TimestepSpacing = "leading"
	res, err = q.Generate(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, leading.Images[0], res.Images[0], "a request's own spacing wins")
	_, err = Load(t.Context(), Config{Model: golden.Path("tiny-sdxl.safetensors"), Device: "cpu", TimestepSpacing: "spread"})
	require.ErrorContains(t, err, `Config.TimestepSpacing: unknown timestep spacing "spread" (want leading, linspace, trailing)`)
}

// A Generate waiting for another returns when its context ends, as a
// canceled computation does; the running one goes on.
func TestWaitingGenerateHonorsContext(t *testing.T) {
	p := loadTiny(t, "")
	running := make(chan struct{})
	var once sync.Once
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	doneA := make(chan error, 1)
	go func() {
		_, err := p.Generate(ctxA, Request{Prompt: "a lighthouse", Width: 32, Height: 32, Steps: 1000, Guidance: NoGuidance,
			Progress: func(ev Progress) {
				if ev.Stage == "denoise" {
					once.Do(func() { close(running) })
				}
			}})
		doneA <- err
	}()
	<-running
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Generate(ctx, Request{Prompt: "a cat", Width: 32, Height: 32, Steps: 1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ggml.ErrCanceled)
	require.Less(t, time.Since(start), 5*time.Second, "it did not wait for the running one")
	select {
	case err := <-doneA:
		t.Fatalf("the running Generate ended: %v", err)
	default:
	}
	cancelA()
	require.ErrorIs(t, <-doneA, context.Canceled)
}

// Generate's errors about the trigger words and the ID inputs match their
// kind (ErrIDPrompt, ErrIDInput) as well as ErrInvalidRequest.
func TestIDErrorKinds(t *testing.T) {
	p := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	face := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for _, tc := range []struct {
		r    Request
		kind error
		msg  string
	}{
		{Request{Prompt: "a photo of a man", IDImages: []image.Image{face}}, ErrIDPrompt, "trigger word"},
		{Request{Prompt: "img, a photo of a man img", IDImages: []image.Image{face}}, ErrIDPrompt, "img"},
		{Request{Prompt: "a man img and a woman img", People: []Person{{Class: "man", Images: []image.Image{face}}, {Class: "dog", Images: []image.Image{face}}}},
			ErrIDPrompt, `"dog img" exactly once`},
		{Request{Prompt: "a photo of a man img", IDImages: []image.Image{face}, IDEmbeds: [][]float32{make([]float32, 512)}}, ErrIDInput, "v1 takes no face embeddings"},
		{Request{Prompt: "a man img and a woman img", People: []Person{{Class: "man", Images: []image.Image{face}}, {Class: "woman"}}}, ErrIDInput, "at least one ID photo of each person"},
	} {
		tc.r.Width, tc.r.Height, tc.r.Steps = 32, 32, 1
		_, err := p.Generate(t.Context(), tc.r)
		require.ErrorIs(t, err, ErrInvalidRequest, tc.msg)
		require.ErrorIs(t, err, tc.kind, tc.msg)
		require.ErrorContains(t, err, tc.msg)
		require.True(t, strings.HasPrefix(err.Error(), "invalid request: "), err.Error())
	}
}

// A literal prompt longer than CLIP's 75 tokens is cut, as in diffusers,
// and the log says what was left out.
func TestLongPromptWarns(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	defer slog.SetDefault(old)
	warnLongPrompt("prompt", strings.Repeat("beautiful ", 75)+"lighthouse at dusk")
	require.Contains(t, logs.String(), `the prompt is 78 tokens long; the text encoders read 75, so the rest is left out: \"lighthouse at dusk\"`)
	logs.Reset()
	warnLongPrompt("negative prompt", strings.Repeat("blurry ", 75))
	require.Empty(t, logs.String())
}
