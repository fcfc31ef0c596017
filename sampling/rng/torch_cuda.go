package rng

import "math"

// TorchCUDA reproduces torch.Generator("cuda").manual_seed(seed) followed by
// torch.randn(..., dtype=float32, device="cuda").
//
// The generator is Philox4x32-10 with key = seed and a per-generator offset
// that grows by each call's counter increment. PyTorch's normal kernel
// launches blocks of 256 threads, grid = min(ceil(n/256), SMs·(2048/256));
// thread t runs curand_init(seed, subsequence=t, offset) and, in a
// grid-stride loop with unroll 4, draws curand_normal4 and writes lane k of
// draw i to element t + stride·(4i+k) when that is < n. curand_normal4 turns
// the four 32-bit Philox words (a,b,c,d) into Box–Muller pairs
// u = a·2^-32 + 2^-33, v = b·2π·2^-32 + π·2^-32: (sqrt(-2 ln u)·sin v,
// sqrt(-2 ln u)·cos v), likewise for (c,d).
//
// Exactness: the Philox words, the element layout and u, v, sqrt(-2 ln u) are
// reproduced exactly (up to CUDA's logf, which is within 1 ulp). CUDA
// evaluates sin v and cos v with __sincosf, the approximate special-function
// unit instruction (absolute error ~2^-21.4), whose exact results are not
// specified; here the SFU's round-toward-zero argument scaling is modelled
// and sin/cos are then computed accurately, so elements differ from a GPU
// draw by at most ~1.2e-6 absolute (about 77% of elements are off by an ulp
// or two against the H100 goldens): the same noise, not bitwise identical.
type TorchCUDA struct {
	seed   uint64
	offset uint64 // philox_offset_per_thread

	// SMCount is the device's multiprocessor count (132 on an H100 SXM);
	// it only changes the layout for tensors above SMCount·2048 elements.
	SMCount int
	// MaxThreadsPerSM is the device's maxThreadsPerMultiProcessor (2048 on
	// every recent NVIDIA GPU).
	MaxThreadsPerSM int
}

// NewTorchCUDA returns torch.Generator("cuda").manual_seed(seed) for an
// H100-class device.
func NewTorchCUDA(seed uint64) *TorchCUDA {
	return &TorchCUDA{seed: seed, SMCount: 132, MaxThreadsPerSM: 2048}
}

// Seed resets the generator like manual_seed.
func (g *TorchCUDA) Seed(seed uint64) { g.seed, g.offset = seed, 0 }

const (
	cudaBlockSize   = 256
	curand4Calls    = 4 // curand4_engine_calls
	cudaUnroll      = 4
	curand2Pow32Inv = float32(2.3283064e-10)
)

var curand2Pow32Inv2Pi = curand2Pow32Inv * float32(6.2831855)

// Normal is torch.randn(n, generator=g, device="cuda") in float32.
func (g *TorchCUDA) Normal(n int) []float32 {
	out := make([]float32, n)
	g.NormalInto(out)
	return out
}

// NormalInto fills dst like one torch.randn call of len(dst) elements.
func (g *TorchCUDA) NormalInto(dst []float32) {
	n := uint64(len(dst))
	if n == 0 {
		return
	}
	grid := (n + cudaBlockSize - 1) / cudaBlockSize
	if max := uint64(g.SMCount) * uint64(g.MaxThreadsPerSM/cudaBlockSize); max > 0 && grid > max {
		grid = max
	}
	stride := grid * cudaBlockSize
	counterOffset := ((n-1)/(stride*cudaUnroll) + 1) * curand4Calls
	offset := g.offset
	g.offset += (counterOffset + 3) / 4 * 4
	rounded := ((n-1)/(stride*cudaUnroll) + 1) * stride * cudaUnroll

	key0, key1 := uint32(g.seed), uint32(g.seed>>32)
	for t := uint64(0); t < stride; t++ {
		// curand_init(seed, t, offset): counter high half = subsequence,
		// low half = offset/4 (offsets are multiples of 4 here).
		ctrLo, ctrHi := offset/4, t
		for li := t; li < rounded; li += stride * cudaUnroll {
			w := philox4x32_10(uint32(ctrLo), uint32(ctrLo>>32), uint32(ctrHi), uint32(ctrHi>>32), key0, key1)
			ctrLo++
			if ctrLo == 0 {
				ctrHi++
			}
			s0, c0 := boxMullerCurand(w[0], w[1])
			s1, c1 := boxMullerCurand(w[2], w[3])
			lanes := [4]float32{s0, c0, s1, c1}
			for k := uint64(0); k < cudaUnroll; k++ {
				if idx := li + stride*k; idx < n {
					dst[idx] = lanes[k]
				}
			}
		}
	}
}

// boxMullerCurand is curand's _curand_box_muller (x = s·sin v, y = s·cos v).
func boxMullerCurand(a, b uint32) (float32, float32) {
	// nvcc contracts x*INV + INV/2 into one fma.
	u := fma32(float32(a), curand2Pow32Inv, curand2Pow32Inv/2)
	v := fma32(float32(b), curand2Pow32Inv2Pi, curand2Pow32Inv2Pi/2)
	s := sqrt32(-2 * float32(math.Log(float64(u))))
	// __sincosf: the SFU works on t = v/(2π), formed by a round-toward-zero
	// float32 multiply; model that step exactly, then evaluate sin/cos(2πt)
	// accurately (the SFU's own ~2^-22 approximation error is not modelled).
	tt := mulRZ(v, inv2Pi32)
	sv, cv := math.Sincos(2 * math.Pi * float64(tt))
	return s * float32(sv), s * float32(cv)
}

var inv2Pi32 = float32(1 / (2 * math.Pi))

// mulRZ returns a·b rounded toward zero to float32.
func mulRZ(a, b float32) float32 {
	p := float64(a) * float64(b) // exact
	r := float32(p)
	if math.Abs(float64(r)) > math.Abs(p) {
		r = math.Nextafter32(r, 0)
	}
	return r
}

// fma32 returns a·b+c rounded once to float32.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact
	sum := p + float64(c)
	// Correct the double rounding of p+c: recover the error term and nudge
	// when the float64 sum sits exactly on a float32 rounding boundary.
	bv := sum - p
	err := (p - (sum - bv)) + (float64(c) - bv)
	r := float32(sum)
	if err != 0 && float64(r) != sum {
		// sum is not representable; only a tie can round the wrong way.
		lo, hi := float64(math.Nextafter32(r, float32(math.Inf(-1)))), float64(math.Nextafter32(r, float32(math.Inf(1))))
		if float64(r) > sum {
			hi = float64(r)
		} else {
			lo = float64(r)
		}
		if mid := lo + (hi-lo)/2; sum == mid {
			if err > 0 {
				r = float32(hi)
			} else {
				r = float32(lo)
			}
		}
	}
	return r
}

// philox4x32_10 is the Philox4x32 bijection with 10 rounds (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC'11), as in curand.
func philox4x32_10(c0, c1, c2, c3, k0, k1 uint32) [4]uint32 {
	const (
		m0 = 0xD2511F53
		m1 = 0xCD9E8D57
		w0 = 0x9E3779B9
		w1 = 0xBB67AE85
	)
	for r := 0; r < 10; r++ {
		if r > 0 {
			k0 += w0
			k1 += w1
		}
		p0 := uint64(m0) * uint64(c0)
		p1 := uint64(m1) * uint64(c2)
		c0, c1, c2, c3 = uint32(p1>>32)^c1^k0, uint32(p1), uint32(p0>>32)^c3^k1, uint32(p0)
	}
	return [4]uint32{c0, c1, c2, c3}
}
