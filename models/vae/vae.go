// Package vae is SDXL's AutoencoderKL on ggml: the decoder that turns
// latents into pixels (whole or in blended tiles when memory is short) and
// the encoder that turns pixels into a diagonal Gaussian over latents.
//
// Hyperparameters (block channels, depth, resnets per block, latent and
// image channels, quant convs, mid-block attention) are read from the
// weights; the fixed AutoencoderKL conventions are GroupNorm with 32 groups
// and eps 1e-6, SiLU, single-head mid-block attention, nearest ×2 upsampling
// and the encoder's asymmetric-pad stride-2 downsampling.
//
// The scaling factor is the caller's: the pipeline divides latents by it
// (SDXLScalingFactor) before decoding and multiplies encoder samples by it.
// Everything computes in f32 (SDXL's VAE overflows in f16), unless
// F16Products lets the convolutions of normalized inputs use f16 operands.
//
// Data layout: slices are PyTorch NCHW, which is ggml's [W, H, C, N].
package vae

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// SDXLScalingFactor is SDXL's VAE scaling_factor: latents = sample · 0.13025.
const SDXLScalingFactor = 0.13025

// Im2ColLimit bounds the im2col buffer of one convolution under ConvAuto:
// one larger than its own output (and than minColumns), or than
// Im2ColLimit, runs in bands of output rows (nn.BandedConv2D). The decoder's
// last levels would need gigabytes of columns at 1024²; bands sized by the
// output keep the decode's memory proportional to the pixels.
const (
	Im2ColLimit = 256 << 20
	minColumns  = 16 << 20
)

// ConvMode selects how 3×3 convolutions are computed.
type ConvMode int

const (
	// ConvAuto uses im2col + matrix product, in bands of rows where the
	// column buffer would exceed the limit (batches of several images
	// take the direct kernel there instead).
	ConvAuto ConvMode = iota
	// ConvDirect uses ggml's direct kernel (least memory, slowest).
	ConvDirect
)

// ErrWeights is wrapped when the weights do not form an AutoencoderKL.
var ErrWeights = errors.New("vae: weights do not fit an AutoencoderKL")

// Config holds the hyperparameters read from the weights.
type Config struct {
	InChannels       int   // image channels the encoder reads (0 without an encoder)
	OutChannels      int   // image channels the decoder writes
	LatentChannels   int   // latent channels
	BlockOutChannels []int // per level, encoder order (the decoder runs them reversed)
	LayersPerBlock   int   // resnets per encoder block; decoder blocks have one more
	MidAttention     bool  // the mid blocks have self-attention
	QuantConv        bool  // quant_conv after the encoder
	PostQuantConv    bool  // post_quant_conv before the decoder
	Encoder          bool  // the weights include the encoder
	Factor           int   // pixels per latent along each side (8 for SDXL)
}

// VAE is a loaded AutoencoderKL.
type VAE struct {
	Encoder       *Encoder   `w:"encoder,optional"`
	Decoder       Decoder    `w:"decoder"`
	QuantConv     *nn.Conv2D `w:"quant_conv,optional"`
	PostQuantConv *nn.Conv2D `w:"post_quant_conv,optional"`

	Config Config
	// Conv selects the convolution kernel (ConvAuto by default).
	Conv ConvMode
	// F16Products lets the convolutions whose input comes straight from a
	// group norm (and SiLU) multiply f16 operands, summed in f32: about
	// three quarters of the decoder's arithmetic, at f16 speed. Only
	// normalized values go to f16; the residual stream, which overflows
	// f16 in SDXL's VAE, stays f32. Off: everything is f32, as diffusers
	// decodes. Graphs with our CPU kernels (ggml.Context.CPUKernels) keep
	// their Winograd convolutions in f32, faster there.
	F16Products bool
	// PhaseUpsamplers convolves the four phases of the upsamplers' input
	// (nn.UpsampleConv2D) instead of the upsampled image, but for the last
	// upsampler: 4/9 of their arithmetic. Load sets it on the CPU, where the
	// arithmetic is the cost. On GPUs ggml-cuda interleaves the phases with
	// one block per pair of values, which would cost more than it saves.
	// Graphs with our CPU kernels take the Winograd convolution that reads
	// the input as upsampled instead (the same 4/9, every upsampler).
	PhaseUpsamplers bool
	// colLimit, if set, replaces the column limit (tests: banding at the
	// tiny VAE's sizes).
	colLimit int64

	weights *nn.Weights
}

