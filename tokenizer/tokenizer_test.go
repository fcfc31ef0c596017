package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
	"unsafe"
	"weak"

	"golang.org/x/text/unicode/norm"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/pyjson"
)

const (
	triggerWord = "img"
	triggerID   = 49408
	imgWordID   = 24157 // "img</w>" of the base vocabulary
)

type tokenizerCase struct {
	prompts     []string
	ids1, ids2  [][]int // [30][77]
	untruncated [][]int
	tokens      [][]string
}

func loadTokenizerCase(t *testing.T) tokenizerCase {
	t.Helper()
	c := findCase(t, "tokenizer")
	var tc tokenizerCase
	if err := json.Unmarshal(c.Inputs["prompts"], &tc.prompts); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(c.Extra["untruncated_ids_tokenizer"], &tc.untruncated); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(c.Extra["untruncated_tokens"], &tc.tokens); err != nil {
		t.Fatal(err)
	}
	var pad1, pad2 int
	if err := json.Unmarshal(c.Extra["pad_id_tokenizer"], &pad1); err != nil || pad1 != PadTokenizer1 {
		t.Fatalf("pad_id_tokenizer %d (%v), want %d", pad1, err, PadTokenizer1)
	}
	if err := json.Unmarshal(c.Extra["pad_id_tokenizer_2"], &pad2); err != nil || pad2 != PadTokenizer2 {
		t.Fatalf("pad_id_tokenizer_2 %d (%v), want %d", pad2, err, PadTokenizer2)
	}
	rows := func(ref json.RawMessage) [][]int {
		flat := golden.Int64(t, golden.String(t, ref))
		if len(flat) != len(tc.prompts)*MaxLen {
			t.Fatalf("%s: %d values, want %d", ref, len(flat), len(tc.prompts)*MaxLen)
		}
		out := make([][]int, len(tc.prompts))
		for i := range out {
			for _, v := range flat[i*MaxLen : (i+1)*MaxLen] {
				out[i] = append(out[i], int(v))
			}
		}
		return out
	}
	tc.ids1 = rows(c.Outputs["input_ids_tokenizer"])
	tc.ids2 = rows(c.Outputs["input_ids_tokenizer_2"])
	if len(tc.prompts) != 30 || len(tc.untruncated) != 30 || len(tc.tokens) != 30 {
		t.Fatalf("case sizes %d %d %d, want 30", len(tc.prompts), len(tc.untruncated), len(tc.tokens))
	}
	return tc
}

func TestVocabulary(t *testing.T) {
	tok := New()
	for _, c := range []struct {
		tok string
		id  int
	}{
		{"!", 0}, {"a", 64}, {"!</w>", 256}, {"a</w>", 320}, {"in", 512}, {"th", 513},
		{"<|startoftext|>", BOS}, {"<|endoftext|>", EOS}, {"img</w>", imgWordID}, {"cat</w>", 2368},
	} {
		if id, ok := tok.TokenID(c.tok); !ok || id != c.id {
			t.Errorf("TokenID(%q) = %d, %v; want %d", c.tok, id, ok, c.id)
		}
		if got := tok.Token(c.id); got != c.tok {
			t.Errorf("Token(%d) = %q, want %q", c.id, got, c.tok)
		}
	}
	if tok.Len() != VocabSize {
		t.Errorf("Len = %d, want %d", tok.Len(), VocabSize)
	}
	if _, ok := tok.TokenID(triggerWord); ok {
		t.Errorf("%q is already a token of the base vocabulary", triggerWord)
	}
}

