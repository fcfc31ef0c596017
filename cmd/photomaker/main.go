// Command photomaker generates photos of a person from ID photos and a
// prompt (PhotoMaker on SDXL), converts and quantizes model files, and
// reports devices. Run `photomaker --help` for the commands.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/photomaker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks errors caused by how the command was called (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// envs gives a flag its PHOTOMAKER_<NAME> environment variable.
func envs(name string) []string {
	return []string{"PHOTOMAKER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// vramFlag is --vram, shared by the commands that load a pipeline.
func vramFlag() cli.Flag {
	return &cli.StringFlag{Name: "vram", Value: photomaker.VRAMAuto, EnvVars: envs("vram"),
		Usage: "GPU memory mode: auto (the fastest that fits the free memory), full (everything on the GPU), low (encoder weights and cross-attention K/V projections in RAM, VAE in tiles) or stream (low, and UNet weights stream from RAM every step)"}
}

// timestepSpacingFlag is --timestep-spacing, shared like vramFlag
// (samplingFlags checks it).
func timestepSpacingFlag() cli.Flag {
	return &cli.StringFlag{Name: "timestep-spacing", EnvVars: envs("timestep-spacing"),
		Usage: "leading, linspace or trailing (default: the model's scheduler config; SDXL's is leading); few-step models such as SDXL-Lightning and Hyper-SD want trailing"}
}

// quantizeConvsFlag is --quantize-convs, shared like vramFlag.
func quantizeConvsFlag() cli.Flag {
	return &cli.BoolFlag{Name: "quantize-convs", EnvVars: envs("quantize-convs"),
		Usage: "with a quantized --type, also store the UNet's largest convolution kernels as q8_0 (about 230 MiB less for SDXL, slightly less accurate)"}
}

// f16AccumFlag is --f16-accum, shared like vramFlag.
func f16AccumFlag() cli.Flag {
	return &cli.BoolFlag{Name: "f16-accum", EnvVars: envs("f16-accum"),
		Usage: "on a GPU, accumulate products of f16 weights in f16 instead of f32: faster on consumer GPUs, less faithful to the reference images; the CPU always uses f32"}
}

// vaeF16Flag is --vae-f16, shared like vramFlag.
func vaeF16Flag() cli.Flag {
	return &cli.BoolFlag{Name: "vae-f16", EnvVars: envs("vae-f16"),
		Usage: "on a GPU, decode with f16 operands in the VAE's convolutions that follow a group norm (sums stay f32; the rest of the VAE, which would overflow f16, stays f32), PNG values within one level of the f32 decode; the CPU's convolutions stay f32 (our Winograd kernels, faster there)"}
}

// vramMode reads --vram: a usage error unless it names a mode.
func vramMode(c *cli.Context) (string, error) {
	m := strings.ToLower(c.String("vram"))
	if !slices.Contains(photomaker.VRAMModes, m) {
		return "", usagef("--vram %q: want one of %s", c.String("vram"), strings.Join(photomaker.VRAMModes, ", "))
	}
	return m, nil
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "photomaker",
		Usage:     "customized realistic human photos from ID photos and a prompt (PhotoMaker on SDXL, ggml)",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Usage: "log details (backend loading, ggml messages)", EnvVars: envs("verbose")},
		},
		Before: func(c *cli.Context) error {
			level := slog.LevelWarn
			if c.Bool("verbose") {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(logger)
			ggml.Logger = logger
			return registerVirtualGPU()
		},
		Commands: commands(),
		Suggest:  true, // "Did you mean ...?" for a mistyped command or flag
		// --id NAME=F1,F2 carries commas: repeat flags instead of splitting.
		DisableSliceFlagSeparator: true,
		OnUsageError:              flagUsageError,
		ExitErrHandler:            func(*cli.Context, error) {}, // main decides the exit code
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError
		if cmd.ArgsUsage == "" { // takes flags only
			noArgs(cmd)
		}
	}
	return app
}

// flagUsageError is a command's unknown or bad flag as a usage error: the
// flag named with two dashes as the help does (flag's "-width"), the
// command's flag nearest a mistyped one, and where global flags go.
func flagUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	name, unknown := strings.CutPrefix(msg, "flag provided but not defined: -")
	if !unknown {
		return usageError{msg}
	}
	dashes := "--"
	if len(name) == 1 {
		dashes = "-" // -n, -o
	}
	msg = "flag provided but not defined: " + dashes + name
	var flags []cli.Flag
	if c.Command != nil {
		flags = c.Command.Flags
	}
	if s := strings.TrimLeft(cli.SuggestFlag(flags, name, true), "-"); s != "" && editDistance(s, name) <= max(2, len(name)/3) {
		msg += fmt.Sprintf("; did you mean --%s?", s)
	}
	for _, f := range c.App.Flags {
		if c.Command != nil && slices.Contains(f.Names(), name) {
			msg += fmt.Sprintf(" (--%s goes before the command: photomaker --%s %s ...)", name, name, c.Command.Name)
		}
	}
	return usageError{msg}
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// registerVirtualGPU adds ggml.RegisterVirtualGPU's device ("vgpu", never
// picked by "auto") when $PHOTOMAKER_VIRTUAL_GPU gives its memory in GiB: a
// GPU's graphs computed on the CPU, for developers without a GPU (bench
// --device vgpu --profile counts a GPU step's ops).
func registerVirtualGPU() error {
	v := os.Getenv("PHOTOMAKER_VIRTUAL_GPU")
	if v == "" {
		return nil
	}
	gib, err := strconv.ParseUint(v, 10, 16)
	if err != nil || gib == 0 {
		return usagef("PHOTOMAKER_VIRTUAL_GPU=%q: give the virtual GPU's memory in GiB, such as 24", v)
	}
	ggml.RegisterVirtualGPU(gib << 30)
	return nil
}

// commandConstructors is filled by each command's file (register in an
// init function), so commands can be added without touching this file.
var commandConstructors []func() *cli.Command

func register(f func() *cli.Command) { commandConstructors = append(commandConstructors, f) }

func commands() []*cli.Command {
	out := make([]*cli.Command, 0, len(commandConstructors))
	for _, f := range commandConstructors {
		out = append(out, f())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// run executes the CLI and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(args)
	if err == nil {
		return 0
	}
	msg := "photomaker: " + err.Error()
	var ue usageError
	// A request the pipeline refuses (size, steps, trigger word, ID photos
	// that do not fit the adapter) was asked for on the command line too.
	if errors.As(err, &ue) || errors.Is(err, photomaker.ErrInvalidRequest) || strings.HasPrefix(err.Error(), "flag provided but not defined") || strings.Contains(err.Error(), "Required flag") || strings.HasPrefix(err.Error(), "No help topic") {
		fmt.Fprintf(stderr, "%s\nRun 'photomaker --help' for usage.\n", msg)
		return 2
	}
	fmt.Fprintln(stderr, msg)
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }
