package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/weights"
)

func init() { register(infoCommand) }

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "say what a model file or folder is and list its tensors, types and sizes",
		ArgsUsage: "FILE|DIR",
		Description: `Examples:
  photomaker info sd_xl_base_1.0.safetensors
  photomaker info photomaker-v1.bin --tensors
  photomaker info ./stable-diffusion-xl-base-1.0 --json
  photomaker info --type q4_K --width 1024 --height 1024 sd_xl_base_1.0.safetensors
  photomaker info realvisxl-v4     # a model fetched with 'photomaker pull'

For an SDXL checkpoint it also estimates the GPU memory of each --vram mode
(full, low, stream) for one image of --width × --height with the weights
stored as --type (default: as in the file).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "tensors", Usage: "list every tensor (canonical name, type, shape)", EnvVars: envs("tensors")},
			&cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: envs("json")},
			&cli.StringFlag{Name: "type", Usage: "weight type for the GPU memory estimate (f16, q8_0, q4_K, ...; default: as in the file)", EnvVars: envs("type")},
			quantizeConvsFlag(),
			&cli.IntFlag{Name: "width", Value: 1024, Usage: "image width for the GPU memory estimate (a multiple of 8)", EnvVars: envs("width")},
			&cli.IntFlag{Name: "height", Value: 1024, Usage: "image height for the GPU memory estimate (a multiple of 8)", EnvVars: envs("height")},
		},
		Action: func(c *cli.Context) error {
			c, args, err := interspersed(c) // info FILE --tensors
			if err != nil || c == nil {
				return err
			}
			if len(args) != 1 {
				return usagef("info takes one FILE or DIR; got %d arguments", len(args))
			}
			for _, f := range []string{"width", "height"} {
				if err := checkSize(f, c.Int(f)); err != nil {
					return err
				}
			}
			weightType, err := weightTypeFlag(c)
			if err != nil {
				return err
			}
			path, err := resolveModelPath(args[0]) // a catalog name → the file pulled into the cache
			if err != nil {
				return err
			}
			m, err := weights.Open(path)
			if err != nil {
				return err
			}
			defer m.Close()
			type tensor struct {
				Name  string  `json:"name"`
				Type  string  `json:"type"`
				Shape []int64 `json:"shape"`
				Bytes int64   `json:"bytes"`
			}
			var ts []tensor
			byComponent := map[string]int64{}
			counts := map[string]int{}
			var total int64
			add := func(set *weights.Set) {
				for _, n := range set.Names() {
					t, _ := set.Get(n)
					b := max(t.NBytes(), 0) // quantized GGUF tensors count their blocks
					ts = append(ts, tensor{n, string(t.DType), t.Shape, b})
					comp, _, _ := strings.Cut(n, ".")
					byComponent[comp] += b
					counts[comp]++
					total += b
				}
			}
			add(m.Tensors)
			if m.LoRA != nil {
				for _, n := range m.LoRA.Names() {
					t, _ := m.LoRA.Get(n)
					b := max(t.NBytes(), 0) // quantized GGUF tensors count their blocks
					byComponent["lora"] += b
					counts["lora"]++
					total += b
					ts = append(ts, tensor{"lora." + n, string(t.DType), t.Shape, b})
				}
			}
			kind := m.Kind.String()
			if m.Adapter != nil {
				kind += " + " + m.Adapter.Kind.String() + " (LoRA merged)"
			}
			var estimates []photomaker.MemoryEstimate
			if !m.Kind.IsPhotoMaker() && m.Kind != weights.Unknown {
				estimates, err = photomaker.EstimateMemory(photomaker.Config{Model: path, WeightType: weightType, QuantizeConvs: c.Bool("quantize-convs")}, c.Int("width"), c.Int("height"))
				if err != nil {
					return err
				}
			}
			// A file that opens may still miss weights (a damaged GGUF header):
			// said last, and as the exit status.
			var damaged error
			if m.Kind != weights.Unknown {
				if err := photomaker.CheckWeights(m); err != nil {
					damaged = fmt.Errorf("%s cannot be used: %w; download or convert it again", m.Path, err)
				}
			}
			if c.Bool("json") {
				if err := json.NewEncoder(c.App.Writer).Encode(map[string]any{
					"path": m.Path, "kind": kind, "bytes": total, "tensors": ts, "warnings": m.Warnings, "device_memory": estimates,
				}); err != nil {
					return err
				}
				return damaged
			}
			w := c.App.Writer
			fmt.Fprintf(w, "%s: %s, %d tensors, %s\n", m.Path, kind, len(ts), ggml.HumanBytes(total))
			comps := make([]string, 0, len(counts))
			for k := range counts {
				comps = append(comps, k)
			}
			sort.Strings(comps)
			for _, k := range comps {
				fmt.Fprintf(w, "  %-6s %5d tensors  %s\n", k, counts[k], ggml.HumanBytes(byComponent[k]))
			}
			for _, warn := range m.Warnings {
				fmt.Fprintf(w, "  warning: %s\n", warn)
			}
			if len(estimates) > 0 {
				typ := weightType
				if typ == "" {
					typ = "as stored"
				}
				adapter := "without a PhotoMaker adapter"
				if m.Adapter != nil {
					adapter = "with its PhotoMaker adapter"
				}
				fmt.Fprintf(w, "GPU memory for one %d×%d image, weights %s (estimates, %s):\n", c.Int("width"), c.Int("height"), typ, adapter)
				fmt.Fprintf(w, "  %-13s  %10s  %10s\n", "", "generate", "serve")
				for _, e := range estimates {
					fmt.Fprintf(w, "  --vram %-6s  %10s  %10s\n", e.Mode, ggml.HumanBytes(e.Bytes), ggml.HumanBytes(e.ServeBytes))
				}
			}
			if c.Bool("tensors") {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTYPE\tSHAPE\tSIZE")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", t.Name, t.Type, t.Shape, ggml.HumanBytes(t.Bytes))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			return damaged
		},
	}
}
