package main

import (
	"encoding/json"
	"fmt"
	"image"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/pngtext"
	"github.com/gophotomaker/photomaker/photomaker"
)

func init() { register(generateCommand) }

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "generate images from a prompt (and, with --photomaker, ID photos of a person)",
		Description: `Plain SDXL:
  photomaker generate --model sdxl.safetensors --prompt "a lighthouse at dusk" -o lighthouse.png

PhotoMaker (the trigger word follows the class word):
  photomaker generate --model RealVisXL_V4.safetensors --photomaker photomaker-v1.bin \
    --id-image me1.jpg --id-image me2.jpg --style photographic \
    --prompt "a photo of a man img, wearing a spacesuit" -o astronaut.png

The parts load one at a time: the text and ID encoders, then the UNet once
they are freed, and the UNet is freed before the VAE decodes, so the peak
memory is the largest part's. 'photomaker info --type T MODEL' estimates it.

Every flag also reads PHOTOMAKER_<FLAG> (e.g. PHOTOMAKER_MODEL); a repeatable
flag's variable holds one value (PHOTOMAKER_ID_IMAGE: one photo).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Value: "sdxl", Usage: "SDXL checkpoint: single-file .safetensors/.ckpt, diffusers folder, .gguf, or a name pulled with 'photomaker pull' (sdxl, realvisxl-v4)", EnvVars: envs("model")},
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "prompt (literal text, as diffusers)", EnvVars: envs("prompt"), Required: true},
			&cli.StringFlag{Name: "prompt-weighting", Usage: "none (literal text, as diffusers) or a1111 for (word:1.2) emphasis", EnvVars: envs("prompt-weighting")},
			&cli.StringFlag{Name: "negative-prompt", Usage: "negative prompt (empty: zeros, as diffusers; @demo: the official demo's negative prompt)", EnvVars: envs("negative-prompt")},
			&cli.IntFlag{Name: "width", Value: 1024, Usage: "width in pixels, a multiple of 8", EnvVars: envs("width")},
			&cli.IntFlag{Name: "height", Value: 1024, Usage: "height in pixels, a multiple of 8", EnvVars: envs("height")},
			&cli.StringFlag{Name: "aspect", Usage: "one of the demo's size presets by ratio (1:1, 3:2, 2:3, 4:3, 3:4, 16:9, 9:16, ...); overrides --width/--height", EnvVars: envs("aspect")},
			&cli.IntFlag{Name: "steps", Value: photomaker.DefaultSteps, Usage: "denoising steps", EnvVars: envs("steps")},
			&cli.Float64Flag{Name: "guidance", Value: photomaker.DefaultGuidance, Usage: "classifier-free guidance scale, 0 to 50; 0 (or any value up to 1) turns guidance off", EnvVars: envs("guidance")},
			&cli.StringFlag{Name: "sampler", Value: photomaker.DefaultSampler, Usage: "euler, euler_a, dpmpp_2m or ddim (diffusers semantics)", EnvVars: envs("sampler")},
			&cli.StringFlag{Name: "scheduler", Value: "default", Usage: "default (the sampler's diffusers default) or karras", EnvVars: envs("scheduler")},
			timestepSpacingFlag(),
			&cli.Int64Flag{Name: "seed", Value: 42, Usage: "random seed; any negative value (e.g. -1) picks one (and prints it)", EnvVars: envs("seed")},
			&cli.StringFlag{Name: "rng", Value: photomaker.DefaultRNG, Usage: "torch-cuda (same noise as PyTorch on NVIDIA GPUs) or torch-cpu", EnvVars: envs("rng")},
			&cli.IntFlag{Name: "n", Value: 1, Usage: "images to generate", EnvVars: envs("n")},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "photomaker.png", Usage: "output PNG; with --n > 1: NAME-1.png, NAME-2.png, ...", EnvVars: envs("output")},
			&cli.BoolFlag{Name: "force", Usage: "overwrite existing output files", EnvVars: envs("force")},
			&cli.StringFlag{Name: "photomaker", Usage: "PhotoMaker adapter: official .bin, .safetensors or .gguf (v1/v2 detected from the tensors), or photomaker-v1/photomaker-v2 once pulled", EnvVars: envs("photomaker")},
			&cli.StringSliceFlag{Name: "lora", Usage: "community LoRA (kohya or diffusers/PEFT .safetensors) merged at load, as FILE or FILE:SCALE (default scale 1, at most 100 either way); repeatable", EnvVars: envs("lora")},
			&cli.StringSliceFlag{Name: "id-image", Usage: "ID photo of the person (repeatable)", EnvVars: envs("id-image")},
			&cli.StringSliceFlag{Name: "id", Usage: "several people: NAME=F1,F2 where NAME is the class word written before the trigger word (\"a man img and a woman img\"); repeat per person (v2: with --id-embeds NAME=FILE each)", EnvVars: envs("id")},
			&cli.StringSliceFlag{Name: "id-embeds", Usage: "v2: face embeddings, one raw 512-d ArcFace embedding per ID photo in their order: .safetensors with tensor \"id_embeds\" [N,512], or .npy [N,512]; with --id, NAME=FILE per person (repeat)", EnvVars: envs("id-embeds")},
			&cli.Float64Flag{Name: "style-strength", Value: photomaker.DefaultStyleStrength, Usage: "percent of steps (0 to 100) that use the text-only prompt before the ID kicks in; 0: the ID from the second step (the first always takes the text-only prompt, as in the official pipeline)", EnvVars: envs("style-strength")},
			&cli.BoolFlag{Name: "no-merge-cap", Usage: "do not cap the text-only steps at 30 (the demo's cap)", EnvVars: envs("no-merge-cap")},
			&cli.StringFlag{Name: "trigger-word", Value: photomaker.DefaultTrigger, Usage: "the word that marks the class word to personalise", EnvVars: envs("trigger-word")},
			&cli.StringFlag{Name: "style", Usage: "one of the official demo's style templates (photographic, cinematic, disney, digital-art, fantasy-art, neonpunk, enhance, comic-book, lowpoly, line-art)", EnvVars: envs("style")},
			&cli.StringFlag{Name: "device", Value: "auto", Usage: "auto, cpu, cuda, cuda:1, metal, ...", EnvVars: envs("device")},
			&cli.StringFlag{Name: "type", Usage: "store weights as f32, f16, q8_0, q4_K, ... (default: as in the file)", EnvVars: envs("type")},
			vramFlag(),
			quantizeConvsFlag(),
			f16AccumFlag(),
			vaeF16Flag(),
			&cli.BoolFlag{Name: "encoders-on-cpu", Usage: "low-VRAM mode: run the text and ID encoders on the CPU, keep only the UNet and VAE on the GPU", EnvVars: envs("encoders-on-cpu")},
			&cli.IntFlag{Name: "vae-tile", Usage: "decode in tiles of N latent pixels (8 image pixels each) to save memory; 0 = whole (64-latent tiles in --vram low and stream, or when memory runs out); -1 = never", EnvVars: envs("vae-tile")},
			&cli.IntFlag{Name: "threads", Usage: "CPU threads, at most the logical CPUs (default: one per physical core)", EnvVars: envs("threads")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary instead of text", EnvVars: envs("json")},
		},
		Action: runGenerate,
	}
}

func runGenerate(c *cli.Context) error {
	reqGuidance, err := guidanceFlag(c)
	if err != nil {
		return err
	}
	reqStyle, err := styleStrengthFlag(c)
	if err != nil {
		return err
	}
	req := photomaker.Request{
		Prompt: c.String("prompt"), NegativePrompt: c.String("negative-prompt"),
		Width: c.Int("width"), Height: c.Int("height"), Steps: c.Int("steps"), Guidance: reqGuidance,
		PromptWeighting: strings.TrimPrefix(strings.ToLower(c.String("prompt-weighting")), "none"),
		Sampler:         c.String("sampler"), Seed: c.Int64("seed"), RNG: c.String("rng"), N: c.Int("n"),
		TimestepSpacing: c.String("timestep-spacing"),
		TriggerWord:     c.String("trigger-word"), StyleStrength: reqStyle, NoMergeCap: c.Bool("no-merge-cap"),
	}
	if w := req.PromptWeighting; w != photomaker.WeightingNone && w != photomaker.WeightingA1111 {
		return usagef("unknown --prompt-weighting %q (want none or a1111)", c.String("prompt-weighting"))
	}
	switch strings.ToLower(c.String("scheduler")) {
	case "", "default":
	case "karras":
		req.Karras = true
	default:
		return usagef("unknown --scheduler %q (want default or karras)", c.String("scheduler"))
	}
	if err := samplingFlags(c); err != nil {
		return err
	}
	weightType, err := weightTypeFlag(c)
	if err != nil {
		return err
	}
	if req.Steps <= 0 {
		return usagef("--steps must be at least 1")
	}
	if req.N <= 0 || req.N > photomaker.MaxImages {
		return usagef("--n must be 1 to %d", photomaker.MaxImages)
	}
	if a := c.String("aspect"); a != "" {
		p, err := photomaker.FindSize(a)
		if err != nil {
			return usagef("%v", err)
		}
		req.Width, req.Height = p.Width, p.Height
	}
	if req.Width%8 != 0 || req.Height%8 != 0 || req.Width <= 0 || req.Height <= 0 {
		return usagef("--width and --height must be positive multiples of 8 (got %d×%d)", req.Width, req.Height)
	}
	if t := c.Int("vae-tile"); t < -1 || t == 1 { // a tile must be wider than its overlap (tile/4, at least 1)
		return usagef("--vae-tile must be -1 (never tile), 0 (automatic) or a tile of at least 2 latent pixels, got %d", t)
	}
	threads, err := threadsFlag(c)
	if err != nil {
		return err
	}
	vram, err := vramMode(c)
	if err != nil {
		return err
	}
	loras, err := parseLoRAs(c.StringSlice("lora"))
	if err != nil {
		return err
	}
	outputs, err := checkOutputs(c.String("output"), req.N, c.Bool("force"))
	if err != nil {
		return err
	}
	if ext := filepath.Ext(outputs[0]); !strings.EqualFold(ext, ".png") { // as convert's .gguf
		fmt.Fprintf(c.App.ErrWriter, "photomaker: warning: %s will be a PNG file; name it .png\n", outputs[0])
	}
	if req.NegativePrompt == "@demo" {
		req.NegativePrompt = photomaker.DefaultNegativePrompt
	}
	if s := c.String("style"); s != "" {
		st, err := photomaker.FindStyle(s)
		if err != nil {
			return usagef("%v", err)
		}
		req.Prompt, req.NegativePrompt = st.Apply(req.Prompt, req.NegativePrompt)
	}
	if err := readIDs(c, &req); err != nil {
		return err
	}
	ids := c.StringSlice("id-image")
	if c.String("photomaker") != "" && len(ids) == 0 && len(req.People) == 0 {
		return usagef("--photomaker needs at least one --id-image photo of the person (or --id NAME=PHOTOS per person)")
	}
	if (len(req.IDImages) > 0 || len(req.People) > 0) && c.String("photomaker") == "" && !strings.HasSuffix(strings.ToLower(c.String("model")), ".gguf") {
		// ID photos without an adapter: use a pulled photomaker-v1 if there is one.
		if p, err := resolveModelPath("photomaker-v1"); err == nil {
			c.Set("photomaker", p)
		}
	}
	if err := resolveModelFlags(c); err != nil { // catalog names → files pulled into the cache
		return err
	}

	ctx, stop := interruptible(c)
	defer stop()
	bar := newProgress(c.App.ErrWriter, !c.Bool("json"))
	loadStart := time.Now()
	p, err := photomaker.Load(ctx, photomaker.Config{
		Model: c.String("model"), PhotoMaker: c.String("photomaker"), Device: c.String("device"),
		LoRAs: loras, Threads: threads, WeightType: weightType, VAETile: c.Int("vae-tile"), EncodersOnCPU: c.Bool("encoders-on-cpu"), Progress: bar.update,
		VRAM: vram, PlanWidth: req.Width, PlanHeight: req.Height, QuantizeConvs: c.Bool("quantize-convs"), F16Accumulation: c.Bool("f16-accum"), VAEF16: c.Bool("vae-f16"),
		OneShot: true, // one request: each part is freed once done
	})
	if err != nil {
		return err
	}
	defer p.Close()
	loadTime := time.Since(loadStart)
	res, err := p.Generate(ctx, req)
	bar.done()
	if err == nil && !c.Bool("json") { // the UNet loads inside Generate (OneShot)
		if hint := quantizeOnceHint(c.String("model"), c.String("photomaker"), weightType, len(loras), loadTime+res.LoadTime); hint != "" {
			fmt.Fprintln(c.App.ErrWriter, hint)
		}
		if hint := fewStepHint(c.String("model"), res.Request.TimestepSpacing); hint != "" {
			fmt.Fprintln(c.App.ErrWriter, hint)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; nothing was written")
		}
		return err
	}
	adapter := c.String("photomaker")
	if adapter == "" && len(res.Request.IDImages)+len(res.Request.People) > 0 { // merged into a GGUF by convert
		adapter = p.Kind()
	}
	params := parameters(&res.Request, c.String("model"), adapter)
	for i, img := range res.Images {
		if err := writePNG(outputs[i], img, params+photomaker.BatchParameters(len(res.Images), i), c.Bool("force")); err != nil {
			if i > 0 { // each file is whole: say which are there
				return fmt.Errorf("%w (written before it: %s)", err, strings.Join(outputs[:i], ", "))
			}
			return err
		}
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(map[string]any{
			"outputs": outputs, "seed": res.Seed, "width": req.Width, "height": req.Height,
			"steps": req.Steps, "device": p.Device(), "kind": p.Kind(), "vram": p.VRAM(),
		})
	}
	for _, o := range outputs {
		fmt.Fprintf(c.App.Writer, "wrote %s (seed %d)\n", o, res.Seed)
	}
	return nil
}

// readIDs decodes the ID photos (--id-image, or --id per person) and reads
// their face embeddings (--id-embeds FILE, or NAME=FILE per --id person)
// into req.
func readIDs(c *cli.Context, req *photomaker.Request) error {
	ids, people, embeds := c.StringSlice("id-image"), c.StringSlice("id"), c.StringSlice("id-embeds")
	if len(people) > 0 && len(ids) > 0 {
		return usagef("use either --id-image (one person) or --id NAME=... (one per person), not both")
	}
	if len(ids) > maxIDPhotos {
		return usagef("%d --id-image photos: at most %d of one person fit the prompt", len(ids), maxIDPhotos)
	}
	for _, path := range ids {
		if path == "" {
			return usagef("empty photo path in --id-image")
		}
		img, err := decodeIDImage(path)
		if err != nil {
			return err
		}
		req.IDImages = append(req.IDImages, img)
	}
	if len(people) == 0 {
		switch {
		case len(embeds) > 1:
			return usagef("give one --id-embeds FILE for the --id-image photos (with --id, one NAME=FILE per person)")
		case len(embeds) == 1 && len(ids) == 0:
			return usagef("--id-embeds goes with the --id-image photos it describes")
		case len(embeds) == 1:
			emb, err := photomaker.ReadIDEmbeds(embeds[0])
			if err != nil {
				return err
			}
			if len(emb) != len(ids) {
				return usagef("--id-embeds %s holds %d face embeddings for %d --id-image photos: give one per photo", embeds[0], len(emb), len(ids))
			}
			req.IDEmbeds = emb
		}
		return nil
	}
	for _, spec := range people {
		name, files, ok := strings.Cut(spec, "=")
		if !ok || name == "" || files == "" {
			return usagef("--id wants NAME=PHOTO[,PHOTO...], e.g. --id man=a1.jpg,a2.jpg (got %q)", spec)
		}
		paths := strings.Split(files, ",")
		if len(paths) > maxIDPhotos {
			return usagef("--id %s=...: %d photos, at most %d of one person fit the prompt", name, len(paths), maxIDPhotos)
		}
		person := photomaker.Person{Class: name}
		for _, path := range paths {
			if path = strings.TrimSpace(path); path == "" {
				return usagef("empty photo path in --id %s", spec)
			}
			img, err := decodeIDImage(path)
			if err != nil {
				return err
			}
			person.Images = append(person.Images, img)
		}
		req.People = append(req.People, person)
	}
	// v2: NAME=FILE per person, so each person's embeddings follow their photos.
	files := map[string]string{}
	for _, spec := range embeds {
		name, file, ok := strings.Cut(spec, "=")
		if !ok || name == "" || file == "" {
			return usagef("with --id, --id-embeds wants NAME=FILE for each person, e.g. --id-embeds man=man.npy (got %q)", spec)
		}
		if _, dup := files[name]; dup {
			return usagef("--id-embeds %s=... given twice", name)
		}
		files[name] = file
	}
	for i := range req.People {
		p := &req.People[i]
		file, ok := files[p.Class]
		if !ok {
			if len(embeds) > 0 {
				return usagef("--id-embeds has no face embeddings for the %s: add --id-embeds %s=FILE", p.Class, p.Class)
			}
			continue
		}
		delete(files, p.Class)
		emb, err := photomaker.ReadIDEmbeds(file)
		if err != nil {
			return err
		}
		if len(emb) != len(p.Images) {
			return usagef("--id-embeds %s=%s holds %d face embeddings for %d photos of the %s: give one per photo", p.Class, file, len(emb), len(p.Images), p.Class)
		}
		p.IDEmbeds = emb
	}
	for _, spec := range embeds {
		if name, _, _ := strings.Cut(spec, "="); files[name] != "" {
			return usagef("--id-embeds %s: no --id %s=PHOTOS to go with it", spec, name)
		}
	}
	return nil
}

// quantizeOnceHint suggests converting once when a load spent long
// quantizing a float checkpoint to a block type (minutes on small CPUs);
// "" when it does not apply. Extra LoRAs are left out: the GGUF would not
// hold them.
func quantizeOnceHint(model, adapter, typ string, loras int, took time.Duration) string {
	t, err := ggml.ParseType(typ)
	if err != nil || !t.Quantized() || loras > 0 || took < 20*time.Second || strings.HasSuffix(strings.ToLower(model), ".gguf") {
		return ""
	}
	out := strings.TrimSuffix(filepath.Base(model), filepath.Ext(model)) + "-" + t.String() + ".gguf"
	cmd := fmt.Sprintf("photomaker convert %s", model)
	if adapter != "" {
		cmd += " --photomaker " + adapter
	}
	return fmt.Sprintf("loading took %.0fs, mostly quantizing to %s; do it once with\n  %s --type %s -o %s\nand pass --model %s", took.Seconds(), t, cmd, t, out, out)
}

// fewStepHint suggests trailing timestep spacing when the model's file name
// says it is a few-step distilled fine-tune (Lightning, Hyper-SD, Turbo),
// which leading spacing, the default of single-file checkpoints, leaves
// noisy; "" otherwise.
func fewStepHint(model, spacing string) string {
	if spacing != "leading" {
		return ""
	}
	name := strings.ToLower(filepath.Base(model))
	for _, kind := range []string{"lightning", "hyper", "turbo"} {
		if strings.Contains(name, kind) {
			return fmt.Sprintf("%s looks like a few-step %s model: those are sampled with --timestep-spacing trailing (this run used leading)", filepath.Base(model), kind)
		}
	}
	return ""
}

// outputNames gives FILE.png for one image and FILE-1.png, ... for several.
func outputNames(out string, n int) []string {
	if n == 1 {
		return []string{out}
	}
	ext := filepath.Ext(out)
	base := strings.TrimSuffix(out, ext)
	if ext == "" {
		ext = ".png"
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d%s", base, i+1, ext)
	}
	return names
}

// parameters is the A1111-style "parameters" text other tools read.
func parameters(r *photomaker.Request, model, adapter string) string {
	s := r.Parameters() + ", Model: " + filepath.Base(model)
	if adapter != "" {
		s += fmt.Sprintf(", PhotoMaker: %s, Style strength: %g, Trigger word: %s, ID images: %d, People: %d", filepath.Base(adapter), r.StyleStrength, r.TriggerWord, len(r.IDImages), len(r.People))
	}
	return s + ", Generator: photomaker " + version
}

func writePNG(path string, img image.Image, params string, force bool) error {
	b, err := pngtext.Encode(img, [][2]string{{"parameters", params}})
	if err != nil {
		return err
	}
	return pngtext.WriteFile(path, b, force)
}
