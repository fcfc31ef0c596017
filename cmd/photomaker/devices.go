package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

func init() { register(devicesCommand) }

func devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list the CPU and any GPUs a backend library was found for, with their memory",
		Description: `GPU backends are shared libraries (libggml-cuda.so, ...) built with
'make cuda' and loaded from the folders in $PHOTOMAKER_LIB_PATH, the
executable's folder or <exe>/../lib/photomaker. Names shown here are what
--device accepts (lower-case names such as cpu, cuda or cuda:1 work too).

Example:
  photomaker devices
  PHOTOMAKER_LIB_PATH=/opt/photomaker/lib photomaker devices --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: envs("json")},
		},
		Action: func(c *cli.Context) error {
			type row struct {
				Name        string `json:"name"`
				Description string `json:"description"`
				Type        string `json:"type"`
				Backend     string `json:"backend"`
				FreeBytes   uint64 `json:"free_bytes"`
				TotalBytes  uint64 `json:"total_bytes"`
			}
			var rows []row
			for _, d := range ggml.Devices() {
				free, total := d.Memory()
				rows = append(rows, row{d.Name, d.Description, d.Type.String(), d.Library, free, total})
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tBACKEND\tMEMORY FREE / TOTAL\tDESCRIPTION")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s / %s\t%s\n", r.Name, r.Type, r.Backend,
					ggml.HumanBytes(int64(r.FreeBytes)), ggml.HumanBytes(int64(r.TotalBytes)), r.Description)
			}
			if simd := ggml.MissingSIMD(); simd != "" {
				fmt.Fprintf(tw, "\nThis binary's CPU kernels were compiled without %s, which this CPU has: %s. Build with 'make'.\n", simd, ggml.MissingSIMDEffect(simd))
			} else if ggml.CPUKernelsOutpaceGGML() {
				fmt.Fprintf(tw, "\nThis binary's ggml was compiled for any x86-64 CPU (SSE2), our CPU kernels also for x86-64-v3 and x86-64-v4; they run as compiled for %s on this CPU and take the products of every weight type ('make', which builds everything for this CPU, was a few percent faster on an AVX2 machine).\n", ggml.KernelTarget())
			} else if types := unrepackedTypes(); len(types) > 0 {
				fmt.Fprintf(tw, "\nThis binary's ggml lacks the CPU's repacked %s products (about 1.6× faster on the CPU). Build with 'make'.\n", strings.Join(types, "/"))
			}
			if t := ggml.KernelTarget(); t != "" && !ggml.CPUKernelsOutpaceGGML() {
				fmt.Fprintf(tw, "\nThis binary was compiled for x86-64-v3 (a portable build), our CPU kernels also for x86-64-v4 with VNNI; they run as compiled for %s on this CPU.\n", t)
			}
			if simd := ggml.UnusedSIMD(); simd != "" {
				fmt.Fprintf(tw, "\nThis CPU has %s, which this binary's own CPU kernels were not compiled for (a portable build): 'make' builds them for it (1.6× faster on a Zen 5).\n", simd)
			}
			if len(ggml.LoadBackends()) == 0 {
				fmt.Fprintf(tw, "\nNo GPU backend library found (looked in $%s, next to the executable and in <exe>/../lib/photomaker); build one with 'make cuda'.\n", ggml.LibraryPathEnv)
			}
			return tw.Flush()
		},
	}
}

// unrepackedTypes are the weight types whose CPU products would be faster
// repacked for ggml's kernels but are not: this binary's ggml cannot
// repack, and our kernels do not multiply them.
func unrepackedTypes() []string {
	var types []string
	for _, t := range []ggml.Type{ggml.TypeQ4_K, ggml.TypeQ4_0} {
		if !ggml.CanRepack() && !ggml.CPUKernelsTakeInts(t) {
			types = append(types, t.String())
		}
	}
	return types
}