func TestGoldenIDs(t *testing.T) {
	tc := loadTokenizerCase(t)
	tok, tok2 := New(), New2()
	if tok.Pad() != PadTokenizer1 || tok2.Pad() != PadTokenizer2 {
		t.Fatalf("Pad() = %d, %d", tok.Pad(), tok2.Pad())
	}
	for i, p := range tc.prompts {
		if got := tok.EncodePadded(p, MaxLen, tok.Pad()); !slices.Equal(got, tc.ids1[i]) {
			t.Errorf("prompt %d %q tokenizer:\n got  %v\n want %v", i, p, got, tc.ids1[i])
		}
		if got := tok2.EncodePadded(p, MaxLen, tok2.Pad()); !slices.Equal(got, tc.ids2[i]) {
			t.Errorf("prompt %d %q tokenizer_2:\n got  %v\n want %v", i, p, got, tc.ids2[i])
		}
		u := tc.untruncated[i]
		if u[0] != BOS || u[len(u)-1] != EOS {
			t.Fatalf("prompt %d: untruncated ids not framed by BOS/EOS", i)
		}
		if got := tok.Encode(p); !slices.Equal(got, u[1:len(u)-1]) {
			t.Errorf("prompt %d %q untruncated:\n got  %v\n want %v", i, p, got, u[1:len(u)-1])
		}
		wt := tc.tokens[i]
		if got := tok.Tokenize(p); !slices.Equal(got, wt[1:len(wt)-1]) {
			t.Errorf("prompt %d %q tokens:\n got  %q\n want %q", i, p, got, wt[1:len(wt)-1])
		}
	}
}

// TestGoldenWithTrigger checks the prompts with PhotoMaker's trigger word
// registered. The reference adds it with add_tokens([word],
// special_tokens=True), i.e. a special, non-normalized AddedToken: it is
// matched in the raw text, case-sensitively, so "img" becomes 49408 while
// "IMG" is lower-cased by the normalizer and stays the ordinary "img</w>".
func TestGoldenWithTrigger(t *testing.T) {
	tc := loadTokenizerCase(t)
	tok, tok2 := New(), New2()
	for _, tk := range []*Tokenizer{tok, tok2} {
		if id := tk.AddSpecialToken(triggerWord); id != triggerID {
			t.Fatalf("AddSpecialToken = %d, want %d", id, triggerID)
		}
		if id := tk.AddSpecialToken(triggerWord); id != triggerID {
			t.Fatalf("AddSpecialToken again = %d, want %d", id, triggerID)
		}
		if tk.Len() != VocabSize+1 {
			t.Fatalf("Len = %d", tk.Len())
		}
	}
	withTrigger := 0
	for i, p := range tc.prompts {
		for _, golden := range []struct {
			tok *Tokenizer
			ids []int
		}{{tok, tc.ids1[i]}, {tok2, tc.ids2[i]}} {
			want := slices.Clone(golden.ids)
			if strings.Contains(p, triggerWord) {
				n := 0
				for k, id := range want {
					if id == imgWordID {
						want[k] = triggerID
						n++
					}
				}
				if n != strings.Count(p, triggerWord) {
					t.Fatalf("prompt %d: %d img tokens for %d trigger words", i, n, strings.Count(p, triggerWord))
				}
			}
			if got := golden.tok.EncodePadded(p, MaxLen, golden.tok.Pad()); !slices.Equal(got, want) {
				t.Errorf("prompt %d %q with trigger (pad %d):\n got  %v\n want %v", i, p, golden.tok.Pad(), got, want)
			}
		}
		if strings.Contains(p, triggerWord) {
			withTrigger++
		}
	}
	if withTrigger != 6 {
		t.Errorf("%d golden prompts hold the trigger word, want 6", withTrigger)
	}
	// The upper-case prompt keeps the ordinary token.
	if got := tok.Encode("a photo of a MAN IMG"); !slices.Equal(got, []int{320, 1125, 539, 320, 786, imgWordID}) {
		t.Errorf("upper-case trigger: %v", got)
	}
	// Matched anywhere, even inside a word, and never split.
	if got := tok.Tokenize("imgs of bigimg"); !slices.Equal(got, []string{"img", "s</w>", "of</w>", "big</w>", "img"}) {
		t.Errorf("trigger inside words: %q", got)
	}
	// A fresh tokenizer does not see another one's special tokens.
	if got := New().Encode("img"); !slices.Equal(got, []int{imgWordID}) {
		t.Errorf("fresh tokenizer: %v", got)
	}
}

