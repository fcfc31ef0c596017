// Package randweights writes full-size model files with random weights in
// the real layouts — an original single-file SDXL checkpoint and the
// flattened PhotoMaker v1/v2 adapter — so speed and memory can be measured
// without downloading anything.
//
// Files are fp16 and deterministic: the bytes depend only on the seed and
// the configuration (not on the machine, the Go version or the number of
// cores). Each tensor is initialised the way its reference implementation
// initialises a new model, as the reference kit's random models are:
// PyTorch's default for diffusers' UNet and VAE layers (weights and biases
// uniform in ±1/√fan_in), transformers' CLIP rules for the text and vision
// encoders (normal, with standard deviations from the width and depth),
// norm scales one. Normal values are a sum of four uniforms, so their
// tails stop at ±3.46σ.
// Tensors are generated while the file is written, so writing the 7 GB SDXL
// file holds at most two tensors in memory.
package randweights

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"

	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Init says how a tensor is filled.
type Init int

// Initialisations.
const (
	Normal  Init = iota // ≈ N(0, Spec.Scale²)
	Uniform             // U(−Spec.Scale, Spec.Scale)
	Ones
	Zeros
)

// Std is CLIP's initializer_range: the standard deviation of its
// embeddings.
const Std = 0.02

// Generation numbers the generator's output. It changes whenever the values
// written for a seed change, so files cached under it are regenerated.
// Generation 1 drew every matrix from N(0, 0.02²) with zero biases; 2
// initialises each tensor like its reference implementation.
const Generation = 2

// FileName is the name under which `photomaker bench --random` caches a
// random model ("sdxl" or "photomaker-v1"…) of a scale ("full", "tiny") and
// seed: it carries Generation, so a changed generator never reuses old files.
func FileName(model, scale string, seed uint64) string {
	return fmt.Sprintf("%s-%s-seed%d-g%d.safetensors", model, scale, seed, Generation)
}

// Spec is one tensor of a file: its name, PyTorch-order shape and filling.
type Spec struct {
	Name  string
	Shape []int64
	Init  Init
	Scale float64 // standard deviation (Normal) or bound (Uniform)
}

// Elements returns the product of the shape.
func (s Spec) Elements() int64 {
	n := int64(1)
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Params sums the elements of specs whose name starts with prefix ("" for all).
func Params(specs []Spec, prefix string) int64 {
	var n int64
	for _, s := range specs {
		if len(s.Name) >= len(prefix) && s.Name[:len(prefix)] == prefix {
			n += s.Elements()
		}
	}
	return n
}

// WriteSDXL writes a single-file SDXL checkpoint of size cfg with random
// fp16 weights derived from seed.
func WriteSDXL(ctx context.Context, path string, seed uint64, cfg SDXLConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return Write(ctx, path, seed, SDXLTensors(cfg), map[string]string{
		"format": "pt", "generator": "photomaker randweights", "seed": fmt.Sprint(seed)})
}

// Write writes specs as an fp16 .safetensors file with values derived from
// seed, generating each tensor while the previous one is being written.
// When ctx ends it stops between tensors and leaves no file.
func Write(ctx context.Context, path string, seed uint64, specs []Spec, metadata map[string]string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan []byte, 1) // one tensor generated ahead of the writer
	go func() {
		defer close(ready)
		for _, s := range specs {
			b := Generate(s, seed)
			select {
			case ready <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	entries := make([]safetensors.Entry, len(specs))
	for i, s := range specs {
		entries[i] = safetensors.Entry{Name: s.Name, DType: safetensors.F16, Shape: s.Shape, Data: func() ([]byte, error) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			b, ok := <-ready
			if !ok {
				return nil, fmt.Errorf("randweights: generator stopped before %s", s.Name)
			}
			return b, nil
		}}
	}
	return safetensors.Write(path, entries, metadata)
}

// chunk is the number of values drawn from one random stream; chunks are
// generated in parallel and each has its own seed, so the result does not
// depend on the number of cores.
const chunk = 1 << 20

// Generate returns the fp16 bytes of one tensor.
func Generate(s Spec, seed uint64) []byte {
	n := s.Elements()
	out := make([]byte, 2*n)
	switch s.Init {
	case Zeros:
		return out
	case Ones:
		one := half.F32ToF16(1)
		for i := int64(0); i < n; i++ {
			binary.LittleEndian.PutUint16(out[2*i:], one)
		}
		return out
	}
	fill := func(dst []byte, state uint64) { fillNormal(dst, state, s.Scale) }
	if s.Init == Uniform {
		fill = func(dst []byte, state uint64) { fillUniform(dst, state, s.Scale) }
	}
	base := tensorSeed(seed, s.Name)
	chunks := int((n + chunk - 1) / chunk)
	workers := min(runtime.GOMAXPROCS(0), chunks)
	var wg sync.WaitGroup
	next := make(chan int, chunks)
	for c := 0; c < chunks; c++ {
		next <- c
	}
	close(next)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				lo := int64(c) * chunk
				hi := min(lo+chunk, n)
				fill(out[2*lo:2*hi], splitmix(base^uint64(c)*0x9e3779b97f4a7c15))
			}
		}()
	}
	wg.Wait()
	return out
}

// tensorSeed mixes the file seed with the tensor's name.
func tensorSeed(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return splitmix(seed ^ splitmix(h.Sum64()))
}

// splitmix is SplitMix64's output function.
func splitmix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// fillNormal writes len(dst)/2 fp16 values ≈ N(0, std²): each is the sum
// of four 16-bit uniforms of one SplitMix64 draw,
// centred and scaled to the standard deviation (Irwin–Hall, exact integer
// arithmetic up to one correctly rounded float32 multiply).
func fillNormal(dst []byte, state uint64, std float64) {
	const sqrt3 = 1.7320508075688772
	scale := float32(std * sqrt3 / 65536)
	for i := 0; i+1 < len(dst); i += 2 {
		z := splitmix(state) // the stream's next draw
		state += 0x9e3779b97f4a7c15
		s := int32(z&0xffff) + int32(z>>16&0xffff) + int32(z>>32&0xffff) + int32(z>>48)
		v := float32(s-131070) * scale
		binary.LittleEndian.PutUint16(dst[i:], half.F32ToF16(v))
	}
}

// fillUniform writes len(dst)/2 fp16 values uniform in (−bound, bound):
// the midpoints of 2²⁴ equal cells, one SplitMix64 draw each.
func fillUniform(dst []byte, state uint64, bound float64) {
	step := 2 * bound / (1 << 24)
	for i := 0; i+1 < len(dst); i += 2 {
		cell := int64(splitmix(state)>>40) - 1<<23
		state += 0x9e3779b97f4a7c15
		v := float32((float64(cell) + 0.5) * step)
		binary.LittleEndian.PutUint16(dst[i:], half.F32ToF16(v))
	}
}
