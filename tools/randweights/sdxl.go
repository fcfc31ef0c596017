package randweights

import (
	"errors"
	"fmt"
	"math"
)

// Prefixes of the original (Stability "sgm") single-file SDXL layout.
const (
	PrefixUNet = "model.diffusion_model."
	PrefixVAE  = "first_stage_model."
	PrefixTE1  = "conditioner.embedders.0.transformer.text_model."
	PrefixTE2  = "conditioner.embedders.1.model."
)

// TextConfig sizes a CLIP text transformer.
type TextConfig struct {
	Width, Layers, MLP int
}

// SDXLConfig sizes an SDXL checkpoint. DefaultSDXL is the real SDXL base
// 1.0; TinySDXL is the bundled test model's size.
type SDXLConfig struct {
	// UNet.
	Channels       []int // block_out_channels per level (SDXL: 320, 640, 1280)
	LayersPerBlock int   // resnets per down level (up levels have one more)
	DownDepth      []int // transformer depth of each down level's attentions (0: none)
	MidDepth       int   // transformer depth of the mid block
	UpDepth        []int // per up level, deepest first (SDXL: 10, 2, 0)
	TimeIDWidth    int   // sinusoidal width per add_time_id (SDXL: 256; 6 ids)
	LatentChannels int   // 4

	// Text encoders; the UNet's context is TE1.Width+TE2.Width and its
	// add_embedding takes TE2.Width (pooled, projected) + 6·TimeIDWidth.
	TE1, TE2  TextConfig
	Vocab     int // 49408 (the tokenizers' vocabulary)
	Positions int // 77

	// VAE.
	VAEChannels       []int // per level, encoder order (SDXL: 128, 256, 512, 512)
	VAELayersPerBlock int   // 2
}

// DefaultSDXL is the real SDXL base 1.0 architecture.
func DefaultSDXL() SDXLConfig {
	return SDXLConfig{
		Channels: []int{320, 640, 1280}, LayersPerBlock: 2,
		DownDepth: []int{0, 2, 10}, MidDepth: 10, UpDepth: []int{10, 2, 0},
		TimeIDWidth: 256, LatentChannels: 4,
		TE1:   TextConfig{Width: 768, Layers: 12, MLP: 3072},
		TE2:   TextConfig{Width: 1280, Layers: 32, MLP: 5120},
		Vocab: 49408, Positions: 77,
		VAEChannels: []int{128, 256, 512, 512}, VAELayersPerBlock: 2,
	}
}

// TinySDXL has the sizes of the bundled testdata/tiny-sdxl.safetensors: a
// few MB of weights, full-size vocabulary and positions.
func TinySDXL() SDXLConfig {
	return SDXLConfig{
		Channels: []int{32, 64, 128}, LayersPerBlock: 2,
		DownDepth: []int{0, 1, 2}, MidDepth: 2, UpDepth: []int{2, 1, 0},
		TimeIDWidth: 32, LatentChannels: 4,
		TE1:   TextConfig{Width: 64, Layers: 2, MLP: 256},
		TE2:   TextConfig{Width: 64, Layers: 2, MLP: 256},
		Vocab: 49408, Positions: 77,
		VAEChannels: []int{32, 32, 64, 64}, VAELayersPerBlock: 2,
	}
}

// ContextDim is the width of the UNet's cross-attention context.
func (c SDXLConfig) ContextDim() int { return c.TE1.Width + c.TE2.Width }

