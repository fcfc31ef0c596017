// Package rng reproduces PyTorch's random number generators closely enough
// that a Go pipeline seeded like a PyTorch one starts from the same noise.
//
//   - "torch-cpu": torch.Generator("cpu").manual_seed(seed) followed by
//     torch.randn(..., dtype=float32). Bit-exact (mt19937 + the AVX2
//     Box–Muller path for tensors of 16 elements or more, the double-precision
//     scalar path with a cached second normal below 16).
//   - "torch-cuda": torch.Generator("cuda").manual_seed(seed) followed by
//     torch.randn(..., dtype=float32, device="cuda"). Philox4x32-10 streams and
//     the thread layout of PyTorch's CUDA normal kernel are reproduced exactly;
//     the only difference is the final sine, which CUDA evaluates with the
//     approximate hardware instruction behind __sincosf. See TorchCUDA.
package rng

import (
	"fmt"
	"strings"
)

// Source produces standard normal float32 samples. Successive calls continue
// the stream, exactly as successive torch.randn calls on one generator do:
// Normal(n) is one torch.randn call for a tensor of n elements.
type Source interface {
	Normal(n int) []float32
}

// Names lists the generator names New accepts.
var Names = []string{"torch-cpu", "torch-cuda"}

// New returns the named generator seeded with seed.
func New(name string, seed uint64) (Source, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "torch-cpu", "cpu":
		return NewTorchCPU(seed), nil
	case "torch-cuda", "cuda":
		return NewTorchCUDA(seed), nil
	}
	return nil, fmt.Errorf("rng: unknown generator %q (known: %s)", name, strings.Join(Names, ", "))
}
