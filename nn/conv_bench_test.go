package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// BenchmarkConv2DLayouts times SDXL's 3×3 UNet convolutions at 512² (two
// images, as with CFG) on the CPU, f16 kernels: one product over the full
// 3×3 im2col against three over a 1×3 im2col with the kernel stored by row
// (the layout Load uses on every device).
func BenchmarkConv2DLayouts(b *testing.B) {
	rt := benchRuntime(b)
	r := rand.New(rand.NewPCG(3, 3))
	for _, sh := range []struct{ C, S int64 }{{320, 64}, {640, 32}, {1280, 16}} {
		const B = 2
		x := normals(r, sh.S*sh.S*sh.C*B, 1)
		w := normals(r, 9*sh.C*sh.C, 1.0/40)
		f16, err := ggml.Quantize(ggml.TypeF16, w, 3)
		if err != nil {
			b.Fatal(err)
		}
		byRows := kernelByRows(f16, []int64{sh.C, sh.C, 3, 3}, 2)
		for _, byRow := range []bool{false, true} {
			b.Run(fmt.Sprintf("byrow_%v_%dx%d", byRow, sh.C, sh.S), func(b *testing.B) {
				benchGraph(b, rt, float64(2*9*sh.C*sh.C*sh.S*sh.S*B), func(c *ggml.Context) *ggml.Tensor {
					img := c.InputF32(x, sh.S, sh.S, sh.C, B)
					conv := Conv2D{Weight: c.Input(ggml.TypeF16, f16, 3, 3, sh.C, sh.C)}
					if byRow {
						conv = NewConv2DByRow(c.Input(ggml.TypeF16, byRows, 3, sh.C, sh.C, 3), nil)
					}
					return conv.Forward(c, img, 1, 1)
				})
			})
		}
	}
}