// rawCase returns one entry of cases.json as a plain map (it also has
// fields that golden.Case lacks, such as "prompt_text_only").
//
// cases.json was written by Python's json module and holds bare NaN /
// Infinity / -Infinity (in the scheduler configs), which encoding/json
// rejects; they are read as null here.
func rawCase(t *testing.T, name string) map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(golden.Path("golden/cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Cases []map[string]json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal(pyjson.Sanitize(b), &m); err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Cases {
		var n string
		_ = json.Unmarshal(c["name"], &n)
		if n == name {
			return c
		}
	}
	t.Fatalf("no case %q", name)
	return nil
}

// findCase is golden.FindCase on the NaN-tolerant reading of cases.json.
func findCase(t *testing.T, name string) golden.Case {
	t.Helper()
	raw := rawCase(t, name)
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var c golden.Case
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGoldenPhotoMakerIDs rebuilds the clean ids that PhotoMaker v1 feeds to
// both encoders: padded ids, trigger removed, class token repeated per image.
func TestGoldenPhotoMakerIDs(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		name := "id_encoder_v1.n" + string(rune('0'+n))
		c := findCase(t, name)
		var prompt string
		if err := json.Unmarshal(c.Inputs["prompt"], &prompt); err != nil {
			t.Fatal(err)
		}
		for _, enc := range []struct {
			out string
			tok *Tokenizer
		}{{"clean_input_ids_tokenizer", New()}, {"clean_input_ids_tokenizer_2", New2()}} {
			trig := enc.tok.AddSpecialToken(triggerWord)
			ids := enc.tok.Encode(prompt)
			var clean []int
			for k, id := range ids {
				if id == trig {
					for r := 1; r < n; r++ { // class word = the token before
						clean = append(clean, ids[k-1])
					}
					continue
				}
				clean = append(clean, id)
			}
			want := golden.Int64(t, golden.String(t, c.Outputs[enc.out]))
			got := Frame(clean, MaxLen, enc.tok.Pad())
			if len(got) != len(want) {
				t.Fatalf("%s %s: len %d want %d", name, enc.out, len(got), len(want))
			}
			for k := range got {
				if int64(got[k]) != want[k] {
					t.Fatalf("%s %s:\n got  %v\n want %v", name, enc.out, got, want)
				}
			}
		}
	}
}

func TestGoldenTextOnlyDecode(t *testing.T) {
	c := rawCase(t, "id_encoder_v1.text_only")
	var inputs struct {
		Prompt string `json:"prompt"`
	}
	var want string
	if err := json.Unmarshal(c["inputs"], &inputs); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(c["prompt_text_only"], &want); err != nil {
		t.Fatal(err)
	}
	tok := New()
	trig := tok.AddSpecialToken(triggerWord)
	ids := tok.Encode(inputs.Prompt)
	k := slices.Index(ids, trig)
	if k < 0 {
		t.Fatalf("no trigger token in %v", ids)
	}
	ids = slices.Delete(ids, k, k+1)
	if got := tok.Decode(ids); got != want {
		t.Fatalf("Decode = %q, want %q", got, want)
	}
}