// Validate reports configurations the model code cannot run.
func (c SDXLConfig) Validate() error {
	levels := len(c.Channels)
	switch {
	case levels == 0 || len(c.DownDepth) != levels || len(c.UpDepth) != levels:
		return errors.New("randweights: Channels, DownDepth and UpDepth need one entry per level")
	case c.LayersPerBlock < 1 || c.VAELayersPerBlock < 1:
		return errors.New("randweights: LayersPerBlock and VAELayersPerBlock must be at least 1")
	case len(c.VAEChannels) == 0:
		return errors.New("randweights: VAEChannels is empty")
	case c.TE1.Width%64 != 0 || c.TE2.Width%64 != 0:
		return errors.New("randweights: text encoder widths must be multiples of the 64-wide heads")
	case c.Vocab < 49408 || c.Positions < 77:
		return errors.New("randweights: the tokenizers need a vocabulary of 49408 and 77 positions")
	}
	for i, ch := range c.Channels {
		if ch%32 != 0 {
			return fmt.Errorf("randweights: UNet level %d: %d channels is not a multiple of 32 (GroupNorm groups)", i, ch)
		}
		if (c.DownDepth[i] > 0 || c.UpDepth[levels-1-i] > 0 || (i == levels-1 && c.MidDepth > 0)) && ch%64 != 0 {
			return fmt.Errorf("randweights: UNet level %d has attention but %d channels is not a multiple of 64", i, ch)
		}
	}
	for i, ch := range c.VAEChannels {
		if ch%32 != 0 {
			return fmt.Errorf("randweights: VAE level %d: %d channels is not a multiple of 32", i, ch)
		}
	}
	return nil
}

// specList accumulates specs under a prefix.
type specList struct {
	out    []Spec
	prefix string
}

func (l *specList) add(name string, init Init, scale float64, shape ...int) {
	s := Spec{Name: l.prefix + name, Init: init, Scale: scale, Shape: make([]int64, len(shape))}
	for i, d := range shape {
		s.Shape[i] = int64(d)
	}
	l.out = append(l.out, s)
}

// torchBound is PyTorch's default initialisation of nn.Linear and
// nn.Conv2d (kaiming uniform with a=√5): weights and biases uniform in
// ±1/√fan_in. diffusers keeps it for every UNet and VAE layer.
func torchBound(fanIn int) float64 { return 1 / math.Sqrt(float64(fanIn)) }

// linear adds NAME.weight [out,in] and NAME.bias [out], PyTorch's default.
func (l *specList) linear(name string, out, in int) {
	l.add(name+".weight", Uniform, torchBound(in), out, in)
	l.add(name+".bias", Uniform, torchBound(in), out)
}

// matrix adds a bias-free nn.Linear's NAME.weight [out,in].
func (l *specList) matrix(name string, out, in int) {
	l.add(name+".weight", Uniform, torchBound(in), out, in)
}

// conv adds a k×k nn.Conv2d's NAME.weight [out,in,k,k] and NAME.bias.
func (l *specList) conv(name string, out, in, k int) {
	l.add(name+".weight", Uniform, torchBound(in*k*k), out, in, k, k)
	l.add(name+".bias", Uniform, torchBound(in*k*k), out)
}

// normalLinear adds NAME.weight ~ N(0, std²) and a zero NAME.bias, the way
// transformers initialises CLIP's projections.
func (l *specList) normalLinear(name string, out, in int, std float64) {
	l.add(name+".weight", Normal, std, out, in)
	l.add(name+".bias", Zeros, 0, out)
}

func (l *specList) norm(name string, ch int) {
	l.add(name+".weight", Ones, 0, ch)
	l.add(name+".bias", Zeros, 0, ch)
}

// clipStd holds transformers' CLIP initialisation for a transformer of
// width w and the given depth (initializer_factor 1).
type clipStd struct {
	qkv, out, fc1, fc2 float64
}

func clipStds(w, layers int) clipStd {
	inProj := math.Pow(float64(w), -0.5) * math.Pow(float64(2*layers), -0.5)
	return clipStd{qkv: inProj, out: math.Pow(float64(w), -0.5), fc1: math.Pow(float64(2*w), -0.5), fc2: inProj}
}

// clipLayers adds transformers' CLIPEncoderLayer tensors (text or vision)
// under PREFIX.encoder.layers.
func (l *specList) clipLayers(prefix string, w, mlp, layers int) {
	std := clipStds(w, layers)
	for i := 0; i < layers; i++ {
		p := fmt.Sprintf("%sencoder.layers.%d.", prefix, i)
		for _, proj := range []string{"k_proj", "v_proj", "q_proj"} {
			l.normalLinear(p+"self_attn."+proj, w, w, std.qkv)
		}
		l.normalLinear(p+"self_attn.out_proj", w, w, std.out)
		l.norm(p+"layer_norm1", w)
		l.normalLinear(p+"mlp.fc1", mlp, w, std.fc1)
		l.normalLinear(p+"mlp.fc2", w, mlp, std.fc2)
		l.norm(p+"layer_norm2", w)
	}
}

