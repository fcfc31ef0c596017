package nn

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gophotomaker/photomaker/bindings/ggml"
)

// NoWarmUpEnv turns WarmUp off when set (to time a GPU's first request
// with and without it).
const NoWarmUpEnv = "PHOTOMAKER_NO_WARMUP"

// WarmUp starts, in the background, a small graph of the ops and types
// the pipeline's graphs use on a second backend of r's GPU, and returns a
// function that waits for it to end and tells whether it failed. A
// process's first products and attentions on a GPU pay one-time costs:
// ggml-cuda creates its cuBLAS handle at the first product, and the first
// handle of a process loads the library; CUDA loads each kernel at its
// first launch. On an H200 the first request's encoders took 0.39 s, a
// warm one's 0.03 s. Paid while the weights load from disk, those costs
// leave the request's path. The second backend (its own stream, memory
// pool and cuBLAS handle) shares the device's context, where loaded
// kernels and the library's state live, and leaves r's scheduler to the
// loader. A failure costs nothing but the saving: the pipeline then pays
// at first use, as without it. On the CPU, or with NoWarmUpEnv set, there
// is nothing to do.
func (r *Runtime) WarmUp() (wait func() error) {
	if r.Device == r.CPU || os.Getenv(NoWarmUpEnv) != "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	dev, f32 := r.Device.Dev, r.F32Accumulation
	go func() {
		t0 := time.Now()
		err := warmUp(dev, f32)
		if err == nil {
			slog.Debug("GPU warmed up", "device", dev.Name, "seconds", time.Since(t0).Seconds())
		}
		done <- err
	}()
	return sync.OnceValue(func() error { return <-done })
}

// warmUp computes the warm-up graph (warmUpWeights.graph) on a runtime of
// its own on dev. A panic becomes its error: the warm-up is an extra, and
// it runs outside the caller's goroutine.
func warmUp(dev ggml.Device, f32Accumulation bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("warming up %s: %v", dev.Name, p)
		}
	}()
	rt, err := newRuntimeOn(dev, 1)
	if err != nil {
		return err
	}
	defer rt.Close()
	rt.F32Accumulation = f32Accumulation
	w := newWarmUpWeights()
	defer w.ctx.Free()
	buf, err := rt.Device.Alloc(w.ctx) // on the device, as weights: the ops follow them there
	if err != nil {
		return err
	}
	defer buf.Free()
	if err := w.fill(); err != nil {
		return err
	}
	_, err = rt.Run(context.Background(), func(c *ggml.Context) []*ggml.Tensor { return w.graph(c, rt.Attn) })
	if err != nil {
		return fmt.Errorf("warming up %s: %w", dev.Name, err)
	}
	return nil
}

// warmUpWeights are the operands of the warm-up graph, on the device: a
// few tokens and a small image, in the layouts and types of the models'
// weights (f16 products and kernels by row; f32 norms, biases and the
// VAE's kernels, which it casts per decode).
type warmUpWeights struct {
	ctx                  *ggml.Context
	x, img               *ggml.Tensor // [64, 64, 2] tokens; [8, 8, 64, 2] images
	text                 *ggml.Tensor // [64, 77, 2]: a prompt's tokens, for cross-attention
	norm, bias           *ggml.Tensor // [64]
	proj                 *ggml.Tensor // f16 [64, 128]
	projQ4K, projQ8      *ggml.Tensor // q4_K and q8_0 [256, 64]: quantized UNets (--type q4_K keeps 640-wide rows q8_0)
	rowKernel, vaeKernel *ggml.Tensor // f16 [3, 64, 64, 3] by row; f32 [3, 3, 64, 64]
	table                *ggml.Tensor // [64, 16]: embedding rows, and a mask
	ids                  *ggml.Tensor // i32 [4]
}

func newWarmUpWeights() *warmUpWeights {
	c := ggml.NewContext(16, 0)
	return &warmUpWeights{ctx: c,
		x: c.NewTensor(ggml.TypeF32, 64, 64, 2), img: c.NewTensor(ggml.TypeF32, 8, 8, 64, 2), text: c.NewTensor(ggml.TypeF32, 64, 77, 2),
		norm: c.NewTensor(ggml.TypeF32, 64), bias: c.NewTensor(ggml.TypeF32, 64),
		proj:    c.NewTensor(ggml.TypeF16, 64, 128),
		projQ4K: c.NewTensor(ggml.TypeQ4_K, 256, 64), projQ8: c.NewTensor(ggml.TypeQ8_0, 256, 64),
		rowKernel: c.NewTensor(ggml.TypeF16, 3, 64, 64, 3), vaeKernel: c.NewTensor(ggml.TypeF32, 3, 3, 64, 64),
		table: c.NewTensor(ggml.TypeF32, 64, 16), ids: c.NewTensor(ggml.TypeI32, 4)}
}

