package randweights

import (
	"context"
	"fmt"
	"math"
)

// PhotoMakerConfig sizes a PhotoMaker adapter in the flattened .safetensors
// layout (id_encoder.*, lora_weights.*).
type PhotoMakerConfig struct {
	Version int // 1 or 2

	// CLIP ViT-L/14 vision tower.
	VisionWidth, VisionLayers, VisionMLP int
	ImageSize, PatchSize                 int
	// Projections of the pooled output; their sum is the fuse width, which
	// must equal the UNet's context width (768 + 1280 = 2048).
	Projection, Projection2 int

	// v2 qformer_perceiver.
	IDEmbedWidth   int // ArcFace embedding (512)
	TokenProjMult  int // token_proj hidden = IDEmbedWidth·TokenProjMult (4)
	Tokens         int // ID tokens per photo (2)
	PerceiverDepth int // 4
	DimHead        int // 128
	FFMult         int // 4

	// LoRA over every attn1/attn2 to_q/to_k/to_v/to_out of the UNet.
	LoRARank int
	UNet     SDXLConfig
}

// DefaultPhotoMaker is the official adapter's architecture for version 1 or 2.
func DefaultPhotoMaker(version int) PhotoMakerConfig {
	return PhotoMakerConfig{
		Version:     version,
		VisionWidth: 1024, VisionLayers: 24, VisionMLP: 4096, ImageSize: 224, PatchSize: 14,
		Projection: 768, Projection2: 1280,
		IDEmbedWidth: 512, TokenProjMult: 4, Tokens: 2, PerceiverDepth: 4, DimHead: 128, FFMult: 4,
		LoRARank: 64, UNet: DefaultSDXL(),
	}
}

// TinyPhotoMaker has the sizes of the bundled tiny adapters
// (testdata/photomaker/photomaker-v{1,2}-tiny.safetensors), which fit TinySDXL.
func TinyPhotoMaker(version int) PhotoMakerConfig {
	return PhotoMakerConfig{
		Version:     version,
		VisionWidth: 128, VisionLayers: 2, VisionMLP: 512, ImageSize: 224, PatchSize: 14,
		Projection: 64, Projection2: 64,
		IDEmbedWidth: 512, TokenProjMult: 4, Tokens: 2, PerceiverDepth: 4, DimHead: 128, FFMult: 4,
		LoRARank: 4, UNet: TinySDXL(),
	}
}

// Validate reports adapters that do not fit their UNet or the model code.
func (c PhotoMakerConfig) Validate() error {
	fuse := c.Projection + c.Projection2
	switch {
	case c.Version != 1 && c.Version != 2:
		return fmt.Errorf("randweights: PhotoMaker version %d (want 1 or 2)", c.Version)
	case fuse != c.UNet.ContextDim():
		return fmt.Errorf("randweights: projections give %d+%d values, the UNet's context is %d wide", c.Projection, c.Projection2, c.UNet.ContextDim())
	case c.VisionWidth%64 != 0:
		return fmt.Errorf("randweights: vision width %d is not a multiple of the 64-wide heads", c.VisionWidth)
	case c.PatchSize <= 0 || c.ImageSize%c.PatchSize != 0:
		return fmt.Errorf("randweights: image size %d is not a multiple of the patch size %d", c.ImageSize, c.PatchSize)
	case c.Version == 2 && (c.DimHead <= 0 || fuse%c.DimHead != 0):
		return fmt.Errorf("randweights: perceiver width %d is not a multiple of dim_head %d", fuse, c.DimHead)
	case c.LoRARank < 1:
		return fmt.Errorf("randweights: LoRA rank %d", c.LoRARank)
	}
	return c.UNet.Validate()
}

// WritePhotoMaker writes a full-size PhotoMaker adapter (version 1 or 2)
// that fits DefaultSDXL, with random fp16 weights derived from seed.
func WritePhotoMaker(ctx context.Context, path string, seed uint64, version int) error {
	return WritePhotoMakerConfig(ctx, path, seed, DefaultPhotoMaker(version))
}

// WritePhotoMakerConfig writes an adapter of size cfg.
func WritePhotoMakerConfig(ctx context.Context, path string, seed uint64, cfg PhotoMakerConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return Write(ctx, path, seed, PhotoMakerTensors(cfg), map[string]string{
		"format": "pt", "generator": "photomaker randweights", "seed": fmt.Sprint(seed),
		"photomaker_version": fmt.Sprint(cfg.Version)})
}

