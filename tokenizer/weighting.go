package tokenizer

import (
	"strconv"
	"strings"
	"unicode"
)

// Chunk is a piece of a weighted prompt.
type Chunk struct {
	Text   string
	Weight float64
	// Break marks a BREAK keyword: the text after it starts a new 75-token
	// chunk. Text is empty and Weight 0 for a break.
	Break bool
}

// Attention multipliers of the A1111 prompt syntax.
const (
	parenWeight   = 1.1
	bracketWeight = 1 / 1.1
)

// ParseWeights parses the AUTOMATIC1111 prompt-emphasis syntax:
//
//	(text)      weight × 1.1 (nestable: ((text)) is × 1.21)
//	[text]      weight ÷ 1.1
//	(text:1.5)  weight × 1.5
//	\( \) \[ \] \\   literal characters (another backslash is dropped)
//	BREAK       (a whole word, upper case) a chunk break
//
// A bracket that is never closed applies to the end of the prompt; a closing
// bracket without an opener, or a ":" that does not end "(text:number)", is
// plain text. Neighbouring chunks of equal weight are merged. An empty
// prompt gives one empty chunk of weight 1. The text of the chunks is not
// normalized: tokenize each chunk and give its tokens the chunk's weight.
func ParseWeights(prompt string) []Chunk {
	var res []Chunk
	var round, square []int // indices into res where open brackets start
	mul := func(from int, m float64) {
		for i := from; i < len(res); i++ {
			if !res[i].Break {
				res[i].Weight *= m
			}
		}
	}
	text := func(s string) {
		for {
			before, after, ok := cutBreak(s)
			res = append(res, Chunk{Text: before, Weight: 1})
			if !ok {
				return
			}
			res = append(res, Chunk{Break: true})
			s = after
		}
	}
	for i := 0; i < len(prompt); {
		c := prompt[i]
		switch {
		case c == '\\':
			if i+1 < len(prompt) && strings.IndexByte(`()[]\`, prompt[i+1]) >= 0 {
				res = append(res, Chunk{Text: prompt[i+1 : i+2], Weight: 1})
				i += 2
			} else {
				i++ // a lone backslash is dropped, as in A1111
			}
		case c == '(':
			round = append(round, len(res))
			i++
		case c == '[':
			square = append(square, len(res))
			i++
		case c == ':':
			if w, n, ok := weightSuffix(prompt[i:]); ok && len(round) > 0 {
				mul(round[len(round)-1], w)
				round = round[:len(round)-1]
				i += n
			} else {
				res = append(res, Chunk{Text: ":", Weight: 1})
				i++
			}
		case c == ')' && len(round) > 0:
			mul(round[len(round)-1], parenWeight)
			round = round[:len(round)-1]
			i++
		case c == ']' && len(square) > 0:
			mul(square[len(square)-1], bracketWeight)
			square = square[:len(square)-1]
			i++
		case c == ')' || c == ']':
			text(prompt[i : i+1])
			i++
		default:
			j := i + 1
			for j < len(prompt) && strings.IndexByte(`\()[]:`, prompt[j]) < 0 {
				j++
			}
			text(prompt[i:j])
			i = j
		}
	}
	for _, p := range round {
		mul(p, parenWeight)
	}
	for _, p := range square {
		mul(p, bracketWeight)
	}
	// Drop empty text pieces left by breaks, merge equal weights.
	out := make([]Chunk, 0, len(res))
	for _, c := range res {
		if !c.Break && c.Text == "" {
			continue
		}
		if n := len(out); n > 0 && !c.Break && !out[n-1].Break && out[n-1].Weight == c.Weight {
			out[n-1].Text += c.Text
			continue
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		out = append(out, Chunk{Text: "", Weight: 1})
	}
	return out
}

// weightSuffix matches `:\s*[+-]?[.\d]+\s*\)` at the start of s and returns
// the number and the length matched.
func weightSuffix(s string) (float64, int, bool) {
	i := 1
	for i < len(s) && isASCIISpace(s[i]) {
		i++
	}
	start := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := i
	for i < len(s) && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	if i == digits {
		return 0, 0, false
	}
	num := s[start:i]
	for i < len(s) && isASCIISpace(s[i]) {
		i++
	}
	if i >= len(s) || s[i] != ')' {
		return 0, 0, false
	}
	w, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, 0, false
	}
	return w, i + 1, true
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// cutBreak splits s around the first word "BREAK" (with the white space
// around it).
func cutBreak(s string) (before, after string, ok bool) {
	for from := 0; ; {
		k := strings.Index(s[from:], "BREAK")
		if k < 0 {
			return s, "", false
		}
		k += from
		end := k + len("BREAK")
		if (k == 0 || !isWordByte(s[k-1])) && (end == len(s) || !isWordByte(s[end])) {
			b := strings.TrimRightFunc(s[:k], unicode.IsSpace)
			a := strings.TrimLeftFunc(s[end:], unicode.IsSpace)
			return b, a, true
		}
		from = k + 1
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