// fill gives the operands small values that keep the graph finite.
func (w *warmUpWeights) fill() error {
	if err := w.ids.SetData(ggml.I32Bytes([]int32{3, 1, 4, 1})); err != nil {
		return err
	}
	for _, t := range []*ggml.Tensor{w.x, w.img, w.text, w.norm, w.bias, w.proj, w.projQ4K, w.projQ8, w.rowKernel, w.vaeKernel, w.table} {
		v := make([]float32, t.Elements())
		for i := range v {
			v[i] = float32(i%17-8) / 64
		}
		data := ggml.F32Bytes(v)
		if t.Type() != ggml.TypeF32 {
			var err error
			if data, err = ggml.Quantize(t.Type(), v, t.Ne(0)); err != nil {
				return err
			}
		}
		if err := t.SetData(data); err != nil {
			return err
		}
	}
	return nil
}

// graph has a transformer block's ops (layer norm, f16 products with f32
// sums as a batch and as one matrix, q4_K and q8_0 products, attention by
// the flash kernel over rows of a wider product and over a prompt's 77
// tokens, and with a mask by the softmax path, GELUs), an image's (group
// norm with SiLU, a 3×3 convolution by row, an f32 one in bands,
// upsampling, padding, concatenation, casts) and the embeddings' (rows of
// a table, the timestep's sines).
func (w *warmUpWeights) graph(c *ggml.Context, opt AttentionOptions) []*ggml.Tensor {
	ln, proj := LayerNorm{Weight: w.norm, Bias: w.bias}, Linear{Weight: w.proj}
	h := ln.Forward(c, w.x, 1e-5)
	qk := proj.Forward(c, h)                       // [128, 64, 2]
	flat := proj.Forward(c, c.Reshape(h, 64, 128)) // one matrix of 128 columns
	wide := c.Reshape(h, 256, 32)
	quantized := c.Add(c.MulMat(w.projQ4K, wide), c.MulMat(w.projQ8, wide))
	half := func(x *ggml.Tensor, n, at int64) *ggml.Tensor {
		return c.View(x, [4]int64{64, n, 2, 1}, x.Nb(1), x.Nb(2), x.Nb(3), at)
	}
	q, k := half(qk, 64, 0), half(qk, 64, 64*qk.Nb(0))
	attn := c.Add(Attend(c, q, k, k, 1, nil, opt), Attend(c, q, w.text, w.text, 1, nil, opt)) // self and cross
	// The text encoders' causal mask takes the softmax path: a mask [64 keys, 16 queries].
	masked := Attend(c, half(q, 16, 0), k, k, 1, w.table, opt)
	act := c.Add(c.Add(c.GELU(attn), c.GELUQuick(attn)), c.Add(c.GEGLUSecondHalf(qk), c.Scale(c.GELUErf(attn), 0.5)))

	gn, conv := GroupNorm{Weight: w.norm, Bias: w.bias}, NewConv2DByRow(w.rowKernel, w.bias)
	y := conv.Forward(c, gn.ForwardSiLU(c, w.img, 32, 1e-5), 1, 1)                        // [8, 8, 64, 2]
	img := c.Concat(c.Pad(y, 4, 4, 4, 4, 0, 0, 0, 0), c.UpscaleNearest(y, 2), 2)          // [16, 16, 128, 2]
	one := c.View(w.img, [4]int64{8, 8, 64, 1}, w.img.Nb(1), w.img.Nb(2), w.img.Nb(3), 0) // the VAE decodes one image
	vae := BandedConv2D(c, w.vaeKernel, c.UpscaleNearest(one, 2), 1, 1, 1<<16)            // in bands of 3 rows

	emb := Embedding{Weight: w.table}
	steps := c.Scale(c.View(w.x, [4]int64{2, 1, 1, 1}, 8, 8, 8, 0), 1000)
	return []*ggml.Tensor{act, flat, quantized, masked, c.Cast(c.Cast(img, ggml.TypeF16), ggml.TypeF32), vae,
		emb.Forward(c, w.ids), c.TimestepEmbedding(steps, 64, 10000)}
}
