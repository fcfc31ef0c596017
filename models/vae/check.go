package vae

import (
	"fmt"
	"strconv"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
)

// check walks the bound model the way the forward pass will, verifying
// every weight's shape against the channel counts it implies, and returns
// the hyperparameters. Nothing of a bad shape may reach ggml.
func (v *VAE) check(prefix string) (Config, error) {
	k := &checker{prefix: prefix}
	cfg := Config{
		QuantConv:     v.QuantConv != nil,
		PostQuantConv: v.PostQuantConv != nil,
		Encoder:       v.Encoder != nil,
	}

	// Decoder: latent → top channels → mid → up blocks → image.
	d := &v.Decoder
	if !k.kernel("decoder.conv_in", d.ConvIn.Weight) || !k.kernel("decoder.conv_out", d.ConvOut.Weight) {
		return cfg, k.err
	}
	lat, ch := d.ConvIn.Weight.Ne(2), d.ConvIn.Weight.Ne(3)
	k.conv("decoder.conv_in", &d.ConvIn, lat, ch, 3)
	cfg.LatentChannels = int(lat)
	cfg.MidAttention = len(d.MidBlock.Attentions) > 0
	k.mid("decoder.mid_block", &d.MidBlock, ch)
	ups := 0
	var levels []int
	for i := range d.UpBlocks {
		blk := &d.UpBlocks[i]
		name := "decoder.up_blocks." + strconv.Itoa(i)
		if !k.kernel(name+".resnets.0.conv1", blk.Resnets[0].Conv1.Weight) {
			return cfg, k.err
		}
		out := blk.Resnets[0].Conv1.Weight.Ne(3)
		for j := range blk.Resnets {
			k.resnet(name+".resnets."+strconv.Itoa(j), &blk.Resnets[j], ch, out)
			ch = out
		}
		if len(blk.Upsamplers) > 1 {
			k.fail("%s has %d upsamplers; want at most 1", k.prefix+name, len(blk.Upsamplers))
		}
		for j := range blk.Upsamplers {
			k.conv(name+".upsamplers."+strconv.Itoa(j)+".conv", &blk.Upsamplers[j].Conv, ch, ch, 3)
			ups++
		}
		levels = append([]int{int(out)}, levels...)
		if i == 0 {
			cfg.LayersPerBlock = len(blk.Resnets) - 1
		}
	}
	k.norm("decoder.conv_norm_out", &d.ConvNormOut, ch)
	cfg.OutChannels = int(d.ConvOut.Weight.Ne(3))
	k.conv("decoder.conv_out", &d.ConvOut, ch, int64(cfg.OutChannels), 3)
	if v.PostQuantConv != nil {
		k.conv("post_quant_conv", v.PostQuantConv, lat, lat, 1)
	}
	cfg.BlockOutChannels = levels
	cfg.Factor = 1 << ups

	// Encoder: image → conv_in → down blocks → mid → 2·latent moments.
	if e := v.Encoder; e != nil {
		if !k.kernel("encoder.conv_in", e.ConvIn.Weight) {
			return cfg, k.err
		}
		in, ch := e.ConvIn.Weight.Ne(2), e.ConvIn.Weight.Ne(3)
		cfg.InChannels = int(in)
		k.conv("encoder.conv_in", &e.ConvIn, in, ch, 3)
		downs := 0
		levels = levels[:0:0]
		for i := range e.DownBlocks {
			blk := &e.DownBlocks[i]
			name := "encoder.down_blocks." + strconv.Itoa(i)
			if !k.kernel(name+".resnets.0.conv1", blk.Resnets[0].Conv1.Weight) {
				return cfg, k.err
			}
			out := blk.Resnets[0].Conv1.Weight.Ne(3)
			for j := range blk.Resnets {
				k.resnet(name+".resnets."+strconv.Itoa(j), &blk.Resnets[j], ch, out)
				ch = out
			}
			if len(blk.Downsamplers) > 1 {
				k.fail("%s has %d downsamplers; want at most 1", k.prefix+name, len(blk.Downsamplers))
			}
			for j := range blk.Downsamplers {
				k.conv(name+".downsamplers."+strconv.Itoa(j)+".conv", &blk.Downsamplers[j].Conv, ch, ch, 3)
				downs++
			}
			levels = append(levels, int(out))
			if i == 0 {
				cfg.LayersPerBlock = len(blk.Resnets)
			}
		}
		k.mid("encoder.mid_block", &e.MidBlock, ch)
		k.norm("encoder.conv_norm_out", &e.ConvNormOut, ch)
		k.conv("encoder.conv_out", &e.ConvOut, ch, 2*lat, 3)
		if v.QuantConv != nil {
			k.conv("quant_conv", v.QuantConv, 2*lat, 2*lat, 1)
		}
		if downs != ups && k.err == nil {
			k.fail("the encoder downsamples %d times but the decoder upsamples %d times", downs, ups)
		}
		cfg.BlockOutChannels = levels
	} else if v.QuantConv != nil {
		k.conv("quant_conv", v.QuantConv, 2*lat, 2*lat, 1)
	}
	return cfg, k.err
}

