package photomaker

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/tokenizer"
)

func TestWeightedIDs(t *testing.T) {
	ids1, ids2, w := weightedIDs("a (red:1.5) car, [old]")
	require.Equal(t, tokenizer.New().EncodePadded("a red car, old", 77, tokenizer.PadTokenizer1), ids1)
	require.Equal(t, tokenizer.New2().EncodePadded("a red car, old", 77, tokenizer.PadTokenizer2), ids2)
	// BOS, a, red, car, ",", old, EOS
	require.Equal(t, []float32{1, 1, 1.5, 1, 1, float32(1 / 1.1), 1, 1}, w[:8])
}

func TestWeightedEncoding(t *testing.T) {
	p := loadTiny(t, "")
	ctx := context.Background()
	literal, err := p.encodeText(ctx, "a red car", false)
	require.NoError(t, err)
	// No emphasis: identical to the literal prompt.
	same, err := p.encodeWeighted(ctx, "a red car")
	require.NoError(t, err)
	require.Equal(t, literal, same)
	// (red:1.5): red's row is 1.5·k times the literal one, every other row
	// k times, with k keeping the mean.
	got, err := p.encodeWeighted(ctx, "a (red:1.5) car")
	require.NoError(t, err)
	width := len(literal.embeds) / 77
	var sum, scaled float64
	for i, v := range literal.embeds {
		sum += float64(v)
		if i/width == 2 {
			scaled += 1.5 * float64(v)
		} else {
			scaled += float64(v)
		}
	}
	k := sum / scaled
	for i, v := range literal.embeds {
		want := k * float64(v)
		if i/width == 2 {
			want *= 1.5
		}
		require.InDelta(t, want, float64(got.embeds[i]), 1e-5)
	}
	require.Equal(t, literal.pooled, got.pooled, "emphasis leaves the pooled embedding alone")
	_, err = p.Generate(ctx, Request{Prompt: "x", Width: 64, Height: 64, Steps: 1, PromptWeighting: "compel"})
	require.ErrorIs(t, err, ErrInvalidRequest)
}
