package photomaker

import (
	"context"
	"fmt"
	"time"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/tokenizer"
)

// EncoderTimes are the durations of the encoder stages of one request,
// measured one at a time (Generate's "encode" stage runs them together).
type EncoderTimes struct {
	// Text is one prompt through both text encoders.
	Text time.Duration
	// ID is the ID encoder over all of the request's photos: preprocessing,
	// vision tower, (v2) perceiver and fusion into the prompt. Zero without
	// an adapter.
	ID time.Duration
}

// TimeEncoders runs req's text encoding and, with an adapter, its ID
// encoder once each and times them. It is for benchmarks: Generate does the
// same work (the text encoders three times with an adapter: negative, ID
// and text-only prompts).
func (p *Pipeline) TimeEncoders(ctx context.Context, req Request) (EncoderTimes, error) {
	var et EncoderTimes
	if err := p.mu.LockContext(ctx); err != nil {
		return et, err
	}
	defer p.mu.Unlock()
	if p.rt == nil {
		return et, ErrClosed
	}
	if err := req.fill(); err != nil {
		return et, err
	}
	if err := p.loadEncoders(ctx); err != nil {
		return et, err
	}
	if p.releasesEncoders() {
		defer p.releaseEncoders()
	}
	start := time.Now()
	if _, err := p.encodeText(ctx, req.Prompt, false); err != nil {
		return et, err
	}
	et.Text = time.Since(start)
	if p.id == nil {
		return et, nil
	}
	prompt, people, images, embeds, err := p.id.identities(&req)
	if err != nil {
		return et, err
	}
	if p.id.enc.Version == V2 && len(embeds) != len(images) {
		return et, fmt.Errorf("%w: PhotoMaker v2 needs a face embedding per ID photo", ErrInvalidRequest)
	}
	ip, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, p.id.enc.Version, people)
	if err != nil {
		return et, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	withClass, err := p.encodeIDs(ctx, ip.IDs1, ip.IDs2, false)
	if err != nil {
		return et, err
	}
	start = time.Now()
	pixels := make([]float32, 0, len(images)*3*224*224)
	for _, img := range images {
		pixels = append(pixels, imageproc.CLIPPixels(img)...)
	}
	if _, err := p.id.enc.EncodeRows(ctx, p.encRT, pixels, embeds, withClass.embeds, ip.FusionRows()); err != nil {
		return et, err
	}
	et.ID = time.Since(start)
	return et, nil
}

// MemoryUse is the memory a pipeline holds on its device.
type MemoryUse struct {
	// Weights is the bytes of every model's weights in their device types.
	Weights int64
	// Compute is the device's compute buffer: the largest graph run so far
	// (buffers are reused and only grow).
	Compute int64
	// HostCompute is the CPU fallback's compute buffer when the device is a
	// GPU (0 on the CPU, where Compute already counts it).
	HostCompute int64
	// LoopState is the sampler loop's own device tensors while one runs:
	// the latents and each conditioning's cross-attention keys and values.
	// MemoryUse waits for a running Generate, so it reads 0 there; Peak
	// counts it.
	LoopState int64
	// Peak is the largest Total so far, taken when it can grow most: after
	// loading, after a request's encoding, once its sampler loop is set up
	// and at the loop's end, after its denoising and after its decoding. With ReleaseEncoders only
	// the first two hold the encoders; with OneShot only the denoising
	// holds the UNet.
	Peak int64
}

// Total is Weights + Compute + LoopState: the device memory the pipeline
// needs.
func (m MemoryUse) Total() int64 { return m.Weights + m.Compute + m.LoopState }

// MemoryUse reports the device memory held now. Weights are computed from
// the tensors and the storage policies Load used, which is what the model
// loaders allocate, counting the parts that sit on the device: not the
// encoders when they run on the CPU, stream from RAM or are released, not
// the UNet when it streams from RAM.
func (p *Pipeline) MemoryUse() MemoryUse {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.memoryUse()
	m.Peak = max(p.peak, m.Total())
	return m
}

// notePeak records the memory in use now in MemoryUse.Peak.
func (p *Pipeline) notePeak() { p.peak = max(p.peak, p.memoryUse().Total()) }

// memoryUse is MemoryUse without the lock or the peak.
func (p *Pipeline) memoryUse() MemoryUse {
	var m MemoryUse
	if p.rt == nil {
		return m
	}
	m.Compute = p.rt.Sched.BufferSize(p.rt.Device)
	m.LoopState = p.loopState
	if p.rt.Device != p.rt.CPU {
		m.HostCompute = p.rt.Sched.BufferSize(p.rt.CPU)
	}
	cpu := p.rt.Device.IsCPU()
	m.Weights = p.parts.onDevice(cpu, p.unet != nil, p.vram, p.text != nil && (cpu || p.encRT == p.rt))
	if p.unet != nil && p.unet.CrossKVFreed() {
		m.Weights -= p.parts.unetCrossKV
	}
	return m
}
