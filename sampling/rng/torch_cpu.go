package rng

import "math"

// TorchCPU reproduces torch.Generator("cpu") (mt19937) and torch.randn's
// float32 kernel bit for bit.
//
// PyTorch fills a contiguous float32 tensor of n >= 16 elements in two passes:
// first n uniforms u = (r & 0xFFFFFF) / 2^24 from one 32-bit mt19937 output
// each, then Box–Muller on blocks of 16 (element j and j+8 of a block are the
// cosine and sine branch of the pair (1-u[j], u[j+8])); a tail that is not a
// multiple of 16 is handled by drawing 16 fresh uniforms for the last 16
// elements and transforming them as a block. On x86 builds this transform is
// the AVX2 kernel built on the cephes-derived log256_ps / sincos256_ps
// (avx_mathfun.h), emulated here operation by operation in float32
// (PyTorch never dispatches normal_ to its AVX-512 kernels).
//
// Below 16 elements PyTorch draws doubles: u = (r64 & (2^53-1)) / 2^53 from
// two 32-bit outputs (first one high), Box–Muller in float64 with
// r = sqrt(-2·log1p(-u2)), θ = 2π·u1, returns r·cos θ and caches r·sin θ in
// the generator for the next scalar-path sample (the cache survives calls).
type TorchCPU struct {
	mt         *mt19937
	nextNormal float64
	hasNext    bool
}

// NewTorchCPU returns torch.Generator("cpu").manual_seed(seed).
func NewTorchCPU(seed uint64) *TorchCPU {
	g := &TorchCPU{}
	g.Seed(seed)
	return g
}

// Seed resets the generator like manual_seed (also dropping the cached
// normal).
func (g *TorchCPU) Seed(seed uint64) {
	g.mt = newMT19937(seed)
	g.hasNext = false
	g.nextNormal = 0
}

func (g *TorchCPU) random() uint32 { return g.mt.next() }

func (g *TorchCPU) random64() uint64 {
	hi := uint64(g.mt.next())
	lo := uint64(g.mt.next())
	return hi<<32 | lo
}

// uniform24 is at::uniform_real_distribution<float>(0, 1).
func (g *TorchCPU) uniform24() float32 {
	return float32(float64(g.random()&(1<<24-1)) * (1.0 / (1 << 24)))
}

// uniform53 is at::uniform_real_distribution<double>(0, 1).
func (g *TorchCPU) uniform53() float64 {
	return float64(g.random64()&(1<<53-1)) * (1.0 / (1 << 53))
}

// normalDouble is at::normal_distribution<double>(0, 1).
func (g *TorchCPU) normalDouble() float64 {
	if g.hasNext {
		g.hasNext = false
		return g.nextNormal
	}
	u1 := g.uniform53()
	u2 := g.uniform53()
	r := math.Sqrt(-2.0 * math.Log1p(-u2))
	theta := 2.0 * math.Pi * u1
	g.nextNormal, g.hasNext = r*math.Sin(theta), true
	return r * math.Cos(theta)
}

// Normal is torch.randn(n, generator=g) in float32.
func (g *TorchCPU) Normal(n int) []float32 {
	out := make([]float32, n)
	g.NormalInto(out)
	return out
}

// NormalInto fills dst like torch.randn(len(dst)) (one call, one tensor).
func (g *TorchCPU) NormalInto(dst []float32) {
	n := len(dst)
	if n < 16 {
		for i := range dst {
			dst[i] = float32(g.normalDouble())
		}
		return
	}
	for i := range dst {
		dst[i] = g.uniform24()
	}
	for i := 0; i+16 <= n; i += 16 {
		boxMuller16(dst[i : i+16])
	}
	if n%16 != 0 {
		tail := dst[n-16:]
		for i := range tail {
			tail[i] = g.uniform24()
		}
		boxMuller16(tail)
	}
}

// twoPi32 is _mm256_set1_ps(2.0f * c10::pi<double>).
var twoPi32 = float32(2.0 * math.Pi)

// boxMuller16 is normal_fill_16_AVX2 with mean 0, std 1.
func boxMuller16(d []float32) {
	_ = d[15]
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		l := cephesLog32(u1)
		radius := sqrt32(-2 * l)
		theta := twoPi32 * u2
		s, c := cephesSinCos32(theta)
		d[j] = radius * c
		d[j+8] = radius * s
	}
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
