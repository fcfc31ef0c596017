package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// The OpenAI CLIP BPE vocabulary (byte-identical to openai/CLIP's
// clip/bpe_simple_vocab_16e6.txt.gz).
//
//go:embed bpe_simple_vocab_16e6.txt.gz
var vocabGz []byte

const (
	// numMerges is the number of merge rules CLIP uses: 49152 - 256 - 2.
	numMerges = 49152 - 256 - 2
	// eowSuffix marks the last symbol of a word.
	eowSuffix = "</w>"
)

// vocab is the immutable, shared part of a tokenizer: the byte-level
// alphabet, the token strings, and the merge table.
type vocab struct {
	byteID    [256]int32     // id of the single-character token for each byte
	byteOfRun map[rune]byte  // byte-level character -> byte (for decoding)
	tokens    []string       // id -> token string
	ids       map[string]int // token string -> id (the last id wins, as in a Python dict)
	merges    map[uint64]mergeRule

	cache     sync.Map // word (raw bytes) -> []int32
	cacheSize atomic.Int64
}

type mergeRule struct {
	rank int32
	id   int32 // id of the merged token
}

const maxCacheEntries = 1 << 16

// maxCachedWord bounds the words (in bytes) the cache keeps: ordinary
// words are far shorter, and with the count bound alone a long-lived
// process fed long words (a server's prompts, up to 64 KiB each) would keep
// up to 65536 entries as large as them, key and ids.
const maxCachedWord = 64

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// byteAlphabet returns, in vocabulary order, the bytes and the characters
// that stand for them: printable Latin-1 bytes map to themselves, the others
// to U+0100 upwards (openai/CLIP's bytes_to_unicode).
func byteAlphabet() (bs []byte, cs []rune) {
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	for b := 0; b < 256; b++ {
		if printable(b) {
			bs = append(bs, byte(b))
			cs = append(cs, rune(b))
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !printable(b) {
			bs = append(bs, byte(b))
			cs = append(cs, rune(256+n))
			n++
		}
	}
	return bs, cs
}

var sharedVocab = sync.OnceValues(func() (*vocab, error) { return parseVocab(vocabGz) })

func loadVocab() *vocab {
	v, err := sharedVocab()
	if err != nil {
		panic(fmt.Sprintf("tokenizer: embedded vocabulary: %v", err))
	}
	return v
}

func parseVocab(gz []byte) (*vocab, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	// Only the header line and the first numMerges merges are used; the
	// file holds many more, which are not even decompressed.
	br := bufio.NewReaderSize(zr, 1<<16)
	lines := make([]string, 0, numMerges)
	for i := 0; i <= numMerges; i++ {
		l, err := br.ReadString('\n')
		if err != nil && (err != io.EOF || l == "") {
			return nil, fmt.Errorf("line %d: %v", i, err)
		}
		if i > 0 {
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
	}

	v := &vocab{
		byteOfRun: make(map[rune]byte, 256),
		tokens:    make([]string, 0, VocabSize),
		ids:       make(map[string]int, VocabSize),
		merges:    make(map[uint64]mergeRule, numMerges),
	}
	bs, cs := byteAlphabet()
	for i, b := range bs {
		v.byteID[b] = int32(i)
		v.byteOfRun[cs[i]] = b
		v.tokens = append(v.tokens, string(cs[i]))
	}
	for i := range bs {
		v.tokens = append(v.tokens, string(cs[i])+eowSuffix)
	}
	type pair struct{ a, b string }
	pairs := make([]pair, len(lines))
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("merge line %d: %q", i+1, l)
		}
		pairs[i] = pair{f[0], f[1]}
		v.tokens = append(v.tokens, f[0]+f[1])
	}
	v.tokens = append(v.tokens, "<|startoftext|>", "<|endoftext|>")
	if len(v.tokens) != VocabSize {
		return nil, fmt.Errorf("vocabulary has %d tokens, want %d", len(v.tokens), VocabSize)
	}
	for id, s := range v.tokens {
		v.ids[s] = id
	}
	for rank, p := range pairs {
		a, okA := v.ids[p.a]
		b, okB := v.ids[p.b]
		if !okA || !okB {
			return nil, fmt.Errorf("merge %d (%q %q) uses an unknown token", rank, p.a, p.b)
		}
		v.merges[pairKey(int32(a), int32(b))] = mergeRule{rank: int32(rank), id: int32(v.ids[p.a+p.b])}
	}
	return v, nil
}

