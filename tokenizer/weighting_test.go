package tokenizer

import (
	"math"
	"strings"
	"testing"
)

func TestParseWeights(t *testing.T) {
	type c = Chunk
	brk := Chunk{Break: true}
	for _, tc := range []struct {
		in   string
		want []Chunk
	}{
		{"", []c{{"", 1, false}}},
		{"a photo of a cat", []c{{"a photo of a cat", 1, false}}},
		{"a (b) c", []c{{"a ", 1, false}, {"b", 1.1, false}, {" c", 1, false}}},
		{"((b))", []c{{"b", 1.21, false}}},
		{"[b]", []c{{"b", 1 / 1.1, false}}},
		{"[[b]]", []c{{"b", 1 / 1.21, false}}},
		{"(b:1.5)", []c{{"b", 1.5, false}}},
		{"(b: 0.5 )", []c{{"b", 0.5, false}}},
		{"(masterpiece:1.2), best quality, [detailed]", []c{{"masterpiece", 1.2, false}, {", best quality, ", 1, false}, {"detailed", 1 / 1.1, false}}},
		{"(a (b:2) c)", []c{{"a ", 1.1, false}, {"b", 2.2, false}, {" c", 1.1, false}}},
		{"([a] b)", []c{{"a", 1, false}, {" b", 1.1, false}}},
		{`\(x\) \[y\] a\\b`, []c{{`(x) [y] a\b`, 1, false}}},
		{`back\slash`, []c{{"backslash", 1, false}}},
		{"(unclosed", []c{{"unclosed", 1.1, false}}},
		{"a [unclosed (both", []c{{"a ", 1, false}, {"unclosed ", 1 / 1.1, false}, {"both", 1, false}}}, // both brackets unclosed: ×1.1 then ÷1.1
		{"a) b] c", []c{{"a) b] c", 1, false}}},
		{"ratio 16:9", []c{{"ratio 16:9", 1, false}}},
		{"(a:x)", []c{{"a:x", 1.1, false}}},
		{"b:1.5)", []c{{"b:1.5)", 1, false}}},
		{"()", []c{{"", 1, false}}},
		{"a BREAK b", []c{{"a", 1, false}, brk, {"b", 1, false}}},
		{"(a BREAK b)", []c{{"a", 1.1, false}, brk, {"b", 1.1, false}}},
		{"BREAKFAST", []c{{"BREAKFAST", 1, false}}},
	} {
		got := ParseWeights(tc.in)
		ok := len(got) == len(tc.want)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].Text == tc.want[i].Text && got[i].Break == tc.want[i].Break &&
				math.Abs(got[i].Weight-tc.want[i].Weight) < 1e-12
		}
		if !ok {
			t.Errorf("ParseWeights(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseWeights(f *testing.F) {
	for _, s := range []string{"(a:1.2) [b] \\(c\\)", "((((", "]]]:", "(a:1.2.3)", "x BREAK y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ParseWeights(s)
		if len(got) == 0 {
			t.Fatal("no chunks")
		}
		n := 0
		for i, c := range got {
			n += len(c.Text)
			if !c.Break && c.Text == "" && len(got) > 1 {
				t.Fatalf("empty chunk %d in %+v", i, got)
			}
			if i > 0 && !c.Break && !got[i-1].Break && got[i-1].Weight == c.Weight {
				t.Fatalf("unmerged chunks %+v", got)
			}
		}
		if n > len(s) {
			t.Fatalf("chunks longer than the prompt: %+v", got)
		}
		if !strings.ContainsAny(s, `\()[]:`) && !strings.Contains(s, "BREAK") &&
			(len(got) != 1 || got[0].Text != s || got[0].Weight != 1) {
			t.Fatalf("plain prompt %q gave %+v", s, got)
		}
	})
}
