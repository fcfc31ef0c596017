// Package tokenizer is the CLIP byte-level BPE tokenizer used by both SDXL
// text encoders (and so by PhotoMaker).
//
// It is built from the embedded openai/CLIP vocabulary with CLIP's
// construction (256 byte characters, the same with "</w>", 48894 merges,
// then <|startoftext|> 49406 and <|endoftext|> 49407) and behaves like the
// reference, transformers 5's tokenizers-backed CLIPTokenizer:
//
//   - added tokens are cut out first: tokens registered with AddSpecialToken
//     (such as PhotoMaker's trigger word "img") are matched in the raw text,
//     case-sensitively and anywhere, even inside a word (they are special
//     tokens and therefore not normalized); so is "!" for SDXL's second
//     tokenizer (New2), whose pad token it is; <|startoftext|> and
//     <|endoftext|> are matched in the normalized text;
//   - the rest is normalized: NFC, every run of white space to one space,
//     lower case (no ftfy);
//   - pre-tokenized with CLIP's pattern: the contractions 's 't 're 've 'm
//     'll 'd, runs of letters, single digits, runs of other non-space
//     characters; white space is dropped;
//   - each piece is encoded as UTF-8 bytes through byte-level BPE, the last
//     symbol carrying "</w>".
//
// Checked against the goldens and, over some 50,000 generated strings,
// against the tokenizers library itself. Known differences are limited to
// characters that Go's Unicode 15 tables leave unassigned (the reference
// knows newer scripts, e.g. as letters).
//
// A Tokenizer shares the parsed vocabulary with every other one, so New is
// cheap; its own special tokens are per instance. All methods are safe for
// concurrent use.
package tokenizer

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

const (
	// BOS is <|startoftext|>.
	BOS = 49406
	// EOS is <|endoftext|>; the first SDXL tokenizer also pads with it.
	EOS = 49407
	// MaxLen is the CLIP text encoders' context length.
	MaxLen = 77
	// VocabSize is the size of the base vocabulary (ids 0..49407).
	VocabSize = 49408
	// PadTokenizer1 is the padding id of SDXL's `tokenizer` (<|endoftext|>).
	PadTokenizer1 = EOS
	// PadTokenizer2 is the padding id of SDXL's `tokenizer_2` ("!").
	PadTokenizer2 = 0
)

// addedToken is a token matched in the text before BPE.
type addedToken struct {
	content    string
	id         int
	normalized bool // matched in the normalized text (else in the raw text)
}

// addedSet is an immutable snapshot of a tokenizer's added tokens.
type addedSet struct {
	all       []addedToken // in registration order
	raw, norm []addedToken // by where they match, longest first
}

func newAddedSet(all []addedToken) *addedSet {
	s := &addedSet{all: all}
	for _, a := range all {
		if a.normalized {
			s.norm = append(s.norm, a)
		} else {
			s.raw = append(s.raw, a)
		}
	}
	for _, l := range [][]addedToken{s.raw, s.norm} {
		sort.SliceStable(l, func(i, j int) bool { return len(l[i].content) > len(l[j].content) })
	}
	return s
}

func (s *addedSet) byID(id int) (string, bool) {
	for _, a := range s.all {
		if a.id == id {
			return a.content, true
		}
	}
	return "", false
}

// Tokenizer is a CLIP BPE tokenizer plus its added tokens.
type Tokenizer struct {
	v     *vocab
	pad   int
	mu    sync.Mutex               // serializes AddSpecialToken
	added atomic.Pointer[addedSet] // immutable snapshot, replaced on add
}

// New returns SDXL's first tokenizer (`tokenizer`, CLIP ViT-L): its added
// tokens are <|startoftext|> and <|endoftext|>, and it pads with
// <|endoftext|>. The vocabulary is parsed once per process and shared, so
// New is cheap.
func New() *Tokenizer {
	t := &Tokenizer{v: loadVocab(), pad: PadTokenizer1}
	t.added.Store(newAddedSet([]addedToken{
		{content: "<|startoftext|>", id: BOS, normalized: true},
		{content: "<|endoftext|>", id: EOS, normalized: true},
	}))
	return t
}

// New2 returns SDXL's second tokenizer (`tokenizer_2`, OpenCLIP bigG). It
// pads with "!" (id 0), and because its pad token "!" is a special token of
// that tokenizer, every "!" in the text is cut out as its own token before
// BPE: "World!!!" gives "world</w>" 0 0 0 where the first tokenizer gives
// "world</w>" "!!!</w>". Otherwise it is the same as New.
func New2() *Tokenizer {
	t := New()
	t.pad = PadTokenizer2
	t.AddSpecialToken("!")
	return t
}

