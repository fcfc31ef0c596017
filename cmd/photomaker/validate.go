package main

import (
	"errors"
	"fmt"
	"image"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/photomaker"
	"github.com/gophotomaker/photomaker/sampling"
	"github.com/gophotomaker/photomaker/sampling/rng"
	"github.com/gophotomaker/photomaker/tokenizer"
	"github.com/gophotomaker/photomaker/weights"
)

// maxIDPhotos is the most ID photos of one person: the ID prompt repeats
// the class word per photo, and the copies must fit the 77-token window
// (photomaker.TokenizeIDPrompt refuses more).
const maxIDPhotos = tokenizer.MaxLen

// noArgs makes cmd refuse positional arguments: urfave/cli stops reading
// flags at the first one, so `--prompt a photo` would run with the prompt
// "a" and drop every later flag. Its required flags are checked after the
// arguments, so a stray argument is named rather than the flag after it.
func noArgs(cmd *cli.Command) {
	var required []string
	for _, f := range cmd.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Required {
			sf.Required = false
			required = append(required, sf.Name)
		}
	}
	next := cmd.Before
	cmd.Before = func(c *cli.Context) error {
		first := c.Args().First()
		switch {
		case c.NArg() > 0 && c.Command.Command(first) != nil: // "help", a subcommand
		case c.NArg() > 0:
			msg := fmt.Sprintf("unexpected argument %q: %s takes only flags", first, c.Command.Name)
			if slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "prompt") }) {
				msg += `; quote a prompt with spaces ("a photo of ...")`
			}
			return usageError{msg}
		default:
			for _, name := range required {
				if !c.IsSet(name) {
					return usagef("--%s is required (see photomaker %s --help)", name, c.Command.Name)
				}
			}
		}
		if next != nil {
			return next(c)
		}
		return nil
	}
}

// threadsFlag reads --threads (0: the library's default). More threads
// than logical CPUs make ggml's threads wait on each other (3 on a 2-core
// machine took 20 s instead of 0.12 s), so they are capped with a warning.
func threadsFlag(c *cli.Context) (int, error) {
	n := c.Int("threads")
	if n < 0 {
		return 0, usagef("--threads must not be negative (0: the default), got %d", n)
	}
	if cpus := runtime.NumCPU(); n > cpus {
		fmt.Fprintf(c.App.ErrWriter, "photomaker: warning: --threads %d is more than the %d logical CPUs; using %d\n", n, cpus, cpus)
		return cpus, nil
	}
	return n, nil
}

// weightTypeFlag is --type, checked before anything loads: a mistyped name
// is a usage error.
func weightTypeFlag(c *cli.Context) (string, error) {
	t := c.String("type")
	if err := photomaker.CheckWeightType(t); err != nil {
		return "", usagef("--type: %v", err)
	}
	return t, nil
}

// samplingFlags checks --sampler, --timestep-spacing and --rng before
// anything loads; empty values take the library's defaults.
func samplingFlags(c *cli.Context) error {
	if s := c.String("sampler"); s != "" && sampling.Known(s) != nil {
		return usagef("unknown --sampler %q (want euler, euler_a, dpmpp_2m or ddim)", s)
	}
	if _, err := sampling.ParseTimestepSpacing(c.String("timestep-spacing")); err != nil {
		return usagef("--timestep-spacing: %v", err)
	}
	if r := strings.TrimSpace(c.String("rng")); r != "" {
		if _, err := rng.New(strings.ToLower(r), 0); err != nil {
			return usagef("unknown --rng %q (want torch-cuda or torch-cpu)", c.String("rng"))
		}
	}
	return nil
}

// guidanceFlag reads --guidance for a request, where 0 would mean the
// default: an explicit 0 is photomaker.NoGuidance (Result.Request reports
// it as 0).
func guidanceFlag(c *cli.Context) (float64, error) {
	g := c.Float64("guidance")
	if math.IsNaN(g) || g < 0 || g > photomaker.MaxGuidance { // ±Inf fail the range
		return 0, usagef("--guidance must be a finite number from 0 to %g (0 turns guidance off), got %g", float64(photomaker.MaxGuidance), g)
	}
	if g == 0 {
		return photomaker.NoGuidance, nil
	}
	return g, nil
}