// PhotoMakerTensors lists the adapter's tensors: id_encoder.* then lora_weights.*.
func PhotoMakerTensors(c PhotoMakerConfig) []Spec {
	l := &specList{prefix: "id_encoder."}
	w := c.VisionWidth
	fuse := c.Projection + c.Projection2

	// CLIPVisionModel (HF names; pre_layrnorm is transformers' spelling),
	// initialised by transformers' rules as in the kit's adapters.
	grid := c.ImageSize / c.PatchSize
	l.add("vision_model.embeddings.class_embedding", Normal, 1/math.Sqrt(float64(w)), w)
	l.add("vision_model.embeddings.patch_embedding.weight", Normal, Std, w, 3, c.PatchSize, c.PatchSize)
	l.add("vision_model.embeddings.position_embedding.weight", Normal, Std, grid*grid+1, w)
	l.norm("vision_model.pre_layrnorm", w)
	l.clipLayers("vision_model.", w, c.VisionMLP, c.VisionLayers)
	l.norm("vision_model.post_layernorm", w)
	l.add("visual_projection.weight", Normal, Std, c.Projection, w)
	l.matrix("visual_projection_2", c.Projection2, w) // PhotoMaker's own nn.Linear

	// FuseModule(fuse): mlp1 = MLP(2·fuse → fuse), mlp2 = MLP(fuse → fuse) + residual.
	l.linear("fuse_module.mlp1.fc1", fuse, 2*fuse)
	l.linear("fuse_module.mlp1.fc2", fuse, fuse)
	l.norm("fuse_module.mlp1.layernorm", 2*fuse)
	l.linear("fuse_module.mlp2.fc1", fuse, fuse)
	l.linear("fuse_module.mlp2.fc2", fuse, fuse)
	l.norm("fuse_module.mlp2.layernorm", fuse)
	l.norm("fuse_module.layer_norm", fuse)

	if c.Version == 2 {
		q := "qformer_perceiver."
		hidden := c.IDEmbedWidth * c.TokenProjMult
		l.linear(q+"token_proj.0", hidden, c.IDEmbedWidth)
		l.linear(q+"token_proj.2", fuse*c.Tokens, hidden)
		l.norm(q+"token_norm", fuse)
		r := q + "perceiver_resampler."
		inner := fuse // heads = fuse/DimHead, heads·DimHead = fuse
		l.linear(r+"proj_in", fuse, w)
		for i := 0; i < c.PerceiverDepth; i++ {
			p := fmt.Sprintf("%slayers.%d.", r, i)
			l.norm(p+"0.norm1", fuse)
			l.norm(p+"0.norm2", fuse)
			l.matrix(p+"0.to_q", inner, fuse)
			l.matrix(p+"0.to_kv", 2*inner, fuse)
			l.matrix(p+"0.to_out", fuse, inner)
			l.norm(p+"1.0", fuse) // FeedForward: LayerNorm, Linear, GELU, Linear (no biases)
			l.matrix(p+"1.1", fuse*c.FFMult, fuse)
			l.matrix(p+"1.3", fuse, fuse*c.FFMult)
		}
		l.linear(r+"proj_out", fuse, fuse)
		l.norm(r+"norm_out", fuse)
	}

	// LoRA in diffusers' attention-processor format, scale 1 (no alphas).
	// A new LoRA's up matrices are zero; these are random (N(0, Std²)) so
	// that merging it changes the UNet, as a trained one does.
	l.prefix = "lora_weights."
	ctx := c.UNet.ContextDim()
	for _, b := range unetTransformerBlocks(c.UNet) {
		for _, attn := range []string{"attn1", "attn2"} {
			for _, proj := range []string{"to_q", "to_k", "to_v", "to_out"} {
				in := b.ch
				if attn == "attn2" && (proj == "to_k" || proj == "to_v") {
					in = ctx
				}
				p := fmt.Sprintf("unet.%s.%s.processor.%s_lora.", b.path, attn, proj)
				l.add(p+"down.weight", Normal, Std, c.LoRARank, in)
				l.add(p+"up.weight", Normal, Std, b.ch, c.LoRARank)
			}
		}
	}
	return l.out
}

// block is one transformer block of the UNet under its diffusers path.
type block struct {
	path string
	ch   int
}

// unetTransformerBlocks lists the UNet's transformer blocks (diffusers
// names): down levels, mid block, up levels.
func unetTransformerBlocks(c SDXLConfig) []block {
	var out []block
	levels := len(c.Channels)
	for i, ch := range c.Channels {
		for j := 0; j < c.LayersPerBlock; j++ {
			for k := 0; k < c.DownDepth[i]; k++ {
				out = append(out, block{fmt.Sprintf("down_blocks.%d.attentions.%d.transformer_blocks.%d", i, j, k), ch})
			}
		}
	}
	for k := 0; k < c.MidDepth; k++ {
		out = append(out, block{fmt.Sprintf("mid_block.attentions.0.transformer_blocks.%d", k), c.Channels[levels-1]})
	}
	for up := 0; up < levels; up++ {
		ch := c.Channels[levels-1-up]
		for j := 0; j <= c.LayersPerBlock; j++ {
			for k := 0; k < c.UpDepth[up]; k++ {
				out = append(out, block{fmt.Sprintf("up_blocks.%d.attentions.%d.transformer_blocks.%d", up, j, k), ch})
			}
		}
	}
	return out
}