// Pad returns the id the tokenizer pads with (PadTokenizer1 for New,
// PadTokenizer2 for New2).
func (t *Tokenizer) Pad() int { return t.pad }

// AddSpecialToken registers word as a special token (as transformers'
// add_tokens(word, special_tokens=True) does): it is always one token, never
// split, and matched case-sensitively in the raw text wherever it occurs. It
// returns the token's id: the existing id when word is already a token (of
// the vocabulary or added), otherwise the next free id (49408 for the first).
// It returns -1 for an empty word.
func (t *Tokenizer) AddSpecialToken(word string) int {
	if word == "" {
		return -1
	}
	word = strings.ToValidUTF8(word, "\uFFFD")
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.added.Load().all
	for _, a := range cur {
		if a.content == word {
			return a.id
		}
	}
	id, ok := t.v.ids[word]
	if !ok {
		id = VocabSize
		for _, a := range cur {
			if a.id >= id {
				id = a.id + 1
			}
		}
	}
	next := append(append(make([]addedToken, 0, len(cur)+1), cur...), addedToken{content: word, id: id})
	t.added.Store(newAddedSet(next))
	return id
}

// Len is the vocabulary size including added tokens.
func (t *Tokenizer) Len() int {
	n := VocabSize
	for _, a := range t.added.Load().all {
		if a.id >= n {
			n = a.id + 1
		}
	}
	return n
}

// TokenID returns the id of a token string ("cat</w>", "img", ...).
func (t *Tokenizer) TokenID(token string) (int, bool) {
	for _, a := range t.added.Load().all {
		if a.content == token {
			return a.id, true
		}
	}
	id, ok := t.v.ids[token]
	return id, ok
}

// Token returns the token string of an id, or "" for an unknown id.
func (t *Tokenizer) Token(id int) string {
	if s, ok := t.added.Load().byID(id); ok {
		return s
	}
	if id >= 0 && id < len(t.v.tokens) {
		return t.v.tokens[id]
	}
	return ""
}

// Encode returns the ids of text without BOS/EOS and without truncation.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	t.encode(text, func(id int32) { ids = append(ids, int(id)) })
	return ids
}

// Tokenize returns the token strings of text (BPE tokens with "</w>", added
// tokens as themselves), without BOS/EOS.
func (t *Tokenizer) Tokenize(text string) []string {
	var toks []string
	t.encode(text, func(id int32) { toks = append(toks, t.Token(int(id))) })
	return toks
}

// EncodePadded returns BOS, the ids of text truncated so that BOS and EOS
// fit in maxLen, EOS, then pad up to maxLen: what
// tokenizer(text, padding="max_length", max_length=maxLen, truncation=True)
// gives. SDXL's first tokenizer pads with PadTokenizer1, the second with
// PadTokenizer2.
func (t *Tokenizer) EncodePadded(text string, maxLen, pad int) []int {
	return Frame(t.Encode(text), maxLen, pad)
}

// Frame wraps ids as EncodePadded does: BOS + ids[:maxLen-2] + EOS + padding
// to maxLen. For maxLen < 2 it returns BOS+EOS truncated to maxLen.
func Frame(ids []int, maxLen, pad int) []int {
	if maxLen < 2 {
		return []int{BOS, EOS}[:max(maxLen, 0)]
	}
	if len(ids) > maxLen-2 {
		ids = ids[:maxLen-2]
	}
	out := make([]int, 0, maxLen)
	out = append(out, BOS)
	out = append(out, ids...)
	out = append(out, EOS)
	for len(out) < maxLen {
		out = append(out, pad)
	}
	return out
}

// Decode turns ids back into text as the reference's decode does: token
// strings concatenated, byte-level characters mapped back to bytes (invalid
// UTF-8 becomes U+FFFD), every "</w>" replaced by a space, and the result
// trimmed. Special tokens are kept ("<|startoftext|>", "img"); unknown ids
// are skipped. No clean-up of spaces before punctuation is done:
// "a photo of a man , wearing a hat" stays so.
func (t *Tokenizer) Decode(ids []int) string {
	added := t.added.Load()
	var buf []byte
	for _, id := range ids {
		tok, ok := added.byID(id)
		if !ok {
			if id < 0 || id >= len(t.v.tokens) {
				continue
			}
			tok = t.v.tokens[id]
		}
		buf = t.v.appendTokenBytes(buf, tok)
	}
	s := strings.ReplaceAll(lossyUTF8(buf), eowSuffix, " ")
	return strings.TrimFunc(s, isPySpace)
}

