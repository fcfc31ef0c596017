package ggml

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGEGLUKernel checks our CPU GEGLU (pm_geglu_erf) value by value
// against h·x·Φ(x) in float64, and against ggml's GEGLU_ERF kernel: on
// rows of every length around the vector width (the tail path), several
// rows and planes (the row split across threads, strides of the halves),
// and inputs from zero to the far tails.
func TestGEGLUKernel(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 0.5, -0.5, 2, -2, 5, -5, 9, -9, 13, -13, 20, -20, 100, -100, 3e38, -3e38}
	for _, shape := range [][3]int{{1, 1, 1}, {7, 3, 1}, {8, 2, 2}, {9, 5, 1}, {33, 4, 3}, {1000, 3, 1}} {
		n, rows, planes := shape[0], shape[1], shape[2]
		t.Run(fmt.Sprintf("%dx%dx%d", n, rows, planes), func(t *testing.T) {
			a := make([]float32, 2*n*rows*planes)
			for i := range a {
				switch {
				case i%5 == 0:
					a[i] = special[r.Intn(len(special))]
				default:
					a[i] = float32(r.NormFloat64() * 3)
				}
			}
			build := func(ours bool) func(c *Context) *Tensor {
				return func(c *Context) *Tensor {
					c.SetCPUKernels(ours)
					return c.GEGLUSecondHalf(c.InputF32(a, int64(2*n), int64(rows), int64(planes)))
				}
			}
			got, gotShape := compute(t, build(true))
			require.Equal(t, [4]int64{int64(n), int64(rows), int64(planes), 1}, gotShape)
			ggmls, _ := compute(t, build(false))
			for row := 0; row < rows*planes; row++ {
				for i := 0; i < n; i++ {
					h, x := float64(a[2*n*row+i]), float64(a[2*n*row+n+i])
					want := h * x * 0.5 * math.Erfc(-x/math.Sqrt2)
					scale := math.Abs(h * x) // both kernels' errors are relative to h·x
					if math.IsInf(want, 0) || scale > math.MaxFloat32 {
						continue // h·x overflows float32: both give ±Inf or NaN
					}
					k := row*n + i
					require.InDelta(t, want, float64(got[k]), 3e-7*scale+1e-37, "h %g x %g: ours", h, x)
					require.InDelta(t, float64(ggmls[k]), float64(got[k]), 6e-7*scale+1e-37, "h %g x %g: against ggml", h, x)
				}
			}
		})
	}
}

// TestGEGLUKernelOnlyOnCPU checks that GEGLUSecondHalf takes ggml's op
// unless the context says the graph runs on the CPU, and for inputs the
// kernel does not take.
func TestGEGLUKernelOnlyOnCPU(t *testing.T) {
	c := NewContext(16, 0)
	defer c.Free()
	a := c.NewTensor(TypeF32, 8, 2)
	require.Equal(t, "GEGLU_ERF", c.GEGLUSecondHalf(a).Op())
	c.SetCPUKernels(true)
	require.Equal(t, "MAP_CUSTOM2", c.GEGLUSecondHalf(a).Op())
	require.Equal(t, "GEGLU_ERF", c.GEGLUSecondHalf(c.NewTensor(TypeF16, 8, 2)).Op())
}