// Load binds the AutoencoderKL under prefix (e.g. "vae.") of set, checks
// every shape and uploads the weights to rt's device. policy may store 2-D+
// weights as f16 to save memory (any non-f32 choice becomes f16; the graph
// casts them back to f32); nil or nn.AllF32 keeps everything f32.
func Load(ctx context.Context, rt *nn.Runtime, set *weights.Set, prefix string, policy nn.TypePolicy) (*VAE, error) {
	v, err := bind(set, prefix, policy)
	if err != nil {
		return nil, err
	}
	if err := v.weights.Upload(ctx, rt.Device, nil); err != nil {
		v.Close()
		return nil, fmt.Errorf("vae: %w", err)
	}
	v.PhaseUpsamplers = rt.Device.IsCPU()
	return v, nil
}

// Check binds and checks the VAE under prefix of set as Load does,
// without loading any weight.
func Check(set *weights.Set, prefix string) error {
	v, err := bind(set, prefix, nil)
	if err == nil {
		v.Close()
	}
	return err
}

// bind declares and checks the weights without allocating device memory.
func bind(set *weights.Set, prefix string, policy nn.TypePolicy) (*VAE, error) {
	n := set.Prefix(prefix).Len()
	if n == 0 {
		return nil, fmt.Errorf("%w: no tensors under %q", ErrWeights, prefix)
	}
	v := &VAE{weights: nn.NewWeights(n, StoragePolicy(policy))}
	if err := v.weights.Bind(set, prefix, v); err != nil {
		v.Close()
		return nil, fmt.Errorf("vae: %w", err)
	}
	cfg, err := v.check(prefix)
	if err != nil {
		v.Close()
		return nil, err
	}
	v.Config = cfg
	return v, nil
}

// StoragePolicy is the policy Load stores weights with, given the caller's:
// 1-D tensors in f32 and the rest as f32 or f16, since the VAE computes in
// f32 and quantized kernels would not help it.
func StoragePolicy(p nn.TypePolicy) nn.TypePolicy {
	return func(name string, t *weights.Tensor) ggml.Type {
		if p == nil || len(t.Shape) < 2 || p(name, t) == ggml.TypeF32 {
			return ggml.TypeF32
		}
		return ggml.TypeF16
	}
}

// Close frees the weights.
func (v *VAE) Close() {
	if v.weights != nil {
		v.weights.Free()
		v.weights = nil
	}
}

func (v *VAE) builder(c *ggml.Context) *builder {
	return &builder{c: c, mode: v.Conv, colLimit: v.colLimit, f16: v.F16Products, phases: v.PhaseUpsamplers}
}

// Decode builds the decoder graph: latents [w, h, latent, B] (already
// divided by the scaling factor) → pixels [w·f, h·f, out, B], roughly in
// [-1, 1]. A latent with the wrong channel count panics with an error,
// which nn.Runtime.Run returns.
func (v *VAE) Decode(c *ggml.Context, latents *ggml.Tensor) *ggml.Tensor {
	mustImage("latents", latents, v.Config.LatentChannels, 1)
	b := v.builder(c)
	x := latents
	if v.PostQuantConv != nil {
		x = b.conv(v.PostQuantConv, x, 1, 0)
	}
	return v.Decoder.forward(b, x)
}

// EncodeMoments builds the encoder graph up to the raw moments: pixels
// [W, H, in, B] in [-1, 1] → [W/f, H/f, 2·latent, B] (mean channels, then
// unclamped logvar channels). W and H must be at least f.
func (v *VAE) EncodeMoments(c *ggml.Context, pixels *ggml.Tensor) *ggml.Tensor {
	if v.Encoder == nil {
		panic(errors.New("vae: these weights have no encoder"))
	}
	mustImage("pixels", pixels, v.Config.InChannels, int64(v.Config.Factor))
	b := v.builder(c)
	m := v.Encoder.forward(b, pixels)
	if v.QuantConv != nil {
		m = b.conv(v.QuantConv, m, 1, 0)
	}
	return m
}

