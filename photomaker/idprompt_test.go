package photomaker

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/tokenizer"
	"github.com/stretchr/testify/require"
)

func toInts(v []int64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// Cases id_encoder_v1.n1/n2/n4 and id_encoder_v2.n1/n2/n4: the clean token
// ids fed to each encoder and the class-token mask.
func TestIDPromptGolden(t *testing.T) {
	for _, version := range []Version{V1, V2} {
		for _, n := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("v%d/n%d", version, n), func(t *testing.T) {
				c := golden.FindCase(t, fmt.Sprintf("id_encoder_v%d.n%d", version, n))
				ref := func(k string) string { return golden.String(t, c.Outputs[k]) }
				prompt := golden.String(t, c.Inputs["prompt"])
				p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, version, []Identity{{Images: n}})
				require.NoError(t, err)
				require.Equal(t, toInts(golden.Int64(t, ref("clean_input_ids_tokenizer"))), p.IDs1)
				require.Equal(t, toInts(golden.Int64(t, ref("clean_input_ids_tokenizer_2"))), p.IDs2)
				mask := maskBools(golden.Int64(t, ref("class_tokens_mask")))
				require.Equal(t, mask, p.ClassTokensMask)
				require.Equal(t, MaskRows(mask), p.FusionRows())
				require.Equal(t, []string{"man"}, p.ClassWords)
				require.Equal(t, "a photo of a man , wearing a hat", p.TextOnly)
				require.False(t, p.Truncated)
			})
		}
	}
}

