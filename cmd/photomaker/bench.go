//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/cpuinfo"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/tools/randweights"
)

func init() { register(benchCommand) }

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time the full PhotoMaker pipeline (load, encoders, UNet steps, VAE) and measure peak memory",
		Description: `With --random, runs on full-size random weights in the real layouts (SDXL
single-file + PhotoMaker adapter), generated once (about 8 GB, deterministic
from --seed) into the cache folder; no download. With --model (and
--photomaker) it runs the given files the same way.

The ID photos are synthetic solid images; the output image is discarded.
Times: load (open, LoRA merge, conversion/quantization, upload), one prompt
through both text encoders, the ID encoder, the median UNet step, the VAE
decode per image, and the whole load + generation; a step's arithmetic
(the FLOPs of its products) and the rate the median step achieved.
Memory: peak resident set size of the process (getrusage) and the device
memory the pipeline holds (weights, compute buffers and the sampler
loop's state).

Examples:
  photomaker bench --random --device cpu --width 256 --height 256 --steps 1 --type q4_K --json
  photomaker bench --model sdxl.safetensors --photomaker photomaker-v1.bin --steps 4`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "random", Usage: "use full-size random weights made by our generator (cached)", EnvVars: envs("random")},
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "SDXL checkpoint to benchmark instead of random weights (a file, folder or pulled name)", EnvVars: envs("model")},
			&cli.StringFlag{Name: "photomaker", Usage: "PhotoMaker adapter (with --model; empty: plain SDXL)", EnvVars: envs("photomaker")},
			&cli.IntFlag{Name: "photomaker-version", Value: 1, Usage: "with --random: adapter version 1 or 2 (0: plain SDXL, no adapter)", EnvVars: envs("photomaker-version")},
			&cli.StringFlag{Name: "device", Value: "auto", Usage: "auto, cpu, cuda, cuda:1, metal, ...", EnvVars: envs("device")},
			&cli.StringFlag{Name: "type", Usage: "store weights as f32, f16, q8_0, q4_K, ... (default: as in the file)", EnvVars: envs("type")},
			vramFlag(),
			quantizeConvsFlag(),
			f16AccumFlag(),
			vaeF16Flag(),
			&cli.IntFlag{Name: "width", Value: 1024, Usage: "width in pixels, a multiple of 8", EnvVars: envs("width")},
			&cli.IntFlag{Name: "height", Value: 1024, Usage: "height in pixels, a multiple of 8", EnvVars: envs("height")},
			&cli.IntFlag{Name: "steps", Value: 4, Usage: "denoising steps", EnvVars: envs("steps")},
			&cli.IntFlag{Name: "batch", Aliases: []string{"n"}, Value: 1, Usage: "images per prompt", EnvVars: envs("batch")},
			&cli.Float64Flag{Name: "guidance", Value: photomaker.DefaultGuidance, Usage: "guidance scale, 0 to 50 (> 1: two UNet rows per step; 0 or up to 1: guidance off)", EnvVars: envs("guidance")},
			&cli.IntFlag{Name: "id-images", Value: 2, Usage: fmt.Sprintf("synthetic ID photos (1 to %d)", maxIDPhotos), EnvVars: envs("id-images")},
			&cli.IntFlag{Name: "threads", Usage: "CPU threads, at most the logical CPUs (default: one per physical core)", EnvVars: envs("threads")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the random weights (and of the generation)", EnvVars: envs("seed")},
			&cli.StringFlag{Name: "cache-dir", Usage: "where random weights are kept (default: $XDG_CACHE_HOME/photomaker/random, else ~/.cache/photomaker/random)", EnvVars: envs("cache-dir")},
			&cli.StringFlag{Name: "random-scale", Value: "full", Usage: "full or tiny (tests)", Hidden: true, EnvVars: envs("random-scale")},
			&cli.IntFlag{Name: "runs", Value: 1, Usage: "generate this many times: the first run pays the device's first-use costs, the others are reported as warm", EnvVars: envs("runs")},
			&cli.BoolFlag{Name: "profile", Usage: "then profile a few UNet steps and the VAE decode by op and by its operands' shapes, with what each moved or computed and at what rate (each op synchronized: shares, not timings)", EnvVars: envs("profile")},
			&cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: envs("json")},
		},
		Action: runBench,
	}
}