// styleStrengthFlag is guidanceFlag for --style-strength.
func styleStrengthFlag(c *cli.Context) (float64, error) {
	s := c.Float64("style-strength")
	if math.IsNaN(s) || s < 0 || s > 100 {
		return 0, usagef("--style-strength is a percentage from 0 to 100, got %g", s)
	}
	if s == 0 {
		return photomaker.NoStyleDelay, nil
	}
	return s, nil
}

// checkLoRAScale refuses scales that would fill the merged weights with
// infinities or NaNs.
func checkLoRAScale(flag string, v float64) error {
	if math.IsNaN(v) || math.Abs(v) > weights.MaxLoRAScale {
		return usagef("%s: the scale must be a finite number from -%d to %d, got %g", flag, weights.MaxLoRAScale, weights.MaxLoRAScale, v)
	}
	return nil
}

// checkSize refuses a width or height that is not a positive multiple of 8.
func checkSize(flag string, v int) error {
	if v < 8 || v%8 != 0 {
		return usagef("--%s must be a positive multiple of 8, got %d", flag, v)
	}
	return nil
}

// checkOutputs checks, before anything is loaded, every file a run will
// write for --output out (n images: outputNames) and returns their names.
// A run of minutes must not end in an error about a missing folder, and
// --force replaces only regular files: renaming over a folder fails late,
// and over a device (-o /dev/full as root) would replace the device node.
func checkOutputs(out string, n int, force bool) ([]string, error) {
	switch out {
	case "":
		return nil, usagef("--output is empty; give a file name")
	case "-":
		return nil, usagef("writing to standard output is not supported; give a file name")
	}
	names := outputNames(out, n)
	for _, p := range names {
		dir := filepath.Dir(p)
		st, err := os.Stat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("cannot write %s: folder %s does not exist", p, dir)
		case err != nil:
			return nil, fmt.Errorf("cannot write %s: folder %s: %v", p, dir, pathErr(err))
		case !st.IsDir():
			return nil, fmt.Errorf("cannot write %s: %s is not a folder", p, dir)
		}
		st, err = os.Lstat(p)
		switch {
		case err == nil && !st.Mode().IsRegular():
			return nil, fmt.Errorf("%s is %s, not a file: choose another --output (--force replaces only files)", p, fileKind(st.Mode()))
		case err == nil && !force:
			return nil, fmt.Errorf("%s already exists; choose another --output or pass --force", p)
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("cannot write %s: %v", p, pathErr(err))
		}
		// Outputs go to a temporary file next to them (atomicfile): try one.
		f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".check*")
		if err != nil {
			return nil, fmt.Errorf("cannot write %s: cannot create files in %s: %v", p, dir, pathErr(err))
		}
		f.Close()
		os.Remove(f.Name())
	}
	return names, nil
}

// pathErr is the reason of a *fs.PathError, without the path (which may
// be a temporary name the user never gave).
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// fileKind names what a non-regular file is.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// decodeIDImage decodes an ID photo, reduced at once to what the ID
// encoder reads of it (photomaker.IDPhoto: eight camera photos held whole
// take gigabytes); a folder or an empty file is named as such (the decoder
// would call either "not an image").
func decodeIDImage(path string) (image.Image, error) {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, err
	case st.IsDir():
		return nil, fmt.Errorf("%s is a folder, not an image", path)
	case st.Mode().IsRegular() && st.Size() == 0:
		return nil, fmt.Errorf("%s is empty", path)
	}
	img, err := imageproc.DecodeFile(path, imageproc.Limits{})
	if err != nil {
		return nil, err
	}
	return photomaker.IDPhoto(img), nil
}

// parseLoRAs reads --lora FILE[:SCALE] values. Text after the last ':'
// that reads as a number is the scale, even when it is out of range
// (FILE:1e39 is a bad scale, not a file named so).
func parseLoRAs(specs []string) ([]photomaker.LoRA, error) {
	var out []photomaker.LoRA
	for _, s := range specs {
		l := photomaker.LoRA{Path: s, Scale: 1}
		if i := strings.LastIndex(s, ":"); i > 0 {
			v, err := strconv.ParseFloat(s[i+1:], 64)
			if err == nil || errors.Is(err, strconv.ErrRange) {
				if err := checkLoRAScale("--lora "+s, v); err != nil {
					return nil, err
				}
				l.Path, l.Scale = s[:i], float32(v)
			}
		}
		if _, err := os.Stat(l.Path); err != nil {
			return nil, usagef("--lora %s: %v", s, err)
		}
		out = append(out, l)
	}
	return out, nil
}
