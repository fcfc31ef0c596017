package photomaker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/gophotomaker/photomaker/tokenizer"
)

// ErrIDPrompt is wrapped by every error about the trigger words of an ID
// prompt.
var ErrIDPrompt = errors.New("bad ID prompt")

// Identity is one person of an ID prompt: the prompt holds its trigger word
// once, right after the class word ("man", "woman", ...), whose token is
// repeated once per ID token of the person's photos.
type Identity struct {
	// Trigger is the trigger word ("": DefaultTrigger, "img"). It is registered as
	// a special token of both tokenizers, as the official pipeline does at
	// load: it is then always one token, matched case-sensitively anywhere
	// in a prompt, even inside a word.
	Trigger string
	// Class, if set, is the class word the trigger must follow; otherwise
	// whatever token precedes the trigger is the class word.
	Class string
	// Images is the number of photos of this person (at least 1).
	Images int
}

// IDPrompt is an ID prompt ready for the text encoders and the ID encoder.
type IDPrompt struct {
	// IDs1 and IDs2 are the 77 token ids for SDXL's first and second text
	// encoders: the trigger words removed, each class word repeated
	// Images·TokensPerImage times.
	IDs1, IDs2 []int
	// ClassTokensMask marks the class-word copies (from the second
	// tokenizer, as the official pipeline does).
	ClassTokensMask []bool
	// Rows lists, per identity in the order given, the prompt rows of its
	// class-word copies: photo i's ID token t goes to Rows[j][i·T+t].
	Rows [][]int
	// ClassWords is the class word found for each identity.
	ClassWords []string
	// TextOnly is the prompt without its trigger words, decoded back to text
	// ("a photo of a man , wearing a hat"), for the text-only branch.
	TextOnly string
	// Truncated reports that the prompt, once expanded, did not fit in 77
	// tokens and its end was cut (a warning in the official pipeline).
	Truncated bool
}

// FusionRows returns the rows of every identity's class-word copies, in
// the order of the identities: the rows for IDEncoder.EncodeRows when the
// photos are given identity by identity. With one identity it equals the
// marked rows of ClassTokensMask, in order.
func (p *IDPrompt) FusionRows() []int {
	var out []int
	for _, r := range p.Rows {
		out = append(out, r...)
	}
	return out
}

// TokenizeIDPrompt prepares an ID prompt for PhotoMaker version v with the
// given identities (a single Identity{Images: n} is the official
// behaviour). tok1 and tok2 are SDXL's two tokenizers (tokenizer.New and
// tokenizer.New2); the trigger words are registered in both.
//
// v1 (the v1 release code) tokenises without truncation, expands each class
// word once per photo, then truncates or pads to 77. v2 (the current
// official code) tokenises with truncation and padding to 77 first, then
// expands each class word twice per photo and cuts back to 77.
//
// Errors (wrapping ErrIDPrompt): a trigger word missing, used more than
// once, first in the prompt or right after another trigger word, a class
// word other than Identity.Class, a trigger cut off by v2's truncation, and
// class-word copies that do not fit in 77 tokens.
func TokenizeIDPrompt(tok1, tok2 *tokenizer.Tokenizer, prompt string, v Version, people []Identity) (*IDPrompt, error) {
	if v != V1 && v != V2 {
		return nil, fmt.Errorf("%w: unknown PhotoMaker version %d", ErrIDPrompt, int(v))
	}
	if len(people) == 0 {
		return nil, fmt.Errorf("%w: no identity given", ErrIDPrompt)
	}
	people = slices.Clone(people)
	for i := range people {
		p := &people[i]
		if p.Trigger == "" {
			p.Trigger = DefaultTrigger
		}
		if strings.ContainsFunc(p.Trigger, unicode.IsSpace) {
			return nil, fmt.Errorf("%w: trigger word %q must be one word without spaces", ErrIDPrompt, p.Trigger)
		}
		if p.Images < 1 || p.Images > tokenizer.MaxLen {
			return nil, fmt.Errorf("%w: identity %q has %d photos, want at least 1 (and at most %d)", ErrIDPrompt, p.Trigger, p.Images, tokenizer.MaxLen)
		}
		switch p.Trigger {
		case "!", "<|startoftext|>", "<|endoftext|>": // already special tokens (tokenizer 2 pads with "!")
			return nil, fmt.Errorf("%w: %q cannot be a trigger word: the tokenizers already use it; pick a word such as img", ErrIDPrompt, p.Trigger)
		}
		for _, q := range people[:i] {
			if q.Trigger == p.Trigger {
				return nil, fmt.Errorf("%w: two identities use the trigger word %q", ErrIDPrompt, p.Trigger)
			}
		}
	}
	r1, err := expandIDPrompt(tok1, prompt, v, people)
	if err != nil {
		return nil, err
	}
	r2, err := expandIDPrompt(tok2, prompt, v, people)
	if err != nil {
		return nil, err
	}
	out := &IDPrompt{
		IDs1: r1.ids, IDs2: r2.ids,
		ClassTokensMask: make([]bool, tokenizer.MaxLen),
		Rows:            r2.rows,
		Truncated:       r1.truncated || r2.truncated,
	}
	for j, rows := range r2.rows {
		for _, r := range rows {
			out.ClassTokensMask[r] = true
		}
		out.ClassWords = append(out.ClassWords, tok2.Decode([]int{r2.class[j]}))
	}
	// Text-only branch: the first tokenizer's ids without specials, the
	// trigger tokens removed, decoded back to text.
	text := tok1.Encode(prompt)
	for _, tid := range r1.triggers {
		if i := slices.Index(text, tid); i >= 0 {
			text = slices.Delete(text, i, i+1)
		}
	}
	out.TextOnly = tok1.Decode(text)
	return out, nil
}

