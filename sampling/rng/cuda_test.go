package rng

import (
	"fmt"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// The CUDA goldens were drawn on an H100. Philox words and layout are exact;
// the SFU sine/cosine is approximated (see TorchCUDA), hence a tolerance.
func TestTorchCUDAGolden(t *testing.T) {
	for _, seed := range goldenSeeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			want := golden.Ref(t, fmt.Sprintf("rng:cuda_seed%d_1x4x128x128", seed)).Data
			got := NewTorchCUDA(seed).Normal(len(want))
			bad, _, maxd := bitwiseMismatch(got, want)
			t.Logf("%d/%d elements differ bitwise, max abs diff %g", bad, len(want), maxd)
			golden.AssertClose(t, "cuda randn", got, want, 2e-6, 0)
		})
	}
}