// SDXLTensors lists every tensor of a single-file SDXL checkpoint of size c
// under the original names, in the order WriteSDXL writes them: UNet, VAE,
// CLIP-L, OpenCLIP bigG.
func SDXLTensors(c SDXLConfig) []Spec {
	var out []Spec
	out = append(out, unetSpecs(c)...)
	out = append(out, vaeSpecs(c)...)
	out = append(out, te1Specs(c)...)
	out = append(out, te2Specs(c)...)
	return out
}

func unetSpecs(c SDXLConfig) []Spec {
	l := &specList{prefix: PrefixUNet}
	ch0, levels := c.Channels[0], len(c.Channels)
	temb := 4 * ch0
	ctx := c.ContextDim()
	res := func(name string, in, out int) {
		l.norm(name+".in_layers.0", in)
		l.conv(name+".in_layers.2", out, in, 3)
		l.linear(name+".emb_layers.1", out, temb)
		l.norm(name+".out_layers.0", out)
		l.conv(name+".out_layers.3", out, out, 3)
		if in != out {
			l.conv(name+".skip_connection", out, in, 1)
		}
	}
	transformer := func(name string, ch, depth int) {
		l.norm(name+".norm", ch)
		l.linear(name+".proj_in", ch, ch) // use_linear_in_transformer
		for k := 0; k < depth; k++ {
			b := fmt.Sprintf("%s.transformer_blocks.%d.", name, k)
			for _, a := range []string{"attn1", "attn2"} {
				kv := ch
				if a == "attn2" {
					kv = ctx
				}
				l.matrix(b+a+".to_q", ch, ch)
				l.matrix(b+a+".to_k", ch, kv)
				l.matrix(b+a+".to_v", ch, kv)
				l.linear(b+a+".to_out.0", ch, ch)
			}
			l.linear(b+"ff.net.0.proj", 8*ch, ch) // GEGLU: value and gate, 4·ch each
			l.linear(b+"ff.net.2", ch, 4*ch)
			for _, n := range []string{"norm1", "norm2", "norm3"} {
				l.norm(b+n, ch)
			}
		}
		l.linear(name+".proj_out", ch, ch)
	}

	l.linear("time_embed.0", temb, ch0)
	l.linear("time_embed.2", temb, temb)
	l.linear("label_emb.0.0", temb, c.TE2.Width+6*c.TimeIDWidth)
	l.linear("label_emb.0.2", temb, temb)
	l.conv("input_blocks.0.0", ch0, c.LatentChannels, 3)
	skips := []int{ch0}
	ch, n := ch0, 1
	for level, out := range c.Channels {
		for j := 0; j < c.LayersPerBlock; j++ {
			res(fmt.Sprintf("input_blocks.%d.0", n), ch, out)
			ch = out
			if d := c.DownDepth[level]; d > 0 {
				transformer(fmt.Sprintf("input_blocks.%d.1", n), ch, d)
			}
			skips = append(skips, ch)
			n++
		}
		if level != levels-1 {
			l.conv(fmt.Sprintf("input_blocks.%d.0.op", n), ch, ch, 3)
			skips = append(skips, ch)
			n++
		}
	}
	res("middle_block.0", ch, ch)
	transformer("middle_block.1", ch, c.MidDepth)
	res("middle_block.2", ch, ch)
	n = 0
	for up := 0; up < levels; up++ {
		level := levels - 1 - up
		out := c.Channels[level]
		for j := 0; j <= c.LayersPerBlock; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			res(fmt.Sprintf("output_blocks.%d.0", n), ch+skip, out)
			ch = out
			sub := 1
			if d := c.UpDepth[up]; d > 0 {
				transformer(fmt.Sprintf("output_blocks.%d.1", n), ch, d)
				sub = 2
			}
			if j == c.LayersPerBlock && level != 0 {
				l.conv(fmt.Sprintf("output_blocks.%d.%d.conv", n, sub), ch, ch, 3)
			}
			n++
		}
	}
	l.norm("out.0", ch)
	l.conv("out.2", c.LatentChannels, ch, 3)
	return l.out
}

