package photomaker

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/tokenizer"
	"github.com/gophotomaker/photomaker/weights"
)

// idStage turns a request's ID photos into the two positive branches of a
// PhotoMaker generation: the text-only prompt (early steps) and the prompt
// whose class-word copies are fused with the stacked ID embeddings.
type idStage struct {
	enc *IDEncoder
}

func loadIDStage(ctx context.Context, rt *nn.Runtime, adapter *weights.Model, policy nn.TypePolicy) (*idStage, error) {
	enc, err := LoadIDEncoder(ctx, rt, adapter.Tensors, "pm.", IDEncoderOptions{Policy: policy})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", adapter.Path, err)
	}
	return &idStage{enc: enc}, nil
}

func (s *idStage) conditioning(ctx context.Context, p *Pipeline, req *Request) (text, id conditioning, err error) {
	n := len(req.IDImages)
	if n == 0 {
		return text, id, fmt.Errorf("%w: PhotoMaker needs at least one ID photo of the person", ErrInvalidRequest)
	}
	if s.enc.Version == V2 && len(req.IDEmbeds) != n {
		if len(req.IDEmbeds) == 0 {
			return text, id, fmt.Errorf("%w: PhotoMaker v2 needs a face embedding per ID photo (--id-embeds: raw 512-d ArcFace embeddings); in-process face detection is not available yet", ErrInvalidRequest)
		}
		return text, id, fmt.Errorf("%w: %d face embeddings for %d ID photos: give one per photo", ErrInvalidRequest, len(req.IDEmbeds), n)
	}
	ip, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), req.Prompt, s.enc.Version, []Identity{{Trigger: req.TriggerWord, Images: n}})
	if err != nil {
		return text, id, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	pixels := make([]float32, 0, n*3*224*224)
	for _, img := range req.IDImages {
		pixels = append(pixels, imageproc.CLIPPixels(img)...)
	}
	withClass, err := p.encodeIDs(ctx, ip.IDs1, ip.IDs2, false)
	if err != nil {
		return text, id, err
	}
	fused, err := s.enc.EncodeRows(ctx, p.rt, pixels, req.IDEmbeds, withClass.embeds, ip.FusionRows())
	if err != nil {
		return text, id, err
	}
	text, err = p.encodeText(ctx, ip.TextOnly, false)
	if err != nil {
		return text, id, err
	}
	return text, conditioning{embeds: fused, pooled: withClass.pooled}, nil
}

func (s *idStage) Close() {
	if s.enc != nil {
		s.enc.Close()
	}
}
