package main

import (
	"io"
	"path/filepath"
	"testing"
)

// FuzzGenerateArgs runs `generate` with arbitrary --width, --height,
// --steps, --n and --seed values and a model file that does not exist:
// whatever the values, it ends with a usage error (2) or an error (1, the
// missing model), never a panic, and never loads anything.
func FuzzGenerateArgs(f *testing.F) {
	f.Add("1024", "1024", "50", "1", "42")
	f.Add("64", "64", "1", "4", "-1")
	f.Add("0", "1024", "50", "1", "42")
	f.Add("1023", "1024", "50", "1", "42")
	f.Add("-8", "-8", "-1", "-1", "-9223372036854775808")
	f.Add("8", "8", "0", "0", "9223372036854775807")
	f.Add("99999999999999999999", "8", "1", "1", "99999999999999999999")
	f.Add("0x40", "0b1000", "1e3", "1.5", "")
	f.Add(" 64", "64 ", "+5", "٣", "0")
	f.Add("8192", "8192", "1000000000", "1", "0")
	f.Add("9223372036854775800", "9223372036854775800", "1", "1", "0")
	f.Add("64", "64", "1", "100000000000", "0")
	f.Add("64", "64", "1", "2147483648", "0")
	f.Add("64", "64", "1", "1000000000000000000", "0")
	f.Add("", "", "", "", "")
	f.Add("--help", "-h", "--steps", "--n=2", "--")
	dir := f.TempDir()
	model := filepath.Join(dir, "no-such-model.safetensors")
	f.Fuzz(func(t *testing.T, width, height, steps, n, seed string) {
		args := []string{"photomaker", "generate", "--model", model, "--prompt", "a cat",
			"--device", "cpu", "-o", filepath.Join(dir, "out.png"),
			"--width=" + width, "--height=" + height, "--steps=" + steps, "--n=" + n, "--seed=" + seed}
		code := run(args, io.Discard, io.Discard)
		if code != 1 && code != 2 {
			t.Fatalf("exit %d for --width=%q --height=%q --steps=%q --n=%q --seed=%q, want 1 or 2", code, width, height, steps, n, seed)
		}
	})
}
