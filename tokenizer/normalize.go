package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// normalize is the reference normalizer: NFC, runs of white space to one
// space, then per-character full lower-casing.
func normalize(s string) string {
	s = nfc(s)
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if isRegexSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		switch {
		case r < utf8.RuneSelf:
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			b.WriteByte(byte(r))
		case r == 'İ': // the one unconditional multi-character lower case
			b.WriteString("i\u0307")
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// nfcGo is NFC by golang.org/x/text, corrected: the package composes pairs by the
// low 16 bits of both code points, so a supplementary-plane starter can be
// wrongly composed with a following mark (U+10041 U+0301 becomes U+00C1).
// Text with supplementary characters is therefore checked for canonical
// equivalence, and segments that fail are redone without composing their
// starter.
func nfcGo(s string) string {
	y := norm.NFC.String(s)
	if !hasSupplementary(s) {
		return y
	}
	d := norm.NFD.String(s)
	if norm.NFD.String(y) == d {
		return y
	}
	var b strings.Builder
	start := 0
	for i := 0; i < len(s); {
		if i > start && norm.NFC.PropertiesString(s[i:]).BoundaryBefore() {
			b.WriteString(nfcSegment(s[start:i]))
			start = i
		}
		_, sz := utf8.DecodeRuneInString(s[i:])
		i += sz
	}
	b.WriteString(nfcSegment(s[start:]))
	return b.String()
}

// nfcSegment composes one segment (a starter and what may combine with it).
func nfcSegment(seg string) string {
	y := norm.NFC.String(seg)
	d := norm.NFD.String(seg)
	if norm.NFD.String(y) == d {
		return y
	}
	_, sz := utf8.DecodeRuneInString(d)
	return d[:sz] + norm.NFC.String(d[sz:])
}

func hasSupplementary(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0xF0 {
			return true
		}
	}
	return false
}

// nfc is NFC as the reference computes it. The reference's NFC tables
// (Rust crate unicode-normalization-alignments, used by tokenizers) predate
// Unicode 10: combining marks added since then have combining class 0 there,
// so they are starters that block reordering and composition, and the
// Dives Akuru composition U+11935 U+11930 (Unicode 13) is unknown. Those
// characters (refStarters, found by comparing with tokenizers over every
// code point that Go's Unicode 15 tables give a combining class) split the
// text into parts that are normalized on their own.
func nfc(s string) string {
	if !mayHaveRefStarter(s) {
		return nfcGo(s)
	}
	var b strings.Builder
	last := 0
	for i, r := range s {
		if unicode.Is(refStarters, r) {
			b.WriteString(nfcGo(s[last:i]))
			b.WriteRune(r)
			last = i + utf8.RuneLen(r)
		}
	}
	if last == 0 {
		return nfcGo(s)
	}
	b.WriteString(nfcGo(s[last:]))
	return b.String()
}

// mayHaveRefStarter is a quick filter: every refStarter is >= U+07FD,
// whose UTF-8 encoding starts with a byte >= 0xDF.
func mayHaveRefStarter(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0xDF {
			return true
		}
	}
	return false
}

// refStarters are the characters with a non-zero canonical combining class
// in Go's tables (or, for U+11930, a backward-composing vowel sign) that the
// reference's normalizer treats as plain starters.
var refStarters = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x07FD, 0x07FD, 1}, {0x0898, 0x089F, 1}, {0x08CA, 0x08D3, 1}, {0x09FE, 0x09FE, 1}, {0x0C3C, 0x0C3C, 1},
		{0x0D3B, 0x0D3C, 1}, {0x0EBA, 0x0EBA, 1}, {0x1715, 0x1715, 1}, {0x1ABF, 0x1ACE, 1}, {0x1DF6, 0x1DFA, 1},
		{0xA82C, 0xA82C, 1},
	},
	R32: []unicode.Range32{
		{0x10D24, 0x10D27, 1}, {0x10EAB, 0x10EAC, 1}, {0x10EFD, 0x10EFF, 1}, {0x10F46, 0x10F50, 1}, {0x10F82, 0x10F85, 1},
		{0x11070, 0x11070, 1}, {0x1133B, 0x1133B, 1}, {0x1145E, 0x1145E, 1}, {0x11839, 0x1183A, 1}, {0x11930, 0x11930, 1},
		{0x1193D, 0x1193E, 1}, {0x11943, 0x11943, 1}, {0x119E0, 0x119E0, 1}, {0x11A34, 0x11A34, 1}, {0x11A47, 0x11A47, 1},
		{0x11A99, 0x11A99, 1}, {0x11D42, 0x11D42, 1}, {0x11D44, 0x11D45, 1}, {0x11D97, 0x11D97, 1}, {0x11F41, 0x11F42, 1},
		{0x16FF0, 0x16FF1, 1}, {0x1E08F, 0x1E08F, 1}, {0x1E130, 0x1E136, 1}, {0x1E2AE, 0x1E2AE, 1}, {0x1E2EC, 0x1E2EF, 1},
		{0x1E4EC, 0x1E4EF, 1},
	},
}
