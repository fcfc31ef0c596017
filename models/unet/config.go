package unet

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// ErrUnsupported is wrapped when a checkpoint's UNet is not an SDXL-style
// UNet2DConditionModel this package can run (wrong shapes, missing or extra
// pieces, inpainting inputs, ...).
var ErrUnsupported = errors.New("unsupported UNet")

// Config holds the UNet's hyperparameters. Everything above the "fixed
// conventions" line is read off the weights by Infer; the rest are SDXL's
// conventions, which the weights cannot tell.
type Config struct {
	InChannels, OutChannels int
	// BlockOutChannels has one entry per resolution level (SDXL: 320, 640, 1280).
	BlockOutChannels []int
	// LayersPerBlock is the number of resnets of each down level; the up
	// level mirroring it has one more.
	LayersPerBlock []int
	// DownDepth[level][i] is the transformer depth of the attention after
	// resnet i of that down level; a nil entry means the level has no
	// attention (DownBlock2D).
	DownDepth [][]int
	// MidDepth lists the depth of each mid-block attention (SDXL: one).
	MidDepth []int
	// UpDepth is DownDepth for the up levels (in up order: deepest first).
	UpDepth [][]int
	// CrossAttentionDim is the width of encoder_hidden_states.
	CrossAttentionDim int
	// TimeProjDim is the sinusoidal timestep width; TimeEmbedDim the
	// embedding width after time_embedding.
	TimeProjDim, TimeEmbedDim int
	// AddEmbedInDim is add_embedding.linear_1's input width: pooled text
	// embedding width + len(time_ids) × addition_time_embed_dim. The split is
	// read from the inputs' widths at Forward time.
	AddEmbedInDim int

	// Fixed conventions (SDXL's; not inferable from shapes).
	HeadDim            int     // attention head width (heads = channels / HeadDim)
	NormGroups         int     // GroupNorm groups everywhere
	ResnetEps          float32 // GroupNorm eps in resnets and conv_norm_out
	TransformerNormEps float32 // GroupNorm eps of Transformer2DModel's input norm
	LayerNormEps       float32 // LayerNorm eps inside transformer blocks
}

// Levels returns the number of resolution levels.
func (c *Config) Levels() int { return len(c.BlockOutChannels) }

// Factor returns the UNet's total downscale. Sides that are not a multiple
// of it work too (the upsamplers then match the skip connections' sizes).
func (c *Config) Factor() int { return 1 << (c.Levels() - 1) }

// String summarises the configuration.
func (c Config) String() string {
	return fmt.Sprintf("UNet(in %d, out %d, channels %v, layers %v, down depths %v, mid %v, up depths %v, context %d, time %d→%d, add_embedding in %d)",
		c.InChannels, c.OutChannels, c.BlockOutChannels, c.LayersPerBlock, c.DownDepth, c.MidDepth, c.UpDepth,
		c.CrossAttentionDim, c.TimeProjDim, c.TimeEmbedDim, c.AddEmbedInDim)
}

func sdxlConventions() Config {
	return Config{HeadDim: 64, NormGroups: 32, ResnetEps: 1e-5, TransformerNormEps: 1e-6, LayerNormEps: 1e-5}
}