// benchResult is the --json output.
type benchResult struct {
	Model             string    `json:"model"`
	PhotoMaker        string    `json:"photomaker,omitempty"`
	Kind              string    `json:"kind"`
	Random            bool      `json:"random"`
	RandomScale       string    `json:"random_scale,omitempty"`
	Device            string    `json:"device"`
	VRAM              string    `json:"vram,omitempty"`
	QuantizeConvs     bool      `json:"quantize_convs,omitempty"`
	F16Accumulation   bool      `json:"f16_accum,omitempty"`
	VAEF16            bool      `json:"vae_f16,omitempty"`
	Type              string    `json:"type"`
	Threads           int       `json:"threads"`
	CPUKernels        string    `json:"cpu_kernels,omitempty"` // the target an x86-64 build's own CPU kernels run as, where above the build's (ggml.KernelTarget)
	Width             int       `json:"width"`
	Height            int       `json:"height"`
	Steps             int       `json:"steps"`
	Batch             int       `json:"batch"`
	Guidance          float64   `json:"guidance"`
	IDImages          int       `json:"id_images"`
	GenerateWeightsS  float64   `json:"generate_weights_seconds,omitempty"`
	LoadSeconds       float64   `json:"load_seconds"`
	TextEncodeSeconds float64   `json:"text_encode_seconds"`
	IDEncodeSeconds   float64   `json:"id_encode_seconds"`
	EncodeSeconds     float64   `json:"encode_seconds"`
	UNetStepSeconds   float64   `json:"unet_step_seconds"`
	UNetStepsSeconds  []float64 `json:"unet_steps_seconds"`
	ItPerS            float64   `json:"it_per_s"`
	UNetStepTFLOP     float64   `json:"unet_step_tflop"`  // one step's products (ggml.Graph.FLOPs)
	UNetTFLOPS        float64   `json:"unet_tflop_per_s"` // over the median step
	VAESeconds        float64   `json:"vae_seconds"`
	VAETFLOP          float64   `json:"vae_tflop"`       // one image's decode (its products)
	VAETFLOPS         float64   `json:"vae_tflop_per_s"` // over its time
	GenerateSeconds   float64   `json:"generate_seconds"`
	Runs              int       `json:"runs"`
	WarmGenerateS     float64   `json:"warm_generate_seconds,omitempty"`
	WarmUNetStepS     float64   `json:"warm_unet_step_seconds,omitempty"`
	// Where a warm run's time goes (medians over the warm runs): what
	// recurs per request beyond the steps.
	WarmEncodeS    float64 `json:"warm_encode_seconds,omitempty"`
	WarmFirstStepS float64 `json:"warm_first_step_seconds,omitempty"` // graph allocation and CUDA graph capture included
	WarmVAES       float64 `json:"warm_vae_seconds,omitempty"`
	WarmOtherS     float64 `json:"warm_other_seconds,omitempty"` // generate less encode, steps and decodes
	// WarmLoadS is what a warm run spent loading again the parts the run
	// before freed (OneShot, as generate runs: the encoders, the UNet); not
	// part of its generate time.
	WarmLoadS       float64   `json:"warm_load_seconds,omitempty"`
	TotalSeconds    float64   `json:"total_seconds"`
	CPUSeconds      float64   `json:"cpu_seconds"`
	PeakRSSBytes    int64     `json:"peak_rss_bytes"`
	RSSFileBytes    int64     `json:"rss_file_bytes,omitempty"`
	PeakDeviceBytes int64     `json:"peak_device_bytes"`
	DeviceWeights   int64     `json:"device_weights_bytes"`
	DeviceCompute   int64     `json:"device_compute_bytes"`
	HostCompute     int64     `json:"host_compute_bytes,omitempty"`
	DeviceUsedPeak  int64     `json:"device_used_peak_bytes,omitempty"`
	StepProfile     []opShare `json:"unet_step_profile,omitempty"`
	DecodeProfile   []opShare `json:"vae_decode_profile,omitempty"`
	CPUPlacedShare  float64   `json:"cpu_placed_share,omitempty"`
	Warnings        []string  `json:"warnings,omitempty"`
}

