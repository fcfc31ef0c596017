package rng

import (
	"fmt"
	"math"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
)

var goldenSeeds = []uint64{0, 1, 42, 12345}

func bitwiseMismatch(got, want []float32) (int, int, float64) {
	bad, first, maxd := 0, -1, 0.0
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			if first < 0 {
				first = i
			}
			bad++
			maxd = math.Max(maxd, math.Abs(float64(got[i])-float64(want[i])))
		}
	}
	return bad, first, maxd
}

func TestMT19937(t *testing.T) {
	// The 10000th output of std::mt19937 default-seeded with 5489 is
	// 4123659995 (C++ standard, [rand.predef]).
	m := newMT19937(5489)
	var v uint32
	for i := 0; i < 10000; i++ {
		v = m.next()
	}
	if v != 4123659995 {
		t.Fatalf("mt19937 10000th output %d, want 4123659995", v)
	}
}

func TestTorchCPUGolden(t *testing.T) {
	shapes := []struct {
		name string
		n    int
	}{{"4", 4}, {"16", 16}, {"1x4x16x16", 1024}, {"1x4x128x128", 65536}}
	for _, seed := range goldenSeeds {
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("seed%d_%s", seed, sh.name), func(t *testing.T) {
				want := golden.Ref(t, fmt.Sprintf("rng:cpu_seed%d_%s", seed, sh.name)).Data
				got := NewTorchCPU(seed).Normal(sh.n)
				if bad, first, maxd := bitwiseMismatch(got, want); bad > 0 {
					t.Fatalf("%d/%d elements differ bitwise (first %d: %g vs %g, max abs diff %g)", bad, len(want), first, got[first], want[first], maxd)
				}
			})
		}
		t.Run(fmt.Sprintf("seed%d_seq", seed), func(t *testing.T) {
			g := NewTorchCPU(seed)
			for _, part := range []string{"a", "b"} {
				want := golden.Ref(t, fmt.Sprintf("rng:cpu_seed%d_seq_%s_1x4x16x16", seed, part)).Data
				got := g.Normal(len(want))
				if bad, first, maxd := bitwiseMismatch(got, want); bad > 0 {
					t.Fatalf("draw %s: %d/%d elements differ bitwise (first %d: %g vs %g, max abs diff %g)", part, bad, len(want), first, got[first], want[first], maxd)
				}
			}
		})
	}
}
