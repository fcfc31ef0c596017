package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/tools/convert"
	"github.com/gophotomaker/photomaker/weights"
)

func init() { register(convertCommand) }

func convertCommand() *cli.Command {
	typeNames := make([]string, len(convert.Types))
	for i, t := range convert.Types {
		typeNames[i] = t.String()
	}
	return &cli.Command{
		Name:      "convert",
		Aliases:   []string{"quantize"},
		Usage:     "convert or quantize a model (SDXL, optionally with a PhotoMaker adapter) to one GGUF file",
		ArgsUsage: "SRC",
		Description: `SRC is an SDXL checkpoint (single-file .safetensors/.ckpt, diffusers folder, or
one of our .gguf files) or a PhotoMaker adapter on its own; a model fetched with
'photomaker pull' can be named as there (sdxl, photomaker-v1). With --photomaker the
adapter's LoRA is merged into the UNet and its ID encoder is stored too, so the
one file is all 'generate --model' needs.

Biases, norms, embeddings and the VAE stay in float; 3×3 and 1×1 conv kernels
stay f16 under quantized types; k-quants (q*_K) need rows of 256 and fall back
to a 32-block type for SDXL's 320/640-wide rows (q2_K and q3_K to q4_0, q4_K,
q5_K and q6_K to q8_0). --rules overrides this per tensor:
comma-separated REGEX=TYPE pairs matched against canonical names (see
'photomaker info --tensors'); the first matching rule wins.

The file is written to a temporary name and renamed when complete; an
interrupted or failed conversion leaves nothing behind.

Examples:
  photomaker convert sd_xl_base_1.0.safetensors --type f16 -o sdxl-f16.gguf
  photomaker quantize RealVisXL_V4.safetensors --photomaker photomaker-v1.bin --type q4_K -o realvis-pm-q4_K.gguf
  photomaker quantize sdxl.safetensors --type q8_0 --rules '^te[12]\.=f16,attn2\.to_[kv]\.weight$=f16' -o sdxl-q8_0.gguf
  photomaker convert photomaker-v2.bin --type f16 -o photomaker-v2.gguf
  photomaker quantize realvisxl-v4 --photomaker photomaker-v1 --type q4_K -o realvis-pm-q4_K.gguf

Types: ` + strings.Join(typeNames, ", ") + `.
Every flag also reads PHOTOMAKER_<FLAG> (e.g. PHOTOMAKER_TYPE).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "photomaker", Usage: "PhotoMaker adapter to merge in: official .bin, .safetensors or .gguf, or a pulled name", EnvVars: envs("photomaker")},
			&cli.StringFlag{Name: "type", Aliases: []string{"t"}, Usage: "(required) type of the big matrices: " + strings.Join(typeNames, ", "), EnvVars: envs("type")},
			&cli.StringFlag{Name: "rules", Usage: "per-tensor overrides 'REGEX=TYPE,...' (first match wins)", EnvVars: envs("rules")},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "(required) output .gguf file", EnvVars: envs("output")},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing output file", EnvVars: envs("force")},
			&cli.Float64Flag{Name: "lora-scale", Value: 1, Usage: "scale of the adapter's LoRA when merging (above 0, at most 100)", EnvVars: envs("lora-scale")},
			&cli.IntFlag{Name: "threads", Usage: "quantization threads, at most the logical CPUs (default: all cores)", EnvVars: envs("threads")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON report instead of text (and no progress bar)", EnvVars: envs("json")},
		},
		Action: runConvert,
	}
}

func runConvert(c *cli.Context) error {
	c, args, err := interspersed(c)
	if err != nil || c == nil {
		return err
	}
	if len(args) != 1 {
		return usagef("%s takes one SRC (a model file or folder); got %d arguments", c.Command.Name, len(args))
	}
	for _, name := range []string{"type", "output"} {
		if c.String(name) == "" {
			return usagef("--%s is required (see photomaker %s --help)", name, c.Command.Name)
		}
	}
	src, err := resolveModelPath(args[0]) // catalog names → files pulled into the cache
	if err != nil {
		return err
	}
	if err := resolveModelFlags(c); err != nil {
		return err
	}
	typ, err := convert.ParseType(c.String("type"))
	if err != nil {
		return usagef("--type: %v", err)
	}
	rules, err := convert.ParseRules(c.String("rules"))
	if err != nil {
		return usagef("%v", err)
	}
	scale := c.Float64("lora-scale")
	if !(scale > 0 && scale <= weights.MaxLoRAScale) { // NaN too
		return usagef("--lora-scale must be a finite number above 0 and at most %d, got %g", weights.MaxLoRAScale, scale)
	}
	if c.IsSet("lora-scale") && c.String("photomaker") == "" {
		return usagef("--lora-scale is the scale of the --photomaker adapter's LoRA: give the adapter too")
	}
	threads, err := threadsFlag(c)
	if err != nil {
		return err
	}
	outs, err := checkOutputs(c.String("output"), 1, c.Bool("force"))
	if err != nil {
		return err
	}
	out := outs[0]
	if !strings.EqualFold(filepath.Ext(out), ".gguf") { // generate and info tell files by content, people by name
		fmt.Fprintf(c.App.ErrWriter, "photomaker: warning: %s will be a GGUF file; name it .gguf\n", out)
	}
	ctx, stop := interruptible(c)
	defer stop()
	bar := &convertBar{w: c.App.ErrWriter, on: !c.Bool("json"), started: time.Now()}
	rep, err := convert.Convert(ctx, convert.Options{
		Src: src, PhotoMaker: c.String("photomaker"), Type: typ, Rules: rules, Out: out,
		Overwrite: c.Bool("force"), LoRAScale: float32(scale), Threads: threads, Progress: bar.update, Check: photomaker.CheckWeights,
	})
	bar.done()
	if err != nil {
		if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
			return errors.New("interrupted; no output written")
		}
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(rep)
	}
	printReport(c.App.Writer, rep, c.Bool("verbose"))
	return nil
}

// interspersed parses flags that follow positional arguments, as in
// "convert SRC --type q4_K -o OUT" (urfave/cli stops at the first
// argument). It returns a context whose flags include both, and the
// positional arguments; a nil context means help was shown.
func interspersed(c *cli.Context) (*cli.Context, []string, error) {
	fs := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(fs); err != nil {
			return nil, nil, err
		}
	}
	for _, name := range c.LocalFlagNames() { // flags given before the first argument
		if err := fs.Set(name, fmt.Sprint(c.Value(name))); err != nil {
			return nil, nil, usagef("--%s: %v", name, err)
		}
	}
	var pos []string
	rest := c.Args().Slice()
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, cli.ShowSubcommandHelp(c)
			}
			return nil, nil, usagef("%v", err)
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos = append(pos, rest[0])
			rest = rest[1:]
		}
	}
	for _, h := range []string{"help", "h"} {
		if f := fs.Lookup(h); f != nil && f.Value.String() == "true" {
			return nil, nil, cli.ShowSubcommandHelp(c)
		}
	}
	// Give every name of a flag the value set under one of them (-o → --output).
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if v, ok := set[n]; ok {
				for _, other := range f.Names() {
					_ = fs.Set(other, v)
				}
				break
			}
		}
	}
	nc := cli.NewContext(c.App, fs, c)
	nc.Command = c.Command
	return nc, pos, nil
}

func printReport(w io.Writer, rep *convert.Report, verbose bool) {
	fmt.Fprintf(w, "%s: %s, %d tensors, %s (from %s)\n", rep.Out, strings.Join(rep.Kinds, " + "),
		rep.Tensors, ggml.HumanBytes(rep.Bytes), ggml.HumanBytes(rep.SourceBytes))
	if rep.LoRAMerged > 0 {
		fmt.Fprintf(w, "  PhotoMaker LoRA merged into %d UNet weights\n", rep.LoRAMerged)
	}
	types := make([]string, 0, len(rep.ByType))
	for k := range rep.ByType {
		types = append(types, k)
	}
	sort.Slice(types, func(i, j int) bool { return rep.ByType[types[i]].Bytes > rep.ByType[types[j]].Bytes })
	for _, k := range types {
		s := rep.ByType[k]
		fmt.Fprintf(w, "  %-5s %5d tensors  %10s\n", k, s.Tensors, ggml.HumanBytes(s.Bytes))
	}
	if n := len(rep.Fallbacks); n > 0 {
		if verbose {
			fmt.Fprintf(w, "  %d tensors stored in another type than asked:\n", n)
			for _, f := range rep.Fallbacks {
				fmt.Fprintf(w, "    %s\n", f)
			}
		} else {
			fmt.Fprintf(w, "  %d tensors stored in another type than asked (their rows do not fit the blocks); --verbose lists them\n", n)
		}
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

// convertBar draws "convert [====    ] 120/992 name" at most ten times a second.
type convertBar struct {
	mu      sync.Mutex
	w       io.Writer
	on      bool
	drawn   time.Time
	started time.Time
	shown   bool
}

func (b *convertBar) update(done, total int, name string) {
	if !b.on || total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if done < total && time.Since(b.drawn) < 100*time.Millisecond {
		return
	}
	b.drawn = time.Now()
	const width = 30
	filled := width * done / total
	if len(name) > 48 {
		name = "…" + name[len(name)-47:]
	}
	fmt.Fprintf(b.w, "\rconvert [%s%s] %d/%d %-48s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, total, name)
	b.shown = true
}

func (b *convertBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shown {
		fmt.Fprintf(b.w, " %.1fs\n", time.Since(b.started).Seconds())
		b.shown = false
	}
}
