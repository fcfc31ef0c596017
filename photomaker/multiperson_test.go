package photomaker

import (
	"context"
	"image"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/tokenizer"
)

func face(t *testing.T, name string) image.Image {
	img, err := imageproc.DecodeFile(golden.Path("faces/"+name), imageproc.Limits{})
	require.NoError(t, err)
	return img
}

// One person given as People behaves exactly as the official single-identity
// path; two people each get their own photos fused into their own class
// word's rows.
func TestMultiPersonConditioning(t *testing.T) {
	p := loadTiny(t, "photomaker/photomaker-v1-tiny.safetensors")
	ctx := context.Background()
	a0, a1, l0 := face(t, "astronaut_0.png"), face(t, "astronaut_1.png"), face(t, "lfw_0.png")

	single := Request{Prompt: "a photo of a man img, portrait", IDImages: []image.Image{a0, a1}, TriggerWord: "img"}
	asPeople := Request{Prompt: single.Prompt, People: []Person{{Class: "man", Images: []image.Image{a0, a1}}}, TriggerWord: "img"}
	t1, id1, err := p.id.conditioning(ctx, p, &single)
	require.NoError(t, err)
	t2, id2, err := p.id.conditioning(ctx, p, &asPeople)
	require.NoError(t, err)
	require.Equal(t, t1, t2)
	require.Equal(t, id1, id2)

	two := Request{Prompt: "a man img and a woman img at the beach", TriggerWord: "img",
		People: []Person{{Class: "man", Images: []image.Image{a0}}, {Class: "woman", Images: []image.Image{l0}}}}
	text, id, err := p.id.conditioning(ctx, p, &two)
	require.NoError(t, err)

	// Independent expectation: the prompt with distinct trigger words, each
	// person's rows fused alone with that person's photo.
	prompt := "a man <|pm-person-1|> and a woman <|pm-person-2|> at the beach"
	people := []Identity{{Trigger: "<|pm-person-1|>", Images: 1}, {Trigger: "<|pm-person-2|>", Images: 1}}
	ip, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, V1, people)
	require.NoError(t, err)
	require.Equal(t, []string{"man", "woman"}, ip.ClassWords)
	plain, err := p.encodeIDs(ctx, ip.IDs1, ip.IDs2, false)
	require.NoError(t, err)
	width := len(plain.embeds) / tokenizer.MaxLen
	fusedWith := func(img image.Image, rows []int) []float32 {
		out, err := p.id.enc.EncodeRows(ctx, p.encRT, imageproc.CLIPPixels(img), nil, plain.embeds, rows)
		require.NoError(t, err)
		return out
	}
	manOnly, womanOnly, womanWithMan := fusedWith(a0, ip.Rows[0]), fusedWith(l0, ip.Rows[1]), fusedWith(a0, ip.Rows[1])
	row := func(v []float32, r int) []float32 { return v[r*width : (r+1)*width] }
	for _, r := range ip.Rows[0] {
		golden.AssertClose(t, "man's row", row(id.embeds, r), row(manOnly, r), 1e-6, 0)
	}
	for _, r := range ip.Rows[1] {
		golden.AssertClose(t, "woman's row", row(id.embeds, r), row(womanOnly, r), 1e-6, 0)
		require.NotEqual(t, row(womanWithMan, r), row(id.embeds, r), "the woman's row must not carry the man's photo")
	}
	// Rows of neither person are the plain prompt's.
	for r := 0; r < tokenizer.MaxLen; r++ {
		if r != ip.Rows[0][0] && r != ip.Rows[1][0] {
			require.Equal(t, row(plain.embeds, r), row(id.embeds, r), "row %d", r)
		}
	}
	require.Equal(t, plain.pooled, id.pooled)
	textOnly, err := p.encodeText(ctx, "a man and a woman at the beach", false)
	require.NoError(t, err)
	require.Equal(t, textOnly, text)

	// Errors: a class word missing from the prompt, People with IDImages.
	_, _, err = p.id.conditioning(ctx, p, &Request{Prompt: "a man img", TriggerWord: "img",
		People: []Person{{Class: "man", Images: []image.Image{a0}}, {Class: "woman", Images: []image.Image{l0}}}})
	require.ErrorIs(t, err, ErrInvalidRequest)
	require.ErrorContains(t, err, `"woman img"`)
	_, _, err = p.id.conditioning(ctx, p, &Request{Prompt: "a man img", TriggerWord: "img", IDImages: []image.Image{a0},
		People: []Person{{Class: "man", Images: []image.Image{a0}}}})
	require.ErrorIs(t, err, ErrInvalidRequest)
}