func TestDecode(t *testing.T) {
	tok := New()
	trig := tok.AddSpecialToken(triggerWord)
	for _, c := range []struct{ in, want string }{
		{"a photo of a cat", "a photo of a cat"},
		{"A Photo Of A CAT", "a photo of a cat"},
		{"  extra   spaces\tand\ttabs\nand newlines  ", "extra spaces and tabs and newlines"},
		{"café naïve résumé über Straße", "café naïve résumé über straße"},
		{"emoji 😀🎉 test 👍🏽", "emoji 😀🎉 test 👍🏽"},
		{"mixed 😀emoji😀inside", "mixed 😀 emoji 😀 inside"},
		{"中文 日本語 한국어 text", "中文 日本語 한국어 text"},
		{"don't stop", "don 't stop"},
		{"hyphen-ated", "hyphen - ated"},
		{"a man img, wearing", "a man img, wearing"},
		{"", ""},
	} {
		if got := tok.Decode(tok.Encode(c.in)); got != c.want {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", c.in, got, c.want)
		}
	}
	// Special tokens are kept; the last "</w>" turns into a space before them.
	if got := tok.Decode(tok.EncodePadded("a photo of a cat", 10, PadTokenizer1)); got != "<|startoftext|>a photo of a cat <|endoftext|><|endoftext|><|endoftext|><|endoftext|>" {
		t.Errorf("padded decode: %q", got)
	}
	if got := tok.Decode([]int{trig}); got != "img" {
		t.Errorf("trigger decode: %q", got)
	}
	// Unknown ids are skipped; a broken UTF-8 sequence becomes one U+FFFD.
	c3, _ := tok.TokenID("Ã") // byte 0xC3
	if got := tok.Decode([]int{-5, 320, 1 << 20, c3}); got != "a \uFFFD" {
		t.Errorf("lossy decode: %q", got)
	}
}