func runBench(c *cli.Context) error {
	res := &benchResult{
		Device: c.String("device"), Type: c.String("type"), Threads: c.Int("threads"),
		Width: c.Int("width"), Height: c.Int("height"), Steps: c.Int("steps"), Batch: c.Int("batch"),
		Guidance: c.Float64("guidance"), IDImages: c.Int("id-images"), QuantizeConvs: c.Bool("quantize-convs"), F16Accumulation: c.Bool("f16-accum"), VAEF16: c.Bool("vae-f16"),
		Runs: c.Int("runs"), CPUKernels: ggml.KernelTarget(),
	}
	threads, err := threadsFlag(c)
	if err != nil {
		return err
	}
	if res.Threads = threads; threads == 0 {
		res.Threads = cpuinfo.Threads()
	}
	reqGuidance, err := guidanceFlag(c)
	if err != nil {
		return err
	}
	res.Guidance = max(reqGuidance, 0) // NoGuidance: 0
	vram, err := vramMode(c)
	if err != nil {
		return err
	}
	switch {
	case res.IDImages < 1 || res.IDImages > maxIDPhotos: // before any photo is made
		return usagef("--id-images must be 1 to %d (the photos of one person that fit the prompt), got %d", maxIDPhotos, res.IDImages)
	case res.Steps < 1:
		return usagef("--steps must be at least 1")
	case res.Batch < 1:
		return usagef("--batch must be at least 1")
	case res.Runs < 1:
		return usagef("--runs must be at least 1")
	case res.Width < 8 || res.Height < 8 || res.Width%8 != 0 || res.Height%8 != 0:
		return usagef("--width and --height must be positive multiples of 8")
	}
	if _, err := weightTypeFlag(c); err != nil {
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()

	random := c.Bool("random")
	switch {
	case random && c.String("model") != "":
		return usagef("give either --random or --model, not both")
	case !random && c.String("model") == "":
		return usagef("give --random (generated weights) or --model PATH")
	case !random && c.IsSet("photomaker-version"):
		return usagef("--photomaker-version applies to --random; pass the adapter with --photomaker")
	}
	if err := resolveModelFlags(c); err != nil { // catalog names → files pulled into the cache
		return err
	}
	res.Model, res.PhotoMaker, res.Random = c.String("model"), c.String("photomaker"), random
	if random {
		if res.PhotoMaker != "" {
			return usagef("--photomaker applies to --model; with --random use --photomaker-version")
		}
		t0 := time.Now()
		var err error
		res.RandomScale = c.String("random-scale")
		res.Model, res.PhotoMaker, err = ensureRandom(ctx, c, res.RandomScale)
		if err != nil {
			if ctx.Err() != nil {
				return errors.New("interrupted while generating the random weights; nothing was kept")
			}
			return err
		}
		res.GenerateWeightsS = time.Since(t0).Seconds()
		runtime.GC()
		debug.FreeOSMemory() // the generator's buffers are not the pipeline's memory
	}

	_, cpu0 := peakRSS()
	var sampler *deviceSampler
	if d, err := ggml.FindDevice(res.Device); err == nil && d.Type != ggml.DeviceCPU {
		sampler = startDeviceSampler(d)
	}
	// Bars as generate draws them: a CPU run at 1024² takes many minutes.
	bar := newProgress(c.App.ErrWriter, !c.Bool("json"))
	defer bar.done()
	t0 := time.Now()
	p, err := photomaker.Load(ctx, photomaker.Config{
		Model: res.Model, PhotoMaker: res.PhotoMaker, Device: res.Device, WeightType: res.Type, Threads: threads, Progress: bar.update,
		VRAM: vram, PlanWidth: res.Width, PlanHeight: res.Height, QuantizeConvs: res.QuantizeConvs, F16Accumulation: res.F16Accumulation, VAEF16: res.VAEF16,
		OneShot: true, // as generate does: the UNet loads inside Generate, after the encoders are freed
	})
	if err != nil {
		if sampler != nil {
			sampler.stop()
		}
		return err
	}
	defer p.Close()
	res.LoadSeconds = time.Since(t0).Seconds()
	slog.Debug("bench: loaded", "seconds", res.LoadSeconds)
	res.Kind, res.Device, res.VRAM = p.Kind(), p.Device(), p.VRAM()
	if res.Type == "" {
		res.Type = "as in file"
	}

	req := benchRequest(res, c.Uint64("seed"), p.Kind())
	req.Guidance = reqGuidance
	var events eventLog
	req.Progress = func(ev photomaker.Progress) {
		events.add(ev)
		bar.update(ev)
		// With --verbose, a trail that shows where a slow run spends its time.
		slog.Debug("bench: progress", "stage", ev.Stage, "done", ev.Done, "total", ev.Total)
	}
	t1 := time.Now()
	out, err := p.Generate(ctx, req)
	if err != nil {
		if sampler != nil {
			sampler.stop()
		}
		return err
	}
	bar.done()
	// OneShot loads the UNet inside Generate: count it as loading.
	res.LoadSeconds += out.LoadTime.Seconds()
	res.GenerateSeconds = (time.Since(t1) - out.LoadTime).Seconds()
	res.TotalSeconds = time.Since(t0).Seconds()
	stageTimes(res, events.events)
	if res.UNetStepTFLOP = float64(out.StepFLOPs) / 1e12; res.UNetStepSeconds > 0 {
		res.UNetTFLOPS = res.UNetStepTFLOP / res.UNetStepSeconds
	}
	if res.VAETFLOP = float64(out.DecodeFLOPs) / 1e12; res.VAESeconds > 0 {
		res.VAETFLOPS = res.VAETFLOP / res.VAESeconds
	}
	// Memory and CPU time of the run itself: the measurements below reload
	// the released encoders next to buffers the run has grown.
	mem := p.MemoryUse()
	res.DeviceWeights, res.DeviceCompute, res.HostCompute = mem.Weights, mem.Compute, mem.HostCompute
	res.PeakDeviceBytes = mem.Peak
	if sampler != nil {
		res.DeviceUsedPeak = sampler.stop()
	}
	res.CPUPlacedShare = p.CPUPlacedShare()
	res.Warnings = benchWarnings(res, p.CPUFallbacks())
	res.PeakRSSBytes, res.CPUSeconds = peakRSS()
	res.CPUSeconds -= cpu0
	res.RSSFileBytes = procStatusBytes("RssFile")
	if err := warmRuns(ctx, p, req, res); err != nil {
		return err
	}
	req.Progress = nil
	et, err := p.TimeEncoders(ctx, req)
	if err != nil {
		return err
	}
	res.TextEncodeSeconds, res.IDEncodeSeconds = et.Text.Seconds(), et.ID.Seconds()
	if c.Bool("profile") {
		if res.StepProfile, res.DecodeProfile, err = profile(ctx, p, req); err != nil {
			return err
		}
	}

	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return printBench(c.App.Writer, res)
}

// benchWarnings says what makes the figures slower than they could be on
// this machine: ops the GPU left to the CPU, a ggml built without this
// CPU's vector instructions or without its repacked q4 products.
func benchWarnings(res *benchResult, fallbacks []string) []string {
	var out []string
	if len(fallbacks) > 0 {
		out = append(out, "the GPU backend has no kernel for "+strings.Join(fallbacks, ", ")+": the CPU computed those ops")
	}
	if res.CPUPlacedShare > 0 {
		out = append(out, fmt.Sprintf("the CPU computed %.1f%% of a GPU graph's products: a bug, please report it", 100*res.CPUPlacedShare))
	}
	onCPU := strings.EqualFold(res.Device, "cpu")
	if simd := ggml.MissingSIMD(); simd != "" && (onCPU || res.VRAM == photomaker.VRAMLow || res.VRAM == photomaker.VRAMStream) {
		out = append(out, "ggml was compiled without "+simd+", which this CPU has: build with make")
	}
	if simd := ggml.UnusedSIMD(); simd != "" && onCPU {
		out = append(out, "this CPU has "+simd+", which our CPU kernels were not compiled for: build with make (about 1.6× faster)")
	}
	if t, err := ggml.ParseType(res.Type); err == nil && onCPU && slices.Contains(unrepackedTypes(), t.String()) {
		out = append(out, "ggml was compiled without its repacked "+t.String()+" CPU products (about 1.6× faster): build with make")
	}
	return out
}

// benchRequest is a PhotoMaker request with synthetic ID photos (and, for
// v2, synthetic face embeddings).
func benchRequest(res *benchResult, seed uint64, kind string) photomaker.Request {
	req := photomaker.Request{
		Prompt:         "a photo of a man img, wearing a spacesuit, sharp focus",
		NegativePrompt: "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
		Width:          res.Width, Height: res.Height, Steps: res.Steps, Guidance: res.Guidance, N: res.Batch,
		Seed: int64(seed & (1<<53 - 1)),
	}
	if !strings.Contains(kind, "PhotoMaker") {
		req.Prompt = "an astronaut in a spacesuit, sharp focus"
		res.IDImages = 0
		return req
	}
	tones := []color.RGBA{{224, 172, 140, 255}, {141, 85, 60, 255}, {128, 128, 128, 255}, {250, 220, 190, 255}}
	for i := 0; i < res.IDImages; i++ {
		req.IDImages = append(req.IDImages, solidImage(tones[i%len(tones)], 256))
		if strings.Contains(kind, "v2") {
			e := make([]float32, 512)
			for j := range e {
				e[j] = float32((i*131+j*17)%41-20) / 10 // ArcFace-sized, deterministic
			}
			req.IDEmbeds = append(req.IDEmbeds, e)
		}
	}
	return req
}

func solidImage(c color.RGBA, size int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

// opShare is one op's part of a profiled UNet step.
type opShare struct {
	Op    string  `json:"op"` // for shapes' entries, the operands' shapes
	Nodes int     `json:"nodes_per_step"`
	MS    float64 `json:"ms_per_step"`
	Share float64 `json:"share"`
	GB    float64 `json:"gb_per_step"`    // what operands and results span
	TFLOP float64 `json:"tflop_per_step"` // products, convolutions, attention
	// Shapes: the op's nodes by their operands' shapes, the most time
	// first (at most shapesKept).
	Shapes []opShare `json:"shapes,omitempty"`
}

// shapesKept bounds an op's shapes in bench's JSON; the table shows
// shapesShown of the ops above shapesShare of the time.
const (
	shapesKept  = 8
	shapesShown = 3
	shapesShare = 0.05
)

// profile runs req again, with a few steps, every op of the UNet and of
// the VAE timed (ggml.OpProfile), and returns the ops by their time per
// step and per decoded image.
func profile(ctx context.Context, p *photomaker.Pipeline, req photomaker.Request) (steps, decode []opShare, err error) {
	req.Steps = min(req.Steps, 4)
	req.StepProfile, req.DecodeProfile = ggml.NewOpProfile(), ggml.NewOpProfile()
	if _, err := p.Generate(ctx, req); err != nil {
		return nil, nil, err
	}
	return opShares(req.StepProfile, req.Steps), opShares(req.DecodeProfile, req.N), nil
}

// rate is what an op moved or computed, and at what rate: arithmetic for
// products and attention, else bytes (ops bound by memory).
func (o opShare) rate() string {
	switch {
	case o.MS <= 0:
		return fmt.Sprintf("%.2f GB", o.GB)
	case o.TFLOP > 0:
		return fmt.Sprintf("%s at %s", flopAmount(o.TFLOP), flopRate(o.TFLOP/(o.MS/1e3)))
	}
	return fmt.Sprintf("%.2f GB at %.0f GB/s", o.GB, o.GB/(o.MS/1e3))
}

// opShares is a profile's ops, by time, per one of its n repetitions.
func opShares(prof *ggml.OpProfile, n int) []opShare {
	times := prof.Times()
	var total float64
	for _, t := range times {
		total += t.Seconds
	}
	share := func(t ggml.OpTime) opShare {
		return opShare{Op: t.Op, Nodes: t.Count / n, MS: 1e3 * t.Seconds / float64(n), Share: t.Seconds / total,
			GB: float64(t.Bytes) / 1e9 / float64(n), TFLOP: float64(t.FLOPs) / 1e12 / float64(n)}
	}
	out := make([]opShare, len(times))
	for i, t := range times {
		out[i] = share(t)
		for _, sh := range t.Shapes[:min(len(t.Shapes), shapesKept)] {
			out[i].Shapes = append(out[i].Shapes, share(sh))
		}
	}
	return out
}

// warmRuns generates req res.Runs-1 more times and records the median
// generate time and UNet step of those runs: on a GPU the first run also
// pays for loading kernels, creating library handles and capturing graphs.
// Each run loads the parts the one before freed (OneShot), which counts as
// loading (warm_load_seconds), not generating.
func warmRuns(ctx context.Context, p *photomaker.Pipeline, req photomaker.Request, res *benchResult) error {
	var gens, steps, encodes, firsts, vaes, others, loads []float64
	for range res.Runs - 1 {
		var events eventLog
		req.Progress = events.add
		t0 := time.Now()
		out, err := p.Generate(ctx, req)
		if err != nil {
			return err
		}
		gen := (time.Since(t0) - out.LoadTime).Seconds()
		gens, loads = append(gens, gen), append(loads, out.LoadTime.Seconds())
		var run benchResult
		stageTimes(&run, events.events)
		steps = append(steps, run.UNetStepsSeconds...)
		if len(run.UNetStepsSeconds) == 0 {
			continue
		}
		encodes, firsts, vaes = append(encodes, run.EncodeSeconds), append(firsts, run.UNetStepsSeconds[0]), append(vaes, run.VAESeconds)
		other := gen - run.EncodeSeconds - float64(res.Batch)*run.VAESeconds
		for _, st := range run.UNetStepsSeconds {
			other -= st
		}
		others = append(others, other)
	}
	res.WarmGenerateS, res.WarmUNetStepS = median(gens), median(steps)
	res.WarmEncodeS, res.WarmFirstStepS, res.WarmVAES, res.WarmOtherS = median(encodes), median(firsts), median(vaes), median(others)
	res.WarmLoadS = median(loads)
	return nil
}

// flopAmount and flopRate write arithmetic (TFLOP) and its rate
// (TFLOP/s) in the unit they read best in.
func flopAmount(tflop float64) string {
	if tflop < 1 {
		return fmt.Sprintf("%.1f GFLOP", 1e3*tflop)
	}
	return fmt.Sprintf("%.2f TFLOP", tflop)
}

func flopRate(tflops float64) string {
	if tflops < 1 {
		return fmt.Sprintf("%.0f GFLOP/s", 1e3*tflops)
	}
	return fmt.Sprintf("%.1f TFLOP/s", tflops)
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	n := len(xs)
	if n == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[n/2]
}

// eventLog records a run's progress events with their times.
type eventLog struct {
	mu     sync.Mutex
	events []benchEvent
}

func (l *eventLog) add(ev photomaker.Progress) {
	l.mu.Lock()
	l.events = append(l.events, benchEvent{ev, time.Now()})
	l.mu.Unlock()
}

type benchEvent struct {
	photomaker.Progress
	at time.Time
}

// stageTimes turns the progress events of one Generate into stage times:
// encode (start to end), each UNet step (from the previous event), VAE
// decode (mean per image).
func stageTimes(res *benchResult, events []benchEvent) {
	var prev, encStart, decStart time.Time
	var vae time.Duration
	images := 0
	for _, ev := range events {
		switch {
		case ev.Stage == "encode" && ev.Done == 0:
			encStart = ev.at
		case ev.Stage == "encode":
			res.EncodeSeconds = ev.at.Sub(encStart).Seconds()
		case ev.Stage == "denoise" && ev.Done > 0: // timed from the previous event: the loop's start or the last step
			res.UNetStepsSeconds = append(res.UNetStepsSeconds, ev.at.Sub(prev).Seconds())
		case ev.Stage == "decode" && ev.Done == 0:
			decStart = ev.at
		case ev.Stage == "decode":
			vae += ev.at.Sub(decStart)
			images++
		}
		prev = ev.at
	}
	if images > 0 {
		res.VAESeconds = vae.Seconds() / float64(images)
	}
	if res.UNetStepSeconds = median(res.UNetStepsSeconds); res.UNetStepSeconds > 0 {
		res.ItPerS = 1 / res.UNetStepSeconds
	}
}

// ensureRandom returns the cached random SDXL and adapter, generating them
// first when missing.
func ensureRandom(ctx context.Context, c *cli.Context, scale string) (model, adapter string, err error) {
	var sdxl randweights.SDXLConfig
	var pm randweights.PhotoMakerConfig
	version := c.Int("photomaker-version")
	if version < 0 || version > 2 {
		return "", "", usagef("--photomaker-version must be 0 (none), 1 or 2")
	}
	pmVersion := max(version, 1)
	switch scale {
	case "full":
		sdxl, pm = randweights.DefaultSDXL(), randweights.DefaultPhotoMaker(pmVersion)
	case "tiny":
		sdxl, pm = randweights.TinySDXL(), randweights.TinyPhotoMaker(pmVersion)
	default:
		return "", "", usagef("--random-scale must be full or tiny")
	}
	dir := c.String("cache-dir")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", "", fmt.Errorf("no cache folder (set --cache-dir): %w", err)
		}
		dir = filepath.Join(base, "photomaker", "random")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	seed := c.Uint64("seed")
	model = filepath.Join(dir, randweights.FileName("sdxl", scale, seed))
	specs := randweights.SDXLTensors(sdxl)
	if err := ensureFile(c.App.ErrWriter, model, specs, func() error { return randweights.WriteSDXL(ctx, model, seed, sdxl) }); err != nil {
		return "", "", err
	}
	if version == 0 {
		return model, "", nil
	}
	adapter = filepath.Join(dir, randweights.FileName(fmt.Sprintf("photomaker-v%d", version), scale, seed))
	specs = randweights.PhotoMakerTensors(pm)
	if err := ensureFile(c.App.ErrWriter, adapter, specs, func() error { return randweights.WritePhotoMakerConfig(ctx, adapter, seed, pm) }); err != nil {
		return "", "", err
	}
	return model, adapter, nil
}

// ensureFile runs write unless path exists with at least the data specs
// need (files are written to a temporary name and renamed when complete).
func ensureFile(log io.Writer, path string, specs []randweights.Spec, write func() error) error {
	var need int64
	for _, s := range specs {
		need += 2 * s.Elements()
	}
	if st, err := os.Stat(path); err == nil && st.Size() > need {
		return nil
	}
	fmt.Fprintf(log, "generating random weights %s (%s, once)...\n", path, ggml.HumanBytes(need))
	t := time.Now()
	if err := write(); err != nil {
		return fmt.Errorf("generating %s: %w", path, err)
	}
	fmt.Fprintf(log, "  done in %.1fs\n", time.Since(t).Seconds())
	return nil
}

// peakRSS returns the process's peak resident set size in bytes and the
// CPU time (user + system) it has used so far in seconds.
func peakRSS() (int64, float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss), cpu // bytes on macOS
	}
	return int64(ru.Maxrss) * 1024, cpu // KiB on Linux and the BSDs
}

