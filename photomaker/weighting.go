package photomaker

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/tokenizer"
)

// Prompt weighting modes for Request.PromptWeighting.
const (
	WeightingNone  = ""      // literal text, as diffusers and the official pipeline
	WeightingA1111 = "a1111" // (word:1.2), (word), [word] emphasis
)

// weightedIDs tokenizes an A1111-style prompt: each chunk's tokens carry its
// weight. It returns both tokenizers' 77 ids and the per-position weights
// (1 for BOS, EOS and padding). BREAK is treated as plain separation: like
// diffusers, we encode one 77-token window.
func weightedIDs(prompt string) (ids1, ids2 []int, w []float32) {
	t1, t2 := tokenizer.New(), tokenizer.New2()
	var raw1, raw2 []int
	var w1 []float32
	for _, c := range tokenizer.ParseWeights(prompt) {
		if c.Break {
			continue
		}
		a, b := t1.Encode(c.Text), t2.Encode(c.Text)
		raw1, raw2 = append(raw1, a...), append(raw2, b...)
		for range a {
			w1 = append(w1, float32(c.Weight))
		}
	}
	ids1 = tokenizer.Frame(raw1, tokenizer.MaxLen, tokenizer.PadTokenizer1)
	ids2 = tokenizer.Frame(raw2, tokenizer.MaxLen, tokenizer.PadTokenizer2)
	w = make([]float32, tokenizer.MaxLen)
	for i := range w {
		w[i] = 1
		if i >= 1 && i-1 < len(w1) && i < tokenizer.MaxLen-1 {
			w[i] = w1[i-1]
		}
	}
	return ids1, ids2, w
}

// applyWeights scales each token's embedding by its weight and then the
// whole tensor so its mean is unchanged (AUTOMATIC1111's emphasis).
func applyWeights(embeds []float32, w []float32) {
	width := len(embeds) / len(w)
	var before, after float64
	for _, v := range embeds {
		before += float64(v)
	}
	for i, wi := range w {
		for j := i * width; j < (i+1)*width; j++ {
			embeds[j] *= wi
		}
	}
	for _, v := range embeds {
		after += float64(v)
	}
	if after == 0 {
		return
	}
	k := float32(before / after)
	for i := range embeds {
		embeds[i] *= k
	}
}

// encodeWeighted encodes a prompt with A1111 emphasis. The two tokenizers
// split some text differently (tokenizer 2 cuts every "!"), so weights
// follow tokenizer 1's positions; prompts where the token counts differ are
// refused rather than mis-weighted.
func (p *Pipeline) encodeWeighted(ctx context.Context, prompt string) (conditioning, error) {
	ids1, ids2, w := weightedIDs(prompt)
	if countReal(ids1, tokenizer.PadTokenizer1) != countReal(ids2, tokenizer.PadTokenizer2) {
		return conditioning{}, fmt.Errorf("%w: prompt weighting cannot place weights on this prompt (its two tokenizations differ, e.g. because of '!'); remove the '!' or use literal prompts", ErrInvalidRequest)
	}
	c, err := p.encodeIDs(ctx, ids1, ids2, false)
	if err != nil {
		return c, err
	}
	applyWeights(c.embeds, w)
	return c, nil
}

// countReal counts ids up to and including the first EOS.
func countReal(ids []int, pad int) int {
	for i, id := range ids {
		if id == tokenizer.EOS {
			return i + 1
		}
	}
	return len(ids)
}
