package ggml

import (
	"context"
	"fmt"
)

// MatMul returns the row-major product a·b of a [m×k] and b [k×n], computed
// by ggml's CPU kernels on threads threads (≤0: all cores). It is for work
// done while loading weights, such as LoRA merges, where a Go loop would be
// tens of times slower.
func MatMul(a []float32, m, k int, b []float32, n int, threads int) ([]float32, error) {
	if m <= 0 || k <= 0 || n <= 0 || len(a) != m*k || len(b) != k*n {
		return nil, fmt.Errorf("ggml: MatMul of %d values as %d×%d by %d as %d×%d", len(a), m, k, len(b), k, n)
	}
	// ggml contracts along each operand's first (contiguous) dimension:
	// with bᵀ as [k, n] and a as [k, m] the result [n, m] is a·b row-major.
	bt := make([]float32, n*k)
	for i := range k {
		for j := range n {
			bt[j*k+i] = b[i*n+j]
		}
	}
	cpu, err := NewCPUBackend(threads)
	if err != nil {
		return nil, err
	}
	defer cpu.Close()
	s, err := NewScheduler([]*Backend{cpu}, 8)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ctx := NewContext(8, 8)
	defer ctx.Free()
	out := ctx.MulMat(ctx.InputF32(bt, int64(k), int64(n)), ctx.InputF32(a, int64(k), int64(m))).SetOutput()
	g := ctx.NewGraph(8)
	g.Expand(out)
	if err := s.Compute(context.Background(), g); err != nil {
		return nil, err
	}
	return out.Float32(), nil
}
