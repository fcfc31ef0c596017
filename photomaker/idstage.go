package photomaker

import (
	"context"
	"fmt"
	"image"
	"regexp"
	"strings"

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

// idError is an invalid request (ErrInvalidRequest) that errors.Is also
// finds to be of an ID kind (ErrIDPrompt, ErrIDInput), its text unchanged.
type idError struct{ err, kind error }

func (e idError) Error() string   { return e.err.Error() }
func (e idError) Unwrap() []error { return []error{e.err, e.kind} }

// invalidIDf is an idError of kind with the formatted message.
func invalidIDf(kind error, format string, a ...any) error {
	return idError{fmt.Errorf("%w: "+format, append([]any{ErrInvalidRequest}, a...)...), kind}
}

// IDPhoto reduces an ID photo to what the ID encoder reads of it: the
// 224×224 center crop of its shortest-edge bicubic resize, as
// CLIPImageProcessor makes it. Generate makes the same images from it as
// from the photo, and it takes 200 KB however large the photo: a caller
// that holds many photos at once (a server's queue, a batch of requests)
// keeps this instead.
func IDPhoto(img image.Image) image.Image { return imageproc.CLIPInput(img) }

func loadIDStage(ctx context.Context, rt *nn.Runtime, adapter *weights.Model, policy nn.TypePolicy) (*idStage, error) {
	enc, err := LoadIDEncoder(ctx, rt, adapter.Tensors, "pm.", IDEncoderOptions{Policy: policy})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", adapter.Path, err)
	}
	return &idStage{enc: enc}, nil
}

// identities lists the request's people as the ID prompt wants them, with
// their photos and embeddings in the same order, and the prompt to
// tokenize. One person (IDImages, or People of length one) is the official
// single-identity path. With several people, who share the trigger word,
// each "CLASS TRIGGER" in the prompt gets a trigger token of its own so
// the tokenizer can tell the people apart.
func (s *idStage) identities(req *Request) (prompt string, people []Identity, images []image.Image, embeds [][]float32, err error) {
	switch {
	case len(req.People) > 0 && (len(req.IDImages) > 0 || len(req.IDEmbeds) > 0):
		return "", nil, nil, nil, fmt.Errorf("%w: give either ID photos of one person or People, not both", ErrInvalidRequest)
	case len(req.People) == 0:
		return req.Prompt, []Identity{{Trigger: req.TriggerWord, Images: len(req.IDImages)}}, req.IDImages, req.IDEmbeds, nil
	case len(req.People) == 1:
		p := req.People[0]
		return req.Prompt, []Identity{{Trigger: req.TriggerWord, Class: p.Class, Images: len(p.Images)}}, p.Images, p.IDEmbeds, nil
	}
	prompt = req.Prompt
	for j, p := range req.People {
		if p.Class == "" || strings.ContainsFunc(p.Class, func(r rune) bool { return r == ' ' || r == '\t' }) {
			return "", nil, nil, nil, fmt.Errorf("%w: person %d needs a one-word class word (e.g. man, woman)", ErrInvalidRequest, j+1)
		}
		re := regexp.MustCompile(`(?i)(^|[^\pL\pN])(` + regexp.QuoteMeta(p.Class) + `)(\s+)` + regexp.QuoteMeta(req.TriggerWord) + `($|[^\pL\pN])`)
		if n := len(re.FindAllStringIndex(prompt, -1)); n != 1 {
			return "", nil, nil, nil, invalidIDf(ErrIDPrompt, "the prompt must contain %q exactly once for the photos of the %s (found %d)",
				p.Class+" "+req.TriggerWord, p.Class, n)
		}
		token := fmt.Sprintf("<|pm-person-%d|>", j+1)
		prompt = re.ReplaceAllString(prompt, "${1}${2}${3}"+token+"${4}")
		people = append(people, Identity{Trigger: token, Class: p.Class, Images: len(p.Images)})
		images = append(images, p.Images...)
		embeds = append(embeds, p.IDEmbeds...)
	}
	return prompt, people, images, embeds, nil
}

func (s *idStage) conditioning(ctx context.Context, p *Pipeline, req *Request) (text, id conditioning, err error) {
	prompt, people, images, embeds, err := s.identities(req)
	if err != nil {
		return text, id, err
	}
	n := len(images)
	for _, who := range people {
		if who.Images == 0 {
			return text, id, invalidIDf(ErrIDInput, "PhotoMaker needs at least one ID photo of each person")
		}
	}
	if s.enc.Version == V2 && len(embeds) != n {
		if len(embeds) == 0 {
			return text, id, invalidIDf(ErrIDInput, "PhotoMaker v2 needs a face embedding per ID photo (--id-embeds FILE of raw 512-d ArcFace embeddings, or --id-embeds NAME=FILE per --id person); in-process face detection is not available yet")
		}
		return text, id, invalidIDf(ErrIDInput, "%d face embeddings for %d ID photos: give one per photo", len(embeds), n)
	}
	if s.enc.Version == V1 && len(embeds) > 0 {
		return text, id, invalidIDf(ErrIDInput, "PhotoMaker v1 takes no face embeddings (they are for v2 adapters)")
	}
	for i, e := range embeds { // before the encoders run (the ID encoder checks again)
		if fw := s.enc.FaceEmbeddingWidth(); s.enc.Version == V2 && len(e) != fw {
			return text, id, invalidIDf(ErrIDInput, "face embedding %d has %d values, want %d (raw ArcFace embeddings)", i+1, len(e), fw)
		}
	}
	ip, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, s.enc.Version, people)
	if err != nil {
		return text, id, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	pixels := make([]float32, 0, n*3*224*224)
	for _, img := range images {
		pixels = append(pixels, imageproc.CLIPPixels(img)...)
	}
	withClass, err := p.encodeIDs(ctx, ip.IDs1, ip.IDs2, false)
	if err != nil {
		return text, id, err
	}
	fused, err := s.enc.EncodeRows(ctx, p.encRT, pixels, embeds, withClass.embeds, ip.FusionRows())
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
