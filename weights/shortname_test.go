package weights

import (
	"fmt"
	"math/rand"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullSizeNames expands the tiny model's canonical names to real SDXL and
// PhotoMaker sizes: 10 transformer blocks per attention, 12 CLIP-L layers,
// 32 OpenCLIP-bigG layers, 24 ViT-L layers, 4 perceiver layers. The LoRA
// names (which ggml may see when merging on the device) are included.
func fullSizeNames(t *testing.T) []string {
	seeds := openTiny(t).Tensors.Names()
	for _, f := range []string{"photomaker/photomaker-v1-tiny.safetensors", "photomaker/photomaker-v2-tiny.safetensors"} {
		pm := openAdapter(t, f)
		seeds = append(seeds, pm.Tensors.Names()...)
		seeds = append(seeds, pm.LoRA.Names()...)
	}
	tb := regexp.MustCompile(`transformer_blocks\.\d+\.`)
	layers := regexp.MustCompile(`layers\.\d+\.`)
	set := map[string]bool{}
	for _, n := range seeds {
		nTB := 1
		if tb.MatchString(n) {
			nTB = 10
		}
		nL := 1
		switch {
		case strings.HasPrefix(n, "te1."):
			nL = 12
		case strings.HasPrefix(n, "te2."):
			nL = 32
		case strings.HasPrefix(n, "pm.vision_model."):
			nL = 24
		case strings.HasPrefix(n, "pm.qformer_perceiver."):
			nL = 4
		}
		for i := 0; i < nTB; i++ {
			for j := 0; j < nL; j++ {
				x := n
				if nTB > 1 {
					x = tb.ReplaceAllString(x, fmt.Sprintf("transformer_blocks.%d.", i))
				}
				if nL > 1 {
					x = layers.ReplaceAllString(x, fmt.Sprintf("layers.%d.", j))
				}
				set[x] = true
			}
		}
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func checkShortNames(t *testing.T, names []string) (longest string) {
	t.Helper()
	seen := map[string]string{}
	for _, n := range names {
		s := ShortName(n)
		require.Less(t, len(s), GGMLMaxName, "%s → %s", n, s)
		if prev, dup := seen[s]; dup {
			t.Fatalf("%s and %s both shorten to %s", prev, n, s)
		}
		seen[s] = n
		back, ok := LongName(s)
		require.True(t, ok, s)
		require.Equal(t, n, back)
		require.Equal(t, s, ShortName(n), "deterministic")
		if len(n) > len(longest) {
			longest = n
		}
	}
	return longest
}

func TestShortNameTinyModel(t *testing.T) {
	names := openTiny(t).Tensors.Names()
	require.Len(t, names, 937)
	checkShortNames(t, names)
}

func TestShortNameFullSizeSDXL(t *testing.T) {
	names := fullSizeNames(t)
	require.Greater(t, len(names), 5000)
	// The real UNet has 10 transformer blocks in its deepest level.
	assert.Contains(t, names, "unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_out.0.weight")
	assert.Contains(t, names, "te2.text_model.encoder.layers.31.self_attn.out_proj.weight")
	assert.Contains(t, names, "pm.vision_model.encoder.layers.23.mlp.fc2.weight")
	longest := checkShortNames(t, names)
	assert.GreaterOrEqual(t, len(longest), GGMLMaxName, "the test must include names ggml cannot take as they are: %s", longest)
	t.Logf("longest canonical name (%d bytes): %s → %s", len(longest), longest, ShortName(longest))
}

func TestShortNameExamples(t *testing.T) {
	tests := []struct{ long, short string }{
		{"unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_out.0.weight", "unet.U.0.A.2.T.9.A2.O.0.W"},
		{"te2.text_projection.weight", "te2.TP.W"},
		{"vae.decoder.mid_block.attentions.0.group_norm.bias", "vae.DE.M.A.0.GN.B"},
		{"", ""},
		{"Weight", "~Weight"},
		{"a.~b..D", "a.~~b..~D"},
		{"unet.conv_in.weight", "unet.conv_in.W"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.short, ShortName(tc.long), tc.long)
		back, ok := LongName(tc.short)
		assert.True(t, ok)
		assert.Equal(t, tc.long, back)
	}
	for _, bad := range []string{"unet.Nope.W", "~a", "x.~"} {
		_, ok := LongName(bad)
		assert.False(t, ok, bad)
	}
}

// ShortName is injective on arbitrary strings, not only canonical names.
func TestShortNameRandomRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	alphabet := []string{"a", "D", "~", ".", "_", "W", "weight", "down_blocks", "0", "T"}
	seen := map[string]string{}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for k := rng.Intn(8); k >= 0; k-- {
			b.WriteString(alphabet[rng.Intn(len(alphabet))])
		}
		n := b.String()
		s := ShortName(n)
		if prev, dup := seen[s]; dup && prev != n {
			t.Fatalf("%q and %q both shorten to %q", prev, n, s)
		}
		seen[s] = n
		back, ok := LongName(s)
		require.True(t, ok, "%q → %q", n, s)
		require.Equal(t, n, back)
	}
}