func TestLossyUTF8(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe2\x82", "\uFFFD"},                 // truncated 3-byte sequence: one maximal subpart
		{"\xe2\x82x", "\uFFFDx"},               //
		{"\xff\xfe", "\uFFFD\uFFFD"},           // two invalid bytes
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: each byte
		{"\xf0\x9f\x98", "\uFFFD"},             // truncated emoji
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xc3\xa9\xc3", "é\uFFFD"},
	} {
		if got := lossyUTF8([]byte(c.in)); got != c.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNormalizeAndPretokenize(t *testing.T) {
	if got := normalize("İSTANBUL\u00a0\u3000Ｘ e\u0301"); got != "i\u0307stanbul ｘ é" {
		t.Errorf("normalize = %q", got)
	}
	for _, c := range []struct{ in, want string }{
		{"e\u0301", "\u00e9"},
		{"\U00010041\u0301", "\U00010041\u0301"}, // x/text would give U+00C1
		{"\U00021f25\u0345", "\U00021f25\u0345"}, // x/text would give U+1F95
		{"\U00021f25a\u0301\U00010041\u0301\u0323", "\U00021f25\u00e1\U00010041\u0323\u0301"},
		{"\U00011099\U000110ba", "\U0001109a"}, // a real supplementary composition
		{"😀e\u0301", "😀\u00e9"},
		{"a\u1df6\u1df7", "a\u1df6\u1df7"},               // Unicode 10 marks: starters for the reference
		{"e\u1df6\u0301", "e\u1df6\u0301"},               // ... which block composition
		{"e\u0301\u1df6o\u0308", "\u00e9\u1df6\u00f6"},   //
		{"\U00011935\U00011930", "\U00011935\U00011930"}, // Dives Akuru (Unicode 13) not composed
	} {
		if got := nfc(c.in); got != c.want {
			t.Errorf("nfc(%+q) = %+q, want %+q", c.in, got, c.want)
		}
	}
	var pieces []string
	pretokenize("it's 'single' x'll 12ab !'s ?!a", func(w string) { pieces = append(pieces, w) })
	want := []string{"it", "'s", "'s", "ingle", "'", "x", "'ll", "1", "2", "ab", "!'", "s", "?!", "a"}
	if !slices.Equal(pieces, want) {
		t.Errorf("pretokenize = %q, want %q", pieces, want)
	}
}

func TestSpecialTokensInText(t *testing.T) {
	tok := New()
	if got := tok.Encode("x<|endoftext|>y <|STARTOFTEXT|>"); !slices.Equal(got, []int{tok.mustID(t, "x</w>"), EOS, tok.mustID(t, "y</w>"), BOS}) {
		t.Errorf("special tokens in text: %v", got)
	}
	if id := tok.AddSpecialToken("<|endoftext|>"); id != EOS {
		t.Errorf("re-adding EOS gives %d", id)
	}
	if id := tok.AddSpecialToken("cat</w>"); id != 2368 {
		t.Errorf("adding an existing vocabulary token gives %d", id)
	}
	if id := tok.AddSpecialToken("sks"); id != VocabSize {
		t.Errorf("first new token gives %d", id)
	}
	if id := tok.AddSpecialToken("sks person"); id != VocabSize+1 {
		t.Errorf("second new token gives %d", id)
	}
	// Longest match wins at a position.
	if got := tok.Encode("a sks person and sks"); !slices.Equal(got, []int{320, VocabSize + 1, tok.mustID(t, "and</w>"), VocabSize}) {
		t.Errorf("longest added match: %v", got)
	}
	if got := tok.Decode([]int{VocabSize + 1, 2368}); got != "sks personcat" {
		t.Errorf("decode of added tokens: %q", got)
	}
	if tok.AddSpecialToken("") != -1 {
		t.Error("empty special token accepted")
	}
}

func (t *Tokenizer) mustID(tb testing.TB, s string) int {
	tb.Helper()
	id, ok := t.TokenID(s)
	if !ok {
		tb.Fatalf("no token %q", s)
	}
	return id
}

func TestFrame(t *testing.T) {
	if got := Frame([]int{1, 2, 3}, 6, 0); !slices.Equal(got, []int{BOS, 1, 2, 3, EOS, 0}) {
		t.Errorf("Frame pad: %v", got)
	}
	if got := Frame([]int{1, 2, 3}, 4, 0); !slices.Equal(got, []int{BOS, 1, 2, EOS}) {
		t.Errorf("Frame truncate: %v", got)
	}
	if got := Frame(nil, 1, 0); !slices.Equal(got, []int{BOS}) {
		t.Errorf("Frame 1: %v", got)
	}
	if got := Frame(nil, 0, 0); len(got) != 0 {
		t.Errorf("Frame 0: %v", got)
	}
}

// TestLongWord exercises the heap merge path against the simple one.
func TestLongWord(t *testing.T) {
	v := loadVocab()
	for _, w := range []string{
		strings.Repeat("ab", 100),
		strings.Repeat("!", 333),
		strings.Repeat("supercalifragilistic", 10),
		strings.Repeat("😀", 40),
		strings.Repeat("aaa", 50) + "b",
	} {
		mk := func() []int32 {
			s := make([]int32, len(w))
			for i := range s {
				s[i] = v.byteID[w[i]]
			}
			s[len(s)-1] += 256
			return s
		}
		if a, b := v.mergeSmall(mk()), v.mergeHeap(mk()); !slices.Equal(a, b) {
			t.Errorf("%q: small %v heap %v", w[:20], a, b)
		}
	}
}

// The BPE cache lives as long as the process (a server's): it must keep
// neither the text a word was cut from nor words as long as a prompt.
func TestCacheKeepsNoText(t *testing.T) {
	v, err := parseVocab(vocabGz)
	if err != nil {
		t.Fatal(err)
	}
	text := cutWord(v)
	for i := 0; i < 5 && text.Value() != nil; i++ {
		runtime.GC()
	}
	if text.Value() != nil {
		t.Error("the cache keeps the whole text a cached word was cut from")
	}
	if n := v.cacheSize.Load(); n != 1 {
		t.Fatalf("%d words cached, want 1", n)
	}
	long := strings.Repeat("photograph", 100)
	if got, want := v.bpe(long), v.bpeUncached(long); !slices.Equal(got, want) {
		t.Fatalf("long word: %v, want %v", got, want)
	}
	if n := v.cacheSize.Load(); n != 1 {
		t.Errorf("a %d-byte word was cached (%d words cached)", len(long), n)
	}
}

// cutWord has v encode a word cut from a 1 MiB text and returns a weak
// pointer to the text, which nothing else holds.
//
//go:noinline
func cutWord(v *vocab) weak.Pointer[byte] {
	text := string(append(bytes.Repeat([]byte("a "), 1<<19), "photograph"...))
	v.bpe(text[len(text)-len("photograph"):])
	return weak.Make(unsafe.StringData(text))
}

func TestConcurrent(t *testing.T) {
	tc := loadTokenizerCase(t)
	base := New()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			tok := New()
			if g%2 == 0 {
				tok = base
			}
			for r := 0; r < 20; r++ {
				for i, p := range tc.prompts {
					if g == 1 && r == 3 {
						base.AddSpecialToken("zzqx") // concurrent registration
					}
					if got := tok.EncodePadded(p, MaxLen, PadTokenizer1); !slices.Equal(got, tc.ids1[i]) {
						t.Errorf("goroutine %d prompt %d mismatch", g, i)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{
		"a photo of a man img, wearing a hat", "", "  \t\n", "A Photo Of A CAT", "don't 's 'LL",
		"<|startoftext|>x<|endoftext|>", "😀emoji😀", "ﬁ ＡＢＣ àéîõü", "\xff\xfe broken", "İstanbul",
		strings.Repeat("the ", 100), strings.Repeat("!", 500), "imgimg IMG img",
	} {
		f.Add(s)
	}
	tok, tok2, plain := New(), New2(), New()
	trig := tok.AddSpecialToken(triggerWord)
	tok2.AddSpecialToken(triggerWord)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		ids2 := tok2.Encode(s)
		for _, id := range ids2 {
			if id < 0 || id >= tok2.Len() {
				t.Fatalf("tokenizer_2 id %d out of range", id)
			}
		}
		if p := tok2.EncodePadded(s, MaxLen, tok2.Pad()); len(p) != MaxLen || p[0] != BOS || !slices.Contains(p, EOS) {
			t.Fatalf("tokenizer_2 padded %v", p)
		}
		if utf8.ValidString(s) && countID(ids2, 0) < strings.Count(s, "!") {
			t.Fatalf("tokenizer_2: %d '!' tokens for %d '!'", countID(ids2, 0), strings.Count(s, "!"))
		}
		for _, id := range ids {
			if id < 0 || id >= tok.Len() {
				t.Fatalf("id %d out of range", id)
			}
		}
		if s != "" && strings.TrimFunc(s, isRegexSpace) != "" && utf8.ValidString(s) && len(ids) == 0 {
			t.Fatalf("no tokens for %q", s)
		}
		for _, pad := range []int{PadTokenizer1, PadTokenizer2} {
			p := tok.EncodePadded(s, MaxLen, pad)
			if len(p) != MaxLen || p[0] != BOS || !slices.Contains(p, EOS) {
				t.Fatalf("padded %v", p)
			}
			n := min(len(ids), MaxLen-2)
			if !slices.Equal(p[1:1+n], ids[:n]) || p[1+n] != EOS {
				t.Fatalf("padded %v does not frame %v", p, ids)
			}
			for _, x := range p[2+n:] {
				if x != pad {
					t.Fatalf("padding %v", p)
				}
			}
		}
		if want := strings.Count(s, triggerWord); utf8.ValidString(s) && countID(ids, trig) != want {
			t.Fatalf("%d trigger tokens for %d trigger words in %q", countID(ids, trig), want, s)
		}
		d := tok.Decode(ids)
		if !utf8.ValidString(d) {
			t.Fatalf("Decode gave invalid UTF-8 %q", d)
		}
		// Without added tokens (which decode without a word end), re-encoding
		// the decoded text is stable for valid input, except where lower-casing
		// after NFC left marks out of canonical order (e.g. "İ" + U+0670 →
		// "i" U+0307 U+0670): the reference re-normalizes those on the second
		// pass too.
		if utf8.ValidString(s) {
			d := plain.Decode(plain.Encode(s))
			if !norm.NFC.IsNormalString(d) {
				return
			}
			if d2 := plain.Decode(plain.Encode(d)); d2 != d {
				t.Fatalf("decode not stable: %q -> %q -> %q", s, d, d2)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := New()
	tok.AddSpecialToken(triggerWord)
	p := "a photo of a man img, wearing a hat, portrait, sharp focus, (masterpiece:1.2), best quality, highly detailed, studio lighting"
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		tok.EncodePadded(p, MaxLen, PadTokenizer1)
	}
}

func BenchmarkEncodeUncached(b *testing.B) {
	v := loadVocab()
	words := strings.Fields("photograph supercalifragilistic masterpiece illustration extraordinarily")
	for b.Loop() {
		for _, w := range words {
			v.bpeUncached(w)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	loadVocab()
	for b.Loop() {
		New().AddSpecialToken(triggerWord)
	}
}

func countID(ids []int, id int) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// TestReferenceEdgeCases holds ids produced by the reference tokenizers
// library (a tokenizer configured as transformers 5's CLIPTokenizer, with
// the trigger word added as a special token; for tokenizer_2 also "!").
func TestReferenceEdgeCases(t *testing.T) {
	tok, tok2 := New(), New2()
	tok.AddSpecialToken(triggerWord)
	tok2.AddSpecialToken(triggerWord)
	for _, c := range []struct {
		in         string
		ids1, ids2 []int // ids2 nil: same as ids1
	}{
		{"İSTANBUL", []int{328, 16384, 11231}, nil},                  // İ lower-cases to i + U+0307
		{"imgs of bigimg", []int{49408, 338, 539, 1205, 49408}, nil}, // trigger inside words
		{"𡼥\u0345", []int{172, 94, 120, 354, 137, 483}, nil},         // no bogus composition to U+1F95
		{"\U00010041\u0301", []int{172, 238, 223, 479, 136, 479}, nil},
		{"a\u1df6\u1df7", []int{320, 157, 115, 114, 157, 115, 371}, nil}, // not reordered
		{"e\u0301\u1df6o\u0308", []int{4166, 157, 115, 370, 37423}, nil},
		{"x\u00a0y\u3000z\u2028w", []int{343, 344, 345, 342}, nil},
		{"x\u200by\u00adz", []int{343, 9844, 344, 22618, 345}, nil},
		{"ǅemal ΣΑΣ", []int{131, 228, 908, 566, 139, 225, 138, 109, 139, 481}, nil},
		{"Wow!!img!! <|endoftext|>IMG", []int{2781, 748, 49408, 748, 49407, 24157}, []int{2781, 0, 0, 49408, 0, 0, 49407, 24157}},
		{"ﬁ", []int{171, 105, 479}, nil},
		{"\U00011935\U00011930", []int{172, 239, 97, 113, 172, 239, 97, 364}, nil},
	} {
		if c.ids2 == nil {
			c.ids2 = c.ids1
		}
		if got := tok.Encode(c.in); !slices.Equal(got, c.ids1) {
			t.Errorf("tokenizer %+q: %v, want %v", c.in, got, c.ids1)
		}
		if got := tok2.Encode(c.in); !slices.Equal(got, c.ids2) {
			t.Errorf("tokenizer_2 %+q: %v, want %v", c.in, got, c.ids2)
		}
	}
	if got := tok.Decode(tok.Encode("Wow!!img!! <|endoftext|>IMG")); got != "wow !! img!! <|endoftext|>img" {
		t.Errorf("decode: %q", got)
	}
}
