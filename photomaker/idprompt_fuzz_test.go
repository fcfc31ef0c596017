package photomaker

import (
	"errors"
	"testing"

	"github.com/gophotomaker/photomaker/tokenizer"
)

// FuzzTriggerPrompt runs TokenizeIDPrompt on arbitrary prompts, trigger
// words, class words and photo counts, with one or two identities, for v1
// and v2: it never panics, every error wraps ErrIDPrompt, and a success
// gives 77 ids per encoder with the class-word rows inside them.
func FuzzTriggerPrompt(f *testing.F) {
	f.Add("a photo of a man img, wearing a hat", "", "", 1, false, "", 0)
	f.Add("a photo of a man img, wearing a hat", "img", "man", 4, true, "", 0)
	f.Add("a woman img and a man tok sitting on a bench", "img", "woman", 2, true, "tok", 3)
	f.Add("img a photo", "img", "", 1, false, "", 0)
	f.Add("a man img img", "img", "", 1, true, "", 0)
	f.Add("a man imgtok", "img", "", 1, false, "tok", 1)
	f.Add("a photo of a man img", "im g", "", 1, false, "", 0)
	f.Add("a photo of a man img", "img", "", 0, false, "", 0)
	f.Add("a photo of a man img", "img", "", 80, true, "", 0)
	f.Add("a photo of a man img", "img", "", 1<<62, true, "", 0)
	f.Add("a photo of a man img", "img", "", -1<<63, false, "", 0)
	f.Add("a photo of a man img", "img", "dog", 1, false, "", 0)
	f.Add("a man img "+longTail(200), "img", "", 2, true, "", 0)
	f.Add(longTail(100)+" a man img", "img", "", 1, true, "", 0)
	f.Add(longTail(100)+" a man img", "img", "", 1, false, "", 0)
	f.Add("a man <|startoftext|> x", "<|startoftext|>", "", 1, false, "", 0)
	f.Add("a man ! x", "!", "", 1, true, "", 0)
	f.Add("a man img x", "img", "", 1, true, "img", 1)
	f.Add("\x00\xff\xfe a man img", "img", "", 1, false, "", 0)
	f.Fuzz(func(t *testing.T, prompt, trigger, class string, images int, v2 bool, trigger2 string, images2 int) {

		v := V1
		if v2 {
			v = V2
		}
		people := []Identity{{Trigger: trigger, Class: class, Images: images}}
		if images2 != 0 || trigger2 != "" {
			people = append(people, Identity{Trigger: trigger2, Images: images2})
		}
		p, err := TokenizeIDPrompt(tokenizer.New(), tokenizer.New2(), prompt, v, people)
		if err != nil {
			if !errors.Is(err, ErrIDPrompt) {
				t.Fatalf("error does not wrap ErrIDPrompt: %v", err)
			}
			return
		}
		if len(p.IDs1) != tokenizer.MaxLen || len(p.IDs2) != tokenizer.MaxLen || len(p.ClassTokensMask) != tokenizer.MaxLen {
			t.Fatalf("got %d/%d ids and %d mask entries, want %d", len(p.IDs1), len(p.IDs2), len(p.ClassTokensMask), tokenizer.MaxLen)
		}
		if len(p.Rows) != len(people) || len(p.ClassWords) != len(people) {
			t.Fatalf("%d identities, %d row sets, %d class words", len(people), len(p.Rows), len(p.ClassWords))
		}
		marked := 0
		for _, m := range p.ClassTokensMask {
			if m {
				marked++
			}
		}
		rows := p.FusionRows()
		for j, r := range p.Rows {
			if len(r) != people[j].Images*v.TokensPerImage() {
				t.Fatalf("identity %d: %d rows for %d photos", j, len(r), people[j].Images)
			}
		}
		for _, r := range rows {
			if r < 0 || r >= tokenizer.MaxLen || !p.ClassTokensMask[r] {
				t.Fatalf("row %d outside the prompt or not marked", r)
			}
		}
		if marked != len(rows) {
			t.Fatalf("%d rows marked, %d rows listed", marked, len(rows))
		}
	})
}

func longTail(words int) string {
	b := make([]byte, 0, words*6)
	for i := 0; i < words; i++ {
		b = append(b, " word"...)
	}
	return string(b)
}