func vaeSpecs(c SDXLConfig) []Spec {
	l := &specList{prefix: PrefixVAE}
	chs, z := c.VAEChannels, c.LatentChannels
	last := len(chs) - 1
	res := func(name string, in, out int) {
		l.norm(name+".norm1", in)
		l.conv(name+".conv1", out, in, 3)
		l.norm(name+".norm2", out)
		l.conv(name+".conv2", out, out, 3)
		if in != out {
			l.conv(name+".nin_shortcut", out, in, 1)
		}
	}
	mid := func(coder string, ch int) {
		res(coder+".mid.block_1", ch, ch)
		l.norm(coder+".mid.attn_1.norm", ch)
		for _, p := range []string{"q", "k", "v", "proj_out"} {
			l.conv(coder+".mid.attn_1."+p, ch, ch, 1)
		}
		res(coder+".mid.block_2", ch, ch)
	}

	l.conv("encoder.conv_in", chs[0], 3, 3)
	in := chs[0]
	for i, out := range chs {
		for j := 0; j < c.VAELayersPerBlock; j++ {
			res(fmt.Sprintf("encoder.down.%d.block.%d", i, j), in, out)
			in = out
		}
		if i != last {
			l.conv(fmt.Sprintf("encoder.down.%d.downsample.conv", i), in, in, 3)
		}
	}
	mid("encoder", in)
	l.norm("encoder.norm_out", in)
	l.conv("encoder.conv_out", 2*z, in, 3)
	l.conv("quant_conv", 2*z, 2*z, 1)
	l.conv("post_quant_conv", z, z, 1)

	in = chs[last]
	l.conv("decoder.conv_in", in, z, 3)
	mid("decoder", in)
	for i := last; i >= 0; i-- {
		out := chs[i]
		for j := 0; j <= c.VAELayersPerBlock; j++ {
			res(fmt.Sprintf("decoder.up.%d.block.%d", i, j), in, out)
			in = out
		}
		if i != 0 {
			l.conv(fmt.Sprintf("decoder.up.%d.upsample.conv", i), in, in, 3)
		}
	}
	l.norm("decoder.norm_out", in)
	l.conv("decoder.conv_out", 3, in, 3)
	return l.out
}

// te1Specs is CLIP-L under transformers' CLIPTextModel names.
func te1Specs(c SDXLConfig) []Spec {
	l := &specList{prefix: PrefixTE1}
	w := c.TE1.Width
	l.add("embeddings.token_embedding.weight", Normal, Std, c.Vocab, w)
	l.add("embeddings.position_embedding.weight", Normal, Std, c.Positions, w)
	l.clipLayers("", w, c.TE1.MLP, c.TE1.Layers)
	l.norm("final_layer_norm", w)
	return l.out
}

// te2Specs is OpenCLIP bigG under open_clip's names: fused in_proj, and
// text_projection [width, width] applied as x @ P. Its values follow
// transformers' CLIPTextModelWithProjection, as the kit's model does.
func te2Specs(c SDXLConfig) []Spec {
	l := &specList{prefix: PrefixTE2}
	w := c.TE2.Width
	std := clipStds(w, c.TE2.Layers)
	l.add("positional_embedding", Normal, Std, c.Positions, w)
	l.add("text_projection", Normal, std.out, w, w)
	l.add("token_embedding.weight", Normal, Std, c.Vocab, w)
	l.norm("ln_final", w)
	for i := 0; i < c.TE2.Layers; i++ {
		p := fmt.Sprintf("transformer.resblocks.%d.", i)
		l.norm(p+"ln_1", w)
		l.add(p+"attn.in_proj_weight", Normal, std.qkv, 3*w, w)
		l.add(p+"attn.in_proj_bias", Zeros, 0, 3*w)
		l.normalLinear(p+"attn.out_proj", w, w, std.out)
		l.norm(p+"ln_2", w)
		l.normalLinear(p+"mlp.c_fc", c.TE2.MLP, w, std.fc1)
		l.normalLinear(p+"mlp.c_proj", w, c.TE2.MLP, std.fc2)
	}
	return l.out
}