// checker records the first shape mismatch. Shapes are compared and
// reported in PyTorch order.
type checker struct {
	prefix string
	err    error
}

func (k *checker) fail(format string, args ...any) {
	if k.err == nil {
		k.err = fmt.Errorf("%w: "+format, append([]any{ErrWeights}, args...)...)
	}
}

// torchShape returns t's shape in PyTorch order without leading ones.
func torchShape(t *ggml.Tensor) []int64 {
	ne := t.Shape()
	n := 4
	for n > 1 && ne[n-1] == 1 {
		n--
	}
	s := make([]int64, n)
	for i := range s {
		s[i] = ne[n-1-i]
	}
	return s
}

// shape reports whether t has the PyTorch shape want (extra trailing ggml
// dimensions of 1 allowed).
func (k *checker) shape(name string, t *ggml.Tensor, want ...int64) bool {
	ne := t.Shape()
	ok := t.Type() == ggml.TypeF32 || t.Type() == ggml.TypeF16
	for i := 0; i < 4; i++ {
		w := int64(1)
		if i < len(want) {
			w = want[len(want)-1-i]
		}
		if ne[i] != w {
			ok = false
		}
	}
	if !ok {
		k.fail("%s%s has shape %v (%s); want %v", k.prefix, name, torchShape(t), t.Type(), want)
	}
	return ok
}

// kernel checks that a weight whose channel counts are read from it is a
// [out, in, 3, 3] convolution kernel.
func (k *checker) kernel(name string, w *ggml.Tensor) bool {
	if w.Ne(0) != 3 || w.Ne(1) != 3 {
		k.fail("%s%s.weight has shape %v; want [out, in, 3, 3]", k.prefix, name, torchShape(w))
		return false
	}
	return true
}

func (k *checker) conv(name string, l *nn.Conv2D, in, out, size int64) {
	k.shape(name+".weight", l.Weight, out, in, size, size)
	if l.Bias != nil {
		k.shape(name+".bias", l.Bias, out)
	}
}

func (k *checker) norm(name string, l *nn.GroupNorm, ch int64) {
	if ch%groups != 0 {
		k.fail("%s%s normalises %d channels, not a multiple of %d groups", k.prefix, name, ch, groups)
	}
	k.shape(name+".weight", l.Weight, ch)
	k.shape(name+".bias", l.Bias, ch)
}

// linear accepts [ch, ch] and the 1×1-conv layout [ch, ch, 1, 1].
func (k *checker) linear(name string, l *nn.Linear, ch int64) {
	w := l.Weight
	if w.Ne(0) == 1 && w.Ne(1) == 1 {
		k.shape(name+".weight", w, ch, ch, 1, 1)
	} else {
		k.shape(name+".weight", w, ch, ch)
	}
	if l.Bias != nil {
		k.shape(name+".bias", l.Bias, ch)
	}
}

func (k *checker) resnet(name string, r *ResnetBlock, in, out int64) {
	k.norm(name+".norm1", &r.Norm1, in)
	k.conv(name+".conv1", &r.Conv1, in, out, 3)
	k.norm(name+".norm2", &r.Norm2, out)
	k.conv(name+".conv2", &r.Conv2, out, out, 3)
	switch {
	case r.Shortcut != nil:
		k.conv(name+".conv_shortcut", r.Shortcut, in, out, 1)
	case in != out:
		k.fail("%s%s maps %d to %d channels but has no conv_shortcut", k.prefix, name, in, out)
	}
}

func (k *checker) mid(name string, m *MidBlock, ch int64) {
	if len(m.Attentions) > len(m.Resnets)-1 {
		k.fail("%s%s has %d attentions for %d resnets", k.prefix, name, len(m.Attentions), len(m.Resnets))
	}
	for i := range m.Resnets {
		k.resnet(name+".resnets."+strconv.Itoa(i), &m.Resnets[i], ch, ch)
	}
	for i := range m.Attentions {
		a := &m.Attentions[i]
		p := name + ".attentions." + strconv.Itoa(i)
		k.norm(p+".group_norm", &a.GroupNorm, ch)
		k.linear(p+".to_q", &a.ToQ, ch)
		k.linear(p+".to_k", &a.ToK, ch)
		k.linear(p+".to_v", &a.ToV, ch)
		k.linear(p+".to_out.0", &a.ToOut, ch)
	}
}