// appendTokenBytes maps a token's byte-level characters back to bytes; a
// token with a character outside the byte alphabet (an added token such as
// "my word") contributes its UTF-8 bytes unchanged.
func (v *vocab) appendTokenBytes(buf []byte, tok string) []byte {
	start := len(buf)
	for _, r := range tok {
		b, ok := v.byteOfRun[r]
		if !ok {
			return append(buf[:start], tok...)
		}
		buf = append(buf, b)
	}
	return buf
}

// encode runs the whole pipeline, calling emit for each token id.
func (t *Tokenizer) encode(text string, emit func(int32)) {
	text = strings.ToValidUTF8(text, "\uFFFD")
	added := t.added.Load()
	splitAdded(text, added.raw, emit, func(seg string) {
		splitAdded(normalize(seg), added.norm, emit, func(piece string) {
			pretokenize(piece, func(word string) {
				for _, id := range t.v.bpe(word) {
					emit(id)
				}
			})
		})
	})
}

// splitAdded cuts the added tokens out of s, leftmost-longest (toks is
// sorted longest first), calling emit for each of them and rest for the
// non-empty text between them.
func splitAdded(s string, toks []addedToken, emit func(int32), rest func(string)) {
	if len(toks) == 0 {
		if s != "" {
			rest(s)
		}
		return
	}
	last := 0
	for i := 0; i < len(s); {
		matched := false
		for _, a := range toks {
			if strings.HasPrefix(s[i:], a.content) {
				if i > last {
					rest(s[last:i])
				}
				emit(int32(a.id))
				i += len(a.content)
				last = i
				matched = true
				break
			}
		}
		if !matched {
			_, sz := utf8.DecodeRuneInString(s[i:])
			i += sz
		}
	}
	if last < len(s) {
		rest(s[last:])
	}
}

// isRegexSpace is \s of the reference's regex engine: Unicode White_Space.
func isRegexSpace(r rune) bool { return unicode.IsSpace(r) }

// isPySpace is Python's str.isspace (used by str.strip).
func isPySpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F) }

var contractions = [...]string{"s", "t", "re", "ve", "m", "ll", "d"}

// pretokenize splits normalized text with CLIP's pattern
// 's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+ (white space is
// dropped), calling word for each piece.
func pretokenize(s string, word func(string)) {
	for i := 0; i < len(s); {
		r, sz := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\'' && contraction(s[i+1:]) > 0:
			n := 1 + contraction(s[i+1:])
			word(s[i : i+n])
			i += n
		case unicode.IsLetter(r):
			j := i + sz
			for j < len(s) {
				r2, sz2 := utf8.DecodeRuneInString(s[j:])
				if !unicode.IsLetter(r2) {
					break
				}
				j += sz2
			}
			word(s[i:j])
			i = j
		case unicode.IsNumber(r):
			word(s[i : i+sz])
			i += sz
		case isRegexSpace(r):
			i += sz
		default:
			j := i + sz
			for j < len(s) {
				r2, sz2 := utf8.DecodeRuneInString(s[j:])
				if isRegexSpace(r2) || unicode.IsLetter(r2) || unicode.IsNumber(r2) {
					break
				}
				j += sz2
			}
			word(s[i:j])
			i = j
		}
	}
}

// contraction returns the length of the contraction suffix (after the
// apostrophe) that s starts with, or 0.
func contraction(s string) int {
	for _, c := range contractions {
		if strings.HasPrefix(s, c) {
			return len(c)
		}
	}
	return 0
}

// lossyUTF8 decodes b replacing each maximal invalid subpart with U+FFFD,
// as Rust's String::from_utf8_lossy (and Python's errors="replace") do.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			sb.WriteByte(c)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			need, lo = 2, 0xA0
		case c == 0xED:
			need, hi = 2, 0x9F
		case c >= 0xE1 && c <= 0xEF:
			need = 2
		case c == 0xF0:
			need, lo = 3, 0x90
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			need, hi = 3, 0x8F
		default:
			sb.WriteRune(utf8.RuneError)
			i++
			continue
		}
		j, ok := i+1, true
		for k := 0; k < need; k++ {
			l, h := byte(0x80), byte(0xBF)
			if k == 0 {
				l, h = lo, hi
			}
			if j >= len(b) || b[j] < l || b[j] > h {
				ok = false
				break
			}
			j++
		}
		if ok {
			sb.Write(b[i:j])
		} else {
			sb.WriteRune(utf8.RuneError)
		}
		i = j
	}
	return sb.String()
}