// bpe returns the token ids of one pre-tokenized word given as raw bytes:
// each byte becomes its byte-level symbol, the last one carrying </w>, then
// the lowest-ranked adjacent pair is merged until no rule applies.
func (v *vocab) bpe(word string) []int32 {
	if c, ok := v.cache.Load(word); ok {
		return c.([]int32)
	}
	ids := v.bpeUncached(word)
	if len(word) <= maxCachedWord && v.cacheSize.Load() < maxCacheEntries {
		// The key is a copy: word is a slice of the whole normalized
		// text, which a cached slice would keep alive for good.
		if _, loaded := v.cache.LoadOrStore(strings.Clone(word), ids); !loaded {
			v.cacheSize.Add(1)
		}
	}
	return ids
}

func (v *vocab) bpeUncached(word string) []int32 {
	n := len(word)
	if n == 0 {
		return nil
	}
	sym := make([]int32, n)
	for i := 0; i < n; i++ {
		sym[i] = v.byteID[word[i]]
	}
	sym[n-1] += 256 // the same character with </w>
	if n == 1 {
		return sym
	}
	if n <= 64 {
		return v.mergeSmall(sym)
	}
	return v.mergeHeap(sym)
}

// mergeSmall repeatedly merges the adjacent pair with the lowest (rank,
// position), exactly as the heap does in mergeHeap; quadratic, fast for
// ordinary words.
func (v *vocab) mergeSmall(sym []int32) []int32 {
	for len(sym) > 1 {
		best, at := int32(-1), -1
		var bestID int32
		for i := 0; i+1 < len(sym); i++ {
			if m, ok := v.merges[pairKey(sym[i], sym[i+1])]; ok && (best < 0 || m.rank < best) {
				best, at, bestID = m.rank, i, m.id
			}
		}
		if at < 0 {
			break
		}
		sym[at] = bestID
		sym = append(sym[:at+1], sym[at+2:]...)
	}
	return sym
}

// mergeCand is a candidate merge of the symbol at pos with its right
// neighbour.
type mergeCand struct {
	rank, pos int32
	id        int32
}

type candHeap []mergeCand

func (h candHeap) less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}

func (h *candHeap) push(c mergeCand) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *candHeap) pop() mergeCand {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// mergeHeap merges with a priority queue over (rank, position) on a linked
// list of symbols: O(n log n) for long words.
func (v *vocab) mergeHeap(sym []int32) []int32 {
	n := len(sym)
	prev := make([]int32, n)
	next := make([]int32, n)
	alive := make([]bool, n)
	for i := range sym {
		prev[i], next[i], alive[i] = int32(i-1), int32(i+1), true
	}
	next[n-1] = -1
	h := make(candHeap, 0, n)
	for i := 0; i+1 < n; i++ {
		if m, ok := v.merges[pairKey(sym[i], sym[i+1])]; ok {
			h.push(mergeCand{m.rank, int32(i), m.id})
		}
	}
	for len(h) > 0 {
		c := h.pop()
		p := c.pos
		q := next[p]
		if !alive[p] || q < 0 {
			continue
		}
		if m, ok := v.merges[pairKey(sym[p], sym[q])]; !ok || m.id != c.id || m.rank != c.rank {
			continue // stale candidate
		}
		sym[p] = c.id
		alive[q] = false
		next[p] = next[q]
		if next[q] >= 0 {
			prev[next[q]] = p
		}
		if l := prev[p]; l >= 0 {
			if m, ok := v.merges[pairKey(sym[l], sym[p])]; ok {
				h.push(mergeCand{m.rank, l, m.id})
			}
		}
		if r := next[p]; r >= 0 {
			if m, ok := v.merges[pairKey(sym[p], sym[r])]; ok {
				h.push(mergeCand{m.rank, p, m.id})
			}
		}
	}
	out := make([]int32, 0, n)
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, sym[i])
	}
	return out
}