// Infer reads the UNet's hyperparameters from the tensors of set under prefix
// (e.g. "unet.", canonical diffusers names) and checks that every tensor has
// exactly the shape the architecture needs, and that nothing is left over.
func Infer(set *weights.Set, prefix string) (Config, error) {
	cfg := sdxlConventions()
	fail := func(format string, a ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, a...))
	}
	shape := func(name string, rank int) ([]int64, error) {
		t, ok := set.Get(prefix + name)
		if !ok {
			return nil, fmt.Errorf("%w: %w %s%s", ErrUnsupported, nn.ErrMissing, prefix, name)
		}
		if len(t.Shape) != rank {
			return nil, fmt.Errorf("%w: %s%s has shape %v, want %d dimensions", ErrUnsupported, prefix, name, t.Shape, rank)
		}
		return t.Shape, nil
	}
	count := func(p string) int { return nn.Count(set, prefix+p) }

	s, err := shape("conv_in.weight", 4)
	if err != nil {
		return Config{}, err
	}
	cfg.InChannels = int(s[1])
	if s, err = shape("conv_out.weight", 4); err != nil {
		return Config{}, err
	}
	cfg.OutChannels = int(s[0])
	if cfg.InChannels != cfg.OutChannels {
		return fail("conv_in takes %d channels but conv_out gives %d (inpainting and instruct-edit UNets are not supported)",
			cfg.InChannels, cfg.OutChannels)
	}
	if s, err = shape("time_embedding.linear_1.weight", 2); err != nil {
		return Config{}, err
	}
	cfg.TimeEmbedDim, cfg.TimeProjDim = int(s[0]), int(s[1])
	if cfg.TimeProjDim%2 != 0 {
		return fail("time_embedding takes an odd width %d", cfg.TimeProjDim)
	}
	if s, err = shape("add_embedding.linear_1.weight", 2); err != nil {
		return Config{}, fmt.Errorf("%w (not an SDXL UNet: no text_time addition embedding)", err)
	}
	cfg.AddEmbedInDim = int(s[1])

	levels := count("down_blocks.")
	if levels == 0 {
		return fail("no down_blocks")
	}
	if n := count("up_blocks."); n != levels {
		return fail("%d down levels but %d up levels", levels, n)
	}
	depths := func(block string, resnets int) ([]int, error) {
		n := count(block + ".attentions.")
		if n == 0 {
			return nil, nil
		}
		if n != resnets {
			return nil, fmt.Errorf("%w: %s%s has %d resnets but %d attentions", ErrUnsupported, prefix, block, resnets, n)
		}
		d := make([]int, n)
		for j := range d {
			d[j] = count(fmt.Sprintf("%s.attentions.%d.transformer_blocks.", block, j))
			if d[j] == 0 {
				return nil, fmt.Errorf("%w: %s%s.attentions.%d has no transformer_blocks", ErrUnsupported, prefix, block, j)
			}
		}
		return d, nil
	}
	for i := 0; i < levels; i++ {
		block := fmt.Sprintf("down_blocks.%d", i)
		layers := count(block + ".resnets.")
		if layers == 0 {
			return fail("%s has no resnets", block)
		}
		if s, err = shape(block+".resnets.0.conv1.weight", 4); err != nil {
			return Config{}, err
		}
		cfg.BlockOutChannels = append(cfg.BlockOutChannels, int(s[0]))
		cfg.LayersPerBlock = append(cfg.LayersPerBlock, layers)
		d, err := depths(block, layers)
		if err != nil {
			return Config{}, err
		}
		cfg.DownDepth = append(cfg.DownDepth, d)
	}
	for u := 0; u < levels; u++ {
		block := fmt.Sprintf("up_blocks.%d", u)
		want := cfg.LayersPerBlock[levels-1-u] + 1
		if n := count(block + ".resnets."); n != want {
			return fail("%s has %d resnets, want %d (one more than down_blocks.%d)", block, n, want, levels-1-u)
		}
		d, err := depths(block, want)
		if err != nil {
			return Config{}, err
		}
		cfg.UpDepth = append(cfg.UpDepth, d)
	}
	midResnets := count("mid_block.resnets.")
	if midResnets == 0 {
		return fail("no mid_block resnets")
	}
	if n := count("mid_block.attentions."); n != midResnets-1 {
		return fail("mid_block has %d resnets and %d attentions, want one attention between each pair", midResnets, n)
	}
	for j := 0; j < midResnets-1; j++ {
		d := count(fmt.Sprintf("mid_block.attentions.%d.transformer_blocks.", j))
		if d == 0 {
			return fail("mid_block.attentions.%d has no transformer_blocks", j)
		}
		cfg.MidDepth = append(cfg.MidDepth, d)
	}
	// The context width comes from the first cross-attention.
	for _, name := range set.Names() {
		rest, ok := strings.CutPrefix(name, prefix)
		if ok && strings.HasSuffix(rest, ".attn2.to_k.weight") {
			if s, err = shape(rest, 2); err != nil {
				return Config{}, err
			}
			cfg.CrossAttentionDim = int(s[1])
			break
		}
	}
	if cfg.CrossAttentionDim == 0 {
		return fail("no cross-attention (attn2.to_k) found")
	}
	if err := cfg.check(set, prefix); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// check compares the tensors under prefix with the shapes cfg implies.
func (cfg *Config) check(set *weights.Set, prefix string) error {
	want, err := cfg.shapes()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	for _, name := range sortedKeys(want) {
		t, ok := set.Get(prefix + name)
		if !ok {
			return fmt.Errorf("%w: %w %s%s", ErrUnsupported, nn.ErrMissing, prefix, name)
		}
		if !slices.Equal(t.Shape, want[name]) {
			return fmt.Errorf("%w: %s%s has shape %v, want %v (%s)", ErrUnsupported, prefix, name, t.Shape, want[name], cfg)
		}
	}
	for _, name := range set.Names() {
		rest, ok := strings.CutPrefix(name, prefix)
		if ok {
			if _, known := want[rest]; !known {
				return fmt.Errorf("%w: unexpected tensor %s (%s)", ErrUnsupported, name, cfg)
			}
		}
	}
	return nil
}