// Encode builds the encoder graph and splits the moments into the mean and
// the logvar clamped to [-30, 20], each [W/f, H/f, latent, B].
func (v *VAE) Encode(c *ggml.Context, pixels *ggml.Tensor) (mean, logvar *ggml.Tensor) {
	m := v.EncodeMoments(c, pixels)
	ne := [4]int64{m.Ne(0), m.Ne(1), m.Ne(2) / 2, m.Ne(3)}
	mean = c.Cont(c.View(m, ne, m.Nb(1), m.Nb(2), m.Nb(3), 0))
	logvar = c.Cont(c.View(m, ne, m.Nb(1), m.Nb(2), m.Nb(3), ne[2]*m.Nb(2)))
	return mean, clamp(c, logvar, logvarMin, logvarMax)
}

// DecodeImage decodes latents (NCHW float32, already divided by the
// scaling factor) of w×h latent pixels; the batch size is
// len(latents)/(latent·w·h). It returns NCHW pixels of (w·f)×(h·f).
func (v *VAE) DecodeImage(ctx context.Context, rt *nn.Runtime, latents []float32, w, h int) ([]float32, error) {
	n, err := batch(len(latents), v.Config.LatentChannels, w, h, 1, "latents")
	if err != nil {
		return nil, err
	}
	out, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		x := c.InputF32(latents, int64(w), int64(h), int64(v.Config.LatentChannels), int64(n))
		return []*ggml.Tensor{v.Decode(c, x)}
	})
	if err != nil {
		return nil, fmt.Errorf("vae decode: %w", err)
	}
	return out[0].Data, nil
}

// EncodeImage encodes NCHW pixels in [-1, 1] of w×h (multiples of the
// factor); the batch size is len(pixels)/(in·w·h).
func (v *VAE) EncodeImage(ctx context.Context, rt *nn.Runtime, pixels []float32, w, h int) (*DiagonalGaussian, error) {
	if v.Encoder == nil {
		return nil, errors.New("vae encode: these weights have no encoder")
	}
	f := v.Config.Factor
	n, err := batch(len(pixels), v.Config.InChannels, w, h, f, "pixels")
	if err != nil {
		return nil, err
	}
	out, err := rt.Run(ctx, func(c *ggml.Context) []*ggml.Tensor {
		x := c.InputF32(pixels, int64(w), int64(h), int64(v.Config.InChannels), int64(n))
		mean, logvar := v.Encode(c, x)
		return []*ggml.Tensor{mean, logvar}
	})
	if err != nil {
		return nil, fmt.Errorf("vae encode: %w", err)
	}
	return &DiagonalGaussian{Mean: out[0].Data, LogVar: out[1].Data,
		W: w / f, H: h / f, C: v.Config.LatentChannels, N: n}, nil
}

// batch checks an NCHW slice length and returns N.
func batch(length, channels, w, h, multiple int, what string) (int, error) {
	if w <= 0 || h <= 0 || w%multiple != 0 || h%multiple != 0 {
		return 0, fmt.Errorf("vae: %s size %d×%d must be positive multiples of %d", what, w, h, multiple)
	}
	per := channels * w * h
	if length == 0 || length%per != 0 {
		return 0, fmt.Errorf("vae: %d %s values are not whole %d×%d×%d images", length, what, channels, h, w)
	}
	return length / per, nil
}

// DiagonalGaussian is the encoder's posterior: per latent element a normal
// distribution with the given mean and log-variance (clamped to [-30, 20]).
// Slices are NCHW of N×C×H×W.
type DiagonalGaussian struct {
	Mean, LogVar []float32
	W, H, C, N   int
}

// Std returns exp(logvar/2).
func (d *DiagonalGaussian) Std() []float32 {
	s := make([]float32, len(d.LogVar))
	for i, lv := range d.LogVar {
		s[i] = float32(math.Exp(0.5 * float64(lv)))
	}
	return s
}

// Mode returns the mean (the most likely latent).
func (d *DiagonalGaussian) Mode() []float32 { return append([]float32(nil), d.Mean...) }

// Sample returns mean + std·noise for standard-normal noise of the same
// length (drawn by the caller, e.g. with a torch-compatible generator).
func (d *DiagonalGaussian) Sample(noise []float32) ([]float32, error) {
	if len(noise) != len(d.Mean) {
		return nil, fmt.Errorf("vae: %d noise values for %d latents", len(noise), len(d.Mean))
	}
	out := make([]float32, len(noise))
	for i, s := range d.Std() {
		out[i] = d.Mean[i] + float32(s*noise[i]) // no FMA: as torch rounds
	}
	return out, nil
}