// procStatusBytes reads a "Name: N kB" line of /proc/self/status (Linux); 0 elsewhere.
func procStatusBytes(name string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
					return n * 1024
				}
			}
		}
	}
	return 0
}

// deviceSampler polls a GPU's free memory and keeps the largest use seen
// above what was in use when it started.
type deviceSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	peak int64
}

func startDeviceSampler(d ggml.Device) *deviceSampler {
	s := &deviceSampler{done: make(chan struct{})}
	free0, _ := d.Memory()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if free, total := d.Memory(); total > 0 && free0 > free {
				s.peak = max(s.peak, int64(free0-free))
			}
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *deviceSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	return s.peak
}

func printBench(w io.Writer, r *benchResult) error {
	src := r.Model
	if r.Random {
		src = "random weights (" + r.RandomScale + " size)"
	}
	steps := "steps"
	if r.Steps == 1 {
		steps = "step"
	}
	device := r.Device
	if r.VRAM != "" {
		device += " (vram " + r.VRAM + ")"
	}
	weightType := r.Type
	if r.QuantizeConvs {
		weightType += " (+ q8_0 convs)"
	}
	if r.F16Accumulation {
		weightType += ", f16 accumulation"
	}
	if r.VAEF16 {
		weightType += ", VAE f16 products"
	}
	threads := fmt.Sprintf("%d threads", r.Threads)
	if r.CPUKernels != "" {
		threads += " (our CPU kernels as compiled for " + r.CPUKernels + ")"
	}
	fmt.Fprintf(w, "%s on %s, weights %s, %d×%d, %d %s, batch %d, guidance %g, %s\n%s\n",
		r.Kind, device, weightType, r.Width, r.Height, r.Steps, steps, r.Batch, r.Guidance, threads, src)
	row := func(name, value, note string) { fmt.Fprintf(w, "  %-20s %11s   %s\n", name, value, note) }
	sec := func(s float64) string { // a GPU's steps and encoders take milliseconds
		if s < 1 {
			return fmt.Sprintf("%.1f ms", 1e3*s)
		}
		return fmt.Sprintf("%.2f s", s)
	}
	row("load", sec(r.LoadSeconds), "open, LoRA merge, convert, upload")
	row("text encoders", sec(r.TextEncodeSeconds), "one prompt, CLIP-L + bigG")
	if r.IDImages > 0 {
		row("ID encoder", sec(r.IDEncodeSeconds), fmt.Sprintf("%d photos", r.IDImages))
	}
	row("encode stage", sec(r.EncodeSeconds), "all prompts and the ID encoder")
	step := fmt.Sprintf("median of %d, %.3f it/s; %s at %s", len(r.UNetStepsSeconds), r.ItPerS, flopAmount(r.UNetStepTFLOP), flopRate(r.UNetTFLOPS))
	if len(r.UNetStepsSeconds) > 1 { // the first also pays first uses (GPU graph capture, kernels)
		step += "; the first " + sec(r.UNetStepsSeconds[0])
	}
	row("UNet step", sec(r.UNetStepSeconds), step)
	row("VAE decode", sec(r.VAESeconds), fmt.Sprintf("per image; %s at %s", flopAmount(r.VAETFLOP), flopRate(r.VAETFLOPS)))
	row("generate", sec(r.GenerateSeconds), "encode, denoise, decode (first run)")
	if r.Runs > 1 {
		note := fmt.Sprintf("median of %d more runs; UNet step %.3f s", r.Runs-1, r.WarmUNetStepS)
		if r.WarmUNetStepS > 0 {
			note += " at " + flopRate(r.UNetStepTFLOP/r.WarmUNetStepS)
		}
		row("generate, warm", sec(r.WarmGenerateS), note)
		row("", "", fmt.Sprintf("of which encode %.3f s, first step %.3f s, VAE %.3f s, other %.3f s; loading again %.2f s apart", r.WarmEncodeS, r.WarmFirstStepS, r.WarmVAES, r.WarmOtherS, r.WarmLoadS))
	}
	row("total", sec(r.TotalSeconds), fmt.Sprintf("load + generate (CPU time %.1f s)", r.CPUSeconds))
	row("peak RSS", ggml.HumanBytes(r.PeakRSSBytes), fmt.Sprintf("(mapped model files now: %s)", ggml.HumanBytes(r.RSSFileBytes)))
	note := fmt.Sprintf("at the end: weights %s + compute %s", ggml.HumanBytes(r.DeviceWeights), ggml.HumanBytes(r.DeviceCompute))
	if r.DeviceUsedPeak > 0 {
		note += fmt.Sprintf("; driver reported %s", ggml.HumanBytes(r.DeviceUsedPeak))
	}
	row("peak device memory", ggml.HumanBytes(r.PeakDeviceBytes), note)
	for _, prof := range []struct {
		title string
		ops   []opShare
	}{{"UNet step", r.StepProfile}, {"VAE decode", r.DecodeProfile}} {
		if len(prof.ops) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s by op (profiled: every op synchronized)\n", prof.title)
		for i, op := range prof.ops {
			if i == 12 {
				fmt.Fprintf(w, "  ... %d more ops\n", len(prof.ops)-i)
				break
			}
			fmt.Fprintf(w, "    %-24s %11s   %4.1f %%, %d nodes, %s\n", op.Op, fmt.Sprintf("%.1f ms", op.MS), 100*op.Share, op.Nodes, op.rate())
			if op.Share < shapesShare || len(op.Shapes) < 2 {
				continue
			}
			for j, sh := range op.Shapes {
				if j == shapesShown {
					fmt.Fprintf(w, "      ... %d more shapes\n", len(op.Shapes)-j)
					break
				}
				fmt.Fprintf(w, "      %-40s %9s   %d nodes, %s\n", sh.Op, fmt.Sprintf("%.1f ms", sh.MS), sh.Nodes, sh.rate())
			}
		}
	}
	if r.GenerateWeightsS > 1 {
		fmt.Fprintf(w, "(random weights generated in %.1f s, not counted)\n", r.GenerateWeightsS)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	return nil
}
