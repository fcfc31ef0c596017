package nn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// BenchmarkAttention times SDXL's attentions (two images, as with CFG) on
// the CPU: at 512² the self-attentions of its first attention level (640
// channels, 10 heads, 32×32 tokens) and its second (1280, 20, 16×16) and
// the second's cross-attention to the 77 text tokens, and at 1024² the
// first level's self-attention (64×64 tokens); by ggml's flash kernel, by
// the softmax path (whole or in the CPU runtime's pieces) and by our
// kernel.
func BenchmarkAttention(b *testing.B) {
	rt := benchRuntime(b)
	r := rand.New(rand.NewPCG(1, 1))
	for _, sh := range []struct{ C, N, Nk, H int64 }{{640, 1024, 1024, 10}, {1280, 256, 256, 20}, {1280, 256, 77, 20}, {640, 2048, 2048, 10}, {640, 4096, 4096, 10}} {
		const B = 2
		q := normals(r, sh.C*sh.N*B, 1)
		kv := normals(r, sh.C*sh.Nk*B*2, 1)
		for _, opt := range []struct {
			name string
			o    AttentionOptions
		}{
			{"flash_f32", AttentionOptions{Flash: true, KVType: ggml.TypeF32}},
			{"flash_f16", AttentionOptions{Flash: true, KVType: ggml.TypeF16}},
			{"softmax", AttentionOptions{}},
			{"softmax_pieces", AttentionOptions{Flash: true, KVType: ggml.TypeF32, SoftmaxUpTo: cpuSoftmaxUpTo}},
			{"ours", AttentionOptions{CPUKernel: true}},
		} {
			if opt.name == "softmax" && 4*sh.N*sh.Nk*sh.H*B > cpuSoftmaxUpTo {
				continue // its scores alone take 1.3 GB
			}
			b.Run(fmt.Sprintf("%s_%dx%dx%d", opt.name, sh.C, sh.N, sh.Nk), func(b *testing.B) {
				n := sh.C * sh.Nk * B
				flops := float64(4 * sh.C * sh.N * sh.Nk * B) // two products
				benchGraph(b, rt, flops, func(c *ggml.Context) *ggml.Tensor {
					k, v := c.InputF32(kv[:n], sh.C, sh.Nk, B), c.InputF32(kv[n:], sh.C, sh.Nk, B)
					return Attend(c, c.InputF32(q, sh.C, sh.N, B), k, v, int(sh.H), nil, opt.o)
				})
			})
		}
	}
}

// benchRuntime is a CPU runtime with every core, closed with the benchmark.
func benchRuntime(b *testing.B) *Runtime {
	rt, err := NewRuntime("cpu", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rt.Close)
	return rt
}

// normals draws n standard normal values times scale.
func normals(r *rand.Rand, n int64, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

// benchGraph times the graph build makes on rt and reports GFLOP/s for
// flops operations per run.
func benchGraph(b *testing.B, rt *Runtime, flops float64, build func(c *ggml.Context) *ggml.Tensor) {
	g, err := rt.Prepare(func(c *ggml.Context) []*ggml.Tensor { return []*ggml.Tensor{build(c)} })
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	b.ResetTimer()
	for range b.N {
		if _, err := g.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