// Case id_encoder_v1.text_only: the prompt with its trigger removed,
// decoded back to text (the case's top-level prompt_text_only field).
func TestIDPromptTextOnlyGolden(t *testing.T) {
	raw, err := os.ReadFile(golden.Path("golden/cases.json"))
	require.NoError(t, err)
	raw = regexp.MustCompile(`-?\bInfinity\b|\bNaN\b`).ReplaceAll(raw, []byte("null"))
	var m struct {
		Cases []struct {
			Name           string         `json:"name"`
			Inputs         map[string]any `json:"inputs"`
			PromptTextOnly string         `json:"prompt_text_only"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &m))
	found := false
	for _, c := range m.Cases {
		if c.Name != "id_encoder_v1.text_only" {
			continue
		}
		found = true
		require.Equal(t, "a photo of a man , wearing a hat", c.PromptTextOnly)
		for _, v := range []Version{V1, V2} {
			p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), c.Inputs["prompt"].(string), v, []Identity{{Images: 2}})
			require.NoError(t, err)
			require.Equal(t, c.PromptTextOnly, p.TextOnly)
		}
	}
	require.True(t, found)
}

func TestIDPromptErrors(t *testing.T) {
	long := strings.Repeat("very ", 80)
	for _, tc := range []struct {
		name, prompt string
		v            Version
		people       []Identity
		want         string
	}{
		{"missing", "a photo of a man, wearing a hat", V1, []Identity{{Images: 1}},
			"the prompt must contain the trigger word img right after a class word, e.g. 'a photo of a man img'"},
		{"missing custom", "a photo of a man img", V2, []Identity{{Trigger: "sks", Images: 1}},
			"the prompt must contain the trigger word sks right after a class word"},
		{"first", "img, a photo", V1, []Identity{{Images: 1}}, "is first in the prompt"},
		{"twice", "a man img and a man img", V2, []Identity{{Images: 1}}, "appears 2 times"},
		{"after trigger", "a man img img2", V1, []Identity{{Images: 1}, {Trigger: "img2", Images: 1}}, "follows the trigger word img"},
		{"class mismatch", "a photo of a woman img", V1, []Identity{{Class: "man", Images: 1}}, `must follow the class word "man", found "woman"`},
		{"no photos", "a man img", V1, []Identity{{Images: 0}}, "at least 1"},
		{"no identity", "a man img", V1, nil, "no identity"},
		{"same trigger", "a man img", V1, []Identity{{Images: 1}, {Trigger: "img", Images: 1}}, "two identities"},
		{"spaces", "a man my img", V1, []Identity{{Trigger: "my img", Images: 1}}, "without spaces"},
		{"version", "a man img", Version(3), []Identity{{Images: 1}}, "unknown PhotoMaker version"},
		{"too many photos v1", "a photo of a man img", V1, []Identity{{Images: 73}}, "do not fit in the 77-token prompt"},
		{"too many photos v2", "a photo of a man img", V2, []Identity{{Images: 37}}, "do not fit in the 77-token prompt"},
		{"v2 trigger truncated", long + "a man img", V2, []Identity{{Images: 1}}, "past the 77-token limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), tc.prompt, tc.v, tc.people)
			require.ErrorIs(t, err, ErrIDPrompt)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestIDPromptLimits(t *testing.T) {
	// "a photo of a man img": BOS + 5 tokens + EOS; class word at 5.
	// v1: 71 copies end at 75, EOS at 76 — fits exactly.
	p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), "a photo of a man img", V1, []Identity{{Images: 71}})
	require.NoError(t, err)
	require.False(t, p.Truncated)
	require.Equal(t, tokenizer.EOS, p.IDs2[76])
	// 72 copies fill the prompt; EOS is cut, as in the official code.
	p, err = TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), "a photo of a man img", V1, []Identity{{Images: 72}})
	require.NoError(t, err)
	require.True(t, p.Truncated)
	require.Equal(t, 786, p.IDs2[76])
	// v2: 2 tokens per photo, 35 photos = 70 copies (36 would fill the
	// prompt, cutting EOS; 37 do not fit).
	p, err = TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), "a photo of a man img", V2, []Identity{{Images: 35}})
	require.NoError(t, err)
	require.False(t, p.Truncated)
	require.Len(t, p.FusionRows(), 70)

	// v1 keeps text after the trigger that a 77-token tokenisation would
	// cut until the expansion; v2 truncates first. Long text after the
	// trigger is cut in both, with Truncated set.
	long := "a photo of a man img, " + strings.Repeat("very ", 80) + "sharp"
	for _, v := range []Version{V1, V2} {
		p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), long, v, []Identity{{Images: 2}})
		require.NoError(t, err)
		require.True(t, p.Truncated)
		require.Len(t, p.IDs1, 77)
		require.Len(t, p.IDs2, 77)
		require.NotEqual(t, tokenizer.EOS, p.IDs1[76]) // text ran past the end
	}
}

// v2 tokenises (and truncates) to 77 before removing the trigger, so its
// padding differs from v1's for a prompt that only fits after removal.
func TestIDPromptV1V2Truncation(t *testing.T) {
	tok := tokenizer.New2()
	// 75 text tokens + the trigger: the tokenisation to 77 cuts the last
	// word in v2 (not in v1, which tokenises everything).
	words := strings.TrimSpace(strings.Repeat("cat ", 70))
	prompt := "a man img " + words
	n := len(tok.Encode(prompt))
	require.Equal(t, 73, n)
	p1, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt+" dog dog dog", V1, []Identity{{Images: 1}})
	require.NoError(t, err)
	p2, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt+" dog dog dog", V2, []Identity{{Images: 1}})
	require.NoError(t, err)
	dog := tok.Encode("dog")[0]
	// v1: BOS a man(1) + 70 cats + 3 dogs = 76 tokens + EOS = 77: all fit.
	require.Equal(t, []int{dog, dog, dog, tokenizer.EOS}, p1.IDs2[73:])
	require.False(t, p1.Truncated)
	// v2: the 77-token tokenisation keeps 75 of the 76 tokens (the trigger
	// counting), so one dog is lost even though the trigger's removal
	// would have made room: BOS a man man cat×70 dog dog EOS.
	cat := tok.Encode("cat")[0]
	require.Equal(t, []int{cat, dog, dog, tokenizer.EOS}, p2.IDs2[73:])
	require.True(t, p2.Truncated)
}

func TestIDPromptTwoIdentities(t *testing.T) {
	tok1, tok2 := tokenizer.New(), tokenizer.New2()
	prompt := "a photo of a man img and a woman img2 at the beach"
	people := []Identity{{Trigger: "img2", Class: "woman", Images: 3}, {Trigger: "img", Class: "man", Images: 2}}
	for _, v := range []Version{V1, V2} {
		t.Run(v.String(), func(t *testing.T) {
			p, err := TokenizeIDPrompt(tok1, tok2, prompt, v, people)
			require.NoError(t, err)
			tpi := v.TokensPerImage()
			man, woman := tok2.Encode("man")[0], tok2.Encode("woman")[0]
			want := []int{tokenizer.BOS}
			want = append(want, tok2.Encode("a photo of a")...)
			manAt := len(want)
			for range 2 * tpi {
				want = append(want, man)
			}
			want = append(want, tok2.Encode("and a")...)
			womanAt := len(want)
			for range 3 * tpi {
				want = append(want, woman)
			}
			want = append(want, tok2.Encode("at the beach")...)
			want = append(want, tokenizer.EOS)
			want2 := append(append([]int(nil), want...), make([]int, 77-len(want))...)
			require.Equal(t, want2, p.IDs2)
			require.Equal(t, want, p.IDs1[:len(want)])
			require.Equal(t, tokenizer.EOS, p.IDs1[76])

			// Rows per identity in the order given: the woman first.
			require.Equal(t, []string{"woman", "man"}, p.ClassWords)
			require.Len(t, p.Rows, 2)
			require.Equal(t, seq(womanAt, 3*tpi), p.Rows[0])
			require.Equal(t, seq(manAt, 2*tpi), p.Rows[1])
			require.Equal(t, append(seq(womanAt, 3*tpi), seq(manAt, 2*tpi)...), p.FusionRows())
			mask := make([]bool, 77)
			for _, r := range p.FusionRows() {
				mask[r] = true
			}
			require.Equal(t, mask, p.ClassTokensMask)
			require.Equal(t, "a photo of a man and a woman at the beach", p.TextOnly)
		})
	}
}

func TestIDPromptSingleIdentityTrailingPunctuation(t *testing.T) {
	// The trigger glued to the class word and punctuation still splits as
	// one special token; tokenizer 2 cuts "!" out on its own.
	p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), "A photo of a Man img! Smiling", V2, []Identity{{Images: 1}})
	require.NoError(t, err)
	require.Equal(t, []string{"man"}, p.ClassWords)
	require.Equal(t, []int{5, 6}, p.FusionRows())
	require.Equal(t, "a photo of a man ! smiling", p.TextOnly)
}

func seq(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}