// expanded is one tokenizer's view of an ID prompt.
type expanded struct {
	ids       []int   // 77
	rows      [][]int // per identity
	class     []int   // class token id per identity
	triggers  []int   // trigger token id per identity
	truncated bool
}

// missingTrigger is the message for a prompt without its trigger word.
func missingTrigger(trigger string) string {
	return fmt.Sprintf("the prompt must contain the trigger word %s right after a class word, e.g. 'a photo of a man %s'", trigger, trigger)
}

func expandIDPrompt(tok *tokenizer.Tokenizer, prompt string, v Version, people []Identity) (*expanded, error) {
	e := &expanded{rows: make([][]int, len(people)), class: make([]int, len(people))}
	isTrigger := map[int]int{} // token id → identity
	for j, p := range people {
		id := tok.AddSpecialToken(p.Trigger)
		e.triggers = append(e.triggers, id)
		isTrigger[id] = j
	}

	// Check the trigger words on the whole prompt, before any truncation.
	raw := tok.Encode(prompt)
	for j, p := range people {
		var at []int
		for i, id := range raw {
			if id == e.triggers[j] {
				at = append(at, i)
			}
		}
		switch {
		case len(at) == 0:
			return nil, fmt.Errorf("%w: %s", ErrIDPrompt, missingTrigger(p.Trigger))
		case len(at) > 1:
			return nil, fmt.Errorf("%w: the trigger word %s appears %d times; use it once per person, right after the class word (all photos of a person go to that one word)",
				ErrIDPrompt, p.Trigger, len(at))
		case at[0] == 0:
			return nil, fmt.Errorf("%w: the trigger word %s is first in the prompt; it must come right after a class word, e.g. 'a photo of a man %s'",
				ErrIDPrompt, p.Trigger, p.Trigger)
		}
		if k, ok := isTrigger[raw[at[0]-1]]; ok {
			return nil, fmt.Errorf("%w: the trigger word %s follows the trigger word %s; each must come right after its own class word",
				ErrIDPrompt, p.Trigger, people[k].Trigger)
		}
		if p.Class != "" {
			want := tok.Encode(p.Class)
			if len(want) == 0 || at[0] < len(want) || !slices.Equal(raw[at[0]-len(want):at[0]], want) {
				return nil, fmt.Errorf("%w: the trigger word %s must follow the class word %q, found %q",
					ErrIDPrompt, p.Trigger, p.Class, tok.Decode(raw[max(0, at[0]-max(len(want), 1)):at[0]]))
			}
		}
	}

	// The sequence the expansion starts from.
	var seq []int
	padded := 0 // trailing padding in seq
	if v == V1 {
		seq = append(append(append(make([]int, 0, len(raw)+2), tokenizer.BOS), raw...), tokenizer.EOS)
	} else {
		seq = tokenizer.Frame(raw, tokenizer.MaxLen, tok.Pad())
		padded = max(0, tokenizer.MaxLen-len(raw)-2)
		e.truncated = len(raw)+2 > tokenizer.MaxLen
	}

	// Drop the triggers, noting the index of the token before each.
	clean := make([]int, 0, len(seq))
	classAt := map[int]int{} // index in clean → identity
	found := make([]bool, len(people))
	for _, id := range seq {
		if j, ok := isTrigger[id]; ok {
			classAt[len(clean)-1] = j
			found[j] = true
			continue
		}
		clean = append(clean, id)
	}
	for j, p := range people {
		if !found[j] {
			return nil, fmt.Errorf("%w: the trigger word %s is past the %d-token limit of the text encoders; move it nearer the start",
				ErrIDPrompt, p.Trigger, tokenizer.MaxLen)
		}
	}

	// Repeat each class token once per ID token.
	out := make([]int, 0, len(clean)+8)
	for i, id := range clean {
		j, ok := classAt[i]
		if !ok {
			out = append(out, id)
			continue
		}
		e.class[j] = id
		for k := 0; k < people[j].Images*v.TokensPerImage(); k++ {
			e.rows[j] = append(e.rows[j], len(out))
			out = append(out, id)
		}
	}
	if len(out)-padded > tokenizer.MaxLen {
		e.truncated = true
	}
	for j, p := range people {
		if last := e.rows[j][len(e.rows[j])-1]; last >= tokenizer.MaxLen {
			return nil, fmt.Errorf("%w: %d photos for %s need %d copies of the class word, which do not fit in the %d-token prompt (they would end at token %d); use fewer photos or a shorter prompt before the trigger word",
				ErrIDPrompt, p.Images, p.Trigger, len(e.rows[j]), tokenizer.MaxLen, last+1)
		}
	}
	if len(out) > tokenizer.MaxLen {
		out = out[:tokenizer.MaxLen]
	}
	for len(out) < tokenizer.MaxLen {
		out = append(out, tok.Pad())
	}
	e.ids = out
	return e, nil
}
