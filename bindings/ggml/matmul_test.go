package ggml

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, d := range [][3]int{{1, 1, 1}, {7, 3, 5}, {64, 16, 40}, {33, 65, 17}} {
		m, k, n := d[0], d[1], d[2]
		a, b := randn(r, m*k), randn(r, k*n)
		got, err := MatMul(a, m, k, b, n, 1)
		require.NoError(t, err)
		require.Len(t, got, m*n)
		for i := range m {
			for j := range n {
				var want float64
				for l := range k {
					want += float64(a[i*k+l]) * float64(b[l*n+j])
				}
				require.InDelta(t, want, got[i*n+j], 1e-5*math.Max(1, math.Abs(want)), "%v [%d,%d]", d, i, j)
			}
		}
	}
	_, err := MatMul(make([]float32, 6), 2, 3, make([]float32, 5), 2, 1)
	require.Error(t, err)
}