func sortedKeys(m map[string][]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// shapes lists every tensor the configuration needs with its PyTorch shape.
// It also checks the widths that the fixed conventions constrain (group
// counts, head width), so that no bad shape ever reaches ggml.
func (cfg *Config) shapes() (map[string][]int64, error) {
	m := map[string][]int64{}
	var bad error
	divisible := func(what string, ch, by int) {
		if bad == nil && (ch <= 0 || ch%by != 0) {
			bad = fmt.Errorf("%s has %d channels, not a multiple of %d", what, ch, by)
		}
	}
	linear := func(name string, in, out int, bias bool) {
		m[name+".weight"] = []int64{int64(out), int64(in)}
		if bias {
			m[name+".bias"] = []int64{int64(out)}
		}
	}
	conv := func(name string, in, out, k int) {
		m[name+".weight"] = []int64{int64(out), int64(in), int64(k), int64(k)}
		m[name+".bias"] = []int64{int64(out)}
	}
	norm := func(name string, ch int) {
		m[name+".weight"] = []int64{int64(ch)}
		m[name+".bias"] = []int64{int64(ch)}
	}
	groupNorm := func(name string, ch int) {
		divisible(name, ch, cfg.NormGroups)
		norm(name, ch)
	}
	resnet := func(name string, in, out int) {
		groupNorm(name+".norm1", in)
		conv(name+".conv1", in, out, 3)
		linear(name+".time_emb_proj", cfg.TimeEmbedDim, out, true)
		groupNorm(name+".norm2", out)
		conv(name+".conv2", out, out, 3)
		if in != out {
			conv(name+".conv_shortcut", in, out, 1)
		}
	}
	transformer := func(name string, ch, depth int) {
		divisible(name, ch, cfg.HeadDim)
		groupNorm(name+".norm", ch)
		linear(name+".proj_in", ch, ch, true)
		linear(name+".proj_out", ch, ch, true)
		for k := 0; k < depth; k++ {
			b := fmt.Sprintf("%s.transformer_blocks.%d", name, k)
			for i, ctx := range []int{ch, cfg.CrossAttentionDim} {
				a := fmt.Sprintf("%s.attn%d", b, i+1)
				linear(a+".to_q", ch, ch, false)
				linear(a+".to_k", ctx, ch, false)
				linear(a+".to_v", ctx, ch, false)
				linear(a+".to_out.0", ch, ch, true)
			}
			for i := 1; i <= 3; i++ {
				norm(fmt.Sprintf("%s.norm%d", b, i), ch)
			}
			linear(b+".ff.net.0.proj", ch, 8*ch, true)
			linear(b+".ff.net.2", 4*ch, ch, true)
		}
	}

	L := cfg.Levels()
	ch := cfg.BlockOutChannels
	conv("conv_in", cfg.InChannels, ch[0], 3)
	linear("time_embedding.linear_1", cfg.TimeProjDim, cfg.TimeEmbedDim, true)
	linear("time_embedding.linear_2", cfg.TimeEmbedDim, cfg.TimeEmbedDim, true)
	linear("add_embedding.linear_1", cfg.AddEmbedInDim, cfg.TimeEmbedDim, true)
	linear("add_embedding.linear_2", cfg.TimeEmbedDim, cfg.TimeEmbedDim, true)

	skips := []int{ch[0]}
	prev := ch[0]
	for i := 0; i < L; i++ {
		for j := 0; j < cfg.LayersPerBlock[i]; j++ {
			resnet(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), prev, ch[i])
			prev = ch[i]
			if cfg.DownDepth[i] != nil {
				transformer(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j), ch[i], cfg.DownDepth[i][j])
			}
			skips = append(skips, prev)
		}
		if i < L-1 {
			conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), prev, prev, 3)
			skips = append(skips, prev)
		}
	}
	resnet("mid_block.resnets.0", prev, prev)
	for j, d := range cfg.MidDepth {
		transformer(fmt.Sprintf("mid_block.attentions.%d", j), prev, d)
		resnet(fmt.Sprintf("mid_block.resnets.%d", j+1), prev, prev)
	}
	for u := 0; u < L; u++ {
		out := ch[L-1-u]
		for j := 0; j < cfg.LayersPerBlock[L-1-u]+1; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			resnet(fmt.Sprintf("up_blocks.%d.resnets.%d", u, j), prev+skip, out)
			prev = out
			if cfg.UpDepth[u] != nil {
				transformer(fmt.Sprintf("up_blocks.%d.attentions.%d", u, j), out, cfg.UpDepth[u][j])
			}
		}
		if u < L-1 {
			conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", u), prev, prev, 3)
		}
	}
	groupNorm("conv_norm_out", prev)
	conv("conv_out", prev, cfg.OutChannels, 3)
	return m, bad
}
