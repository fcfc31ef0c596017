package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/server"
)

func init() { register(serveCommand) }

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve a web page and an HTTP JSON API for generating images",
		Description: `Loads the model once and serves a web page (upload ID photos, prompt,
style, size, live progress, gallery) and a JSON API on --addr. Jobs run one
at a time; up to --max-queue more wait, further requests get 429.

  photomaker serve --model RealVisXL_V4.safetensors --photomaker photomaker-v1.bin
  # then open http://127.0.0.1:8080
  # a few-step (Lightning) checkpoint, with its own defaults for the page
  photomaker serve --model RealVisXL_V4_Lightning.safetensors --photomaker photomaker-v1.bin \
    --timestep-spacing trailing --steps 6 --guidance 1.5

API: POST /api/generate (multipart: prompt, style, width, height, steps,
guidance, seed, n, style_strength, negative_prompt, sampler, karras,
timestep_spacing, rng + id_image[] files; or JSON) → 202 {"id": ...}; GET /api/jobs/{id}; GET /api/jobs/{id}/events
(Server-Sent Events); GET /api/jobs/{id}/images/0.png; DELETE /api/jobs/{id};
GET /api/info. POST /api/generate?wait=1 answers with the PNG when done and
cancels the job if the client disconnects. A job that fails answers 400 (a
bad request), 507 (too large for this machine's memory; the error says
what would fit), 504 (over --job-timeout), 409 (canceled) or 500.

Other web sites cannot use it through a visitor's browser: POST and DELETE
with another site's Origin get 403, and on a loopback address (the
default) requests for other host names get 403 (DNS rebinding). A proxy in
front must keep the Host and Origin the browser sent.

Every flag also reads PHOTOMAKER_<FLAG> (e.g. PHOTOMAKER_ADDR).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "address to listen on (host:port; 0.0.0.0:8080 for every interface)", EnvVars: envs("addr")},
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "SDXL checkpoint: single-file .safetensors/.ckpt, diffusers folder, .gguf, or a name pulled with 'photomaker pull' (sdxl, realvisxl-v4)", EnvVars: envs("model"), Required: true},
			&cli.StringFlag{Name: "photomaker", Usage: "PhotoMaker adapter (.bin, .safetensors or .gguf, or photomaker-v1/photomaker-v2 once pulled); without it the server does plain SDXL text-to-image", EnvVars: envs("photomaker")},
			&cli.StringFlag{Name: "device", Value: "auto", Usage: "auto, cpu, cuda, cuda:1, metal, ...", EnvVars: envs("device")},
			&cli.StringFlag{Name: "type", Usage: "store weights as f32, f16, q8_0, q4_K, ... (default: as in the file)", EnvVars: envs("type")},
			&cli.IntFlag{Name: "threads", Usage: "CPU threads, at most the logical CPUs (default: one per physical core)", EnvVars: envs("threads")},
			vramFlag(),
			timestepSpacingFlag(),
			&cli.IntFlag{Name: "steps", Value: photomaker.DefaultSteps, Usage: "denoising steps of requests that leave them out (and the web page's default)", EnvVars: envs("steps")},
			&cli.Float64Flag{Name: "guidance", Value: photomaker.DefaultGuidance, Usage: "guidance of requests that leave it out (and the web page's default), 0 to 50; 0 turns it off", EnvVars: envs("guidance")},
			quantizeConvsFlag(),
			f16AccumFlag(),
			vaeF16Flag(),
			&cli.IntFlag{Name: "max-queue", Value: server.DefaultMaxQueue, Usage: "jobs that may wait behind the running one; more get 429", EnvVars: envs("max-queue")},
			&cli.IntFlag{Name: "max-upload-mb", Value: server.DefaultMaxUploadBytes >> 20, Usage: "largest request body in MiB (ID photos included); larger get 413", EnvVars: envs("max-upload-mb")},
			&cli.IntFlag{Name: "max-images", Value: server.DefaultMaxImages, Usage: "most ID photos per request", EnvVars: envs("max-images")},
			&cli.IntFlag{Name: "max-steps", Value: server.DefaultMaxSteps, Usage: "most denoising steps per job", EnvVars: envs("max-steps")},
			&cli.IntFlag{Name: "max-side", Value: server.DefaultMaxSide, Usage: "largest output width or height in pixels (a multiple of 8)", EnvVars: envs("max-side")},
			&cli.DurationFlag{Name: "job-timeout", Value: server.DefaultJobTimeout, Usage: "longest a job may run (0: no limit)", EnvVars: envs("job-timeout")},
		},
		Action: runServe,
	}
}

// serveStop, when set by a test, stops the server like Ctrl-C does.
var serveStop chan struct{}

func runServe(c *cli.Context) error {
	for _, f := range []string{"max-queue", "max-upload-mb", "max-images", "max-steps", "max-side"} {
		if c.Int(f) < 1 {
			return usagef("--%s must be at least 1 (got %d)", f, c.Int(f))
		}
	}
	if err := checkSize("max-side", c.Int("max-side")); err != nil {
		return err
	}
	if c.Duration("job-timeout") < 0 {
		return usagef("--job-timeout must not be negative")
	}
	threads, err := threadsFlag(c)
	if err != nil {
		return err
	}
	weightType, err := weightTypeFlag(c)
	if err != nil {
		return err
	}
	if err := samplingFlags(c); err != nil { // --timestep-spacing
		return err
	}
	steps := c.Int("steps")
	if !c.IsSet("steps") {
		steps = min(steps, c.Int("max-steps")) // the default within a lower --max-steps
	}
	if steps < 1 || steps > c.Int("max-steps") {
		return usagef("--steps must be 1 to --max-steps (%d), got %d", c.Int("max-steps"), steps)
	}
	guidance, err := guidanceFlag(c)
	if err != nil {
		return err
	}
	modelName, adapterName := c.String("model"), c.String("photomaker") // as the user named them
	if err := resolveModelFlags(c); err != nil {                        // catalog names → files pulled into the cache
		return err
	}
	for _, f := range []string{"model", "photomaker"} {
		if p := c.String(f); p != "" {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("--%s %s: %w", f, p, errors.Unwrap(err))
			}
		}
	}

	vram, err := vramMode(c)
	if err != nil {
		return err
	}
	// Take the port before the (slow) model load, so a clash is reported at once.
	addr := c.String("addr")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("address %s is in use; pick another with --addr", addr)
		}
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	defer ln.Close()

	ctx, stop := interruptible(c)
	defer stop()
	bar := newProgress(c.App.ErrWriter, true)
	// Plan device memory for SDXL's native size: planning for --max-side
	// would push every request into a slower mode for the rare large one
	// (which then tiles its decode, or is refused with the sizes).
	plan := min(c.Int("max-side"), 1024)
	p, err := photomaker.Load(ctx, photomaker.Config{
		Model: c.String("model"), PhotoMaker: c.String("photomaker"), Device: c.String("device"),
		Threads: threads, WeightType: weightType, Progress: bar.update, TimestepSpacing: c.String("timestep-spacing"),
		VRAM: vram, PlanWidth: plan, PlanHeight: plan, QuantizeConvs: c.Bool("quantize-convs"), F16Accumulation: c.Bool("f16-accum"), VAEF16: c.Bool("vae-f16"),
	})
	bar.done()
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted while loading the model")
		}
		return err
	}
	defer p.Close()

	jobTimeout := c.Duration("job-timeout")
	if jobTimeout == 0 {
		jobTimeout = -1 // no limit
	}
	srv := server.New(p, server.Options{
		MaxQueue:       c.Int("max-queue"),
		MaxUploadBytes: int64(c.Int("max-upload-mb")) << 20,
		MaxImages:      c.Int("max-images"),
		MaxSteps:       c.Int("max-steps"),
		MaxSide:        c.Int("max-side"),
		Steps:          steps,
		Guidance:       guidance,
		JobTimeout:     jobTimeout,
		ModelName:      modelName,
		AdapterName:    adapterName,
		Version:        version,
	})
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(c.App.Writer, "photomaker: serving %s on %s at http://%s/ (Ctrl-C to stop)\n", p.Kind(), p.Device(), ln.Addr())

	select {
	case err = <-served:
		srv.Close()
		return fmt.Errorf("serving on %s: %w", addr, err)
	case <-ctx.Done():
	case <-serveStop:
	}
	stop() // a second Ctrl-C kills the process the usual way
	fmt.Fprintln(c.App.ErrWriter, "photomaker: shutting down (canceling running and queued jobs)")
	// Cancel the jobs first: their waiting requests and event streams end
	// with them, so the HTTP shutdown below does not wait on them.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: the running job did not stop in time: %w", err)
	}
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	return nil
}
