package clip

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
	"github.com/stretchr/testify/require"
)

// randomSet builds checkpoints in memory and remembers every value for the
// float64 references below.
type randomSet struct {
	set  *weights.Set
	vals map[string][]float32
	r    *rand.Rand
}

func newRandomSet(seed uint64) *randomSet {
	return &randomSet{set: weights.NewSet(), vals: map[string][]float32{}, r: rand.New(rand.NewPCG(seed, seed))}
}

func (s *randomSet) add(t *testing.T, name string, scale float64, shape ...int64) {
	s.addAround(t, name, 0, scale, shape...)
}

// addAround adds a tensor of normal values with the given mean and scale.
func (s *randomSet) addAround(t *testing.T, name string, mean, scale float64, shape ...int64) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(mean + s.r.NormFloat64()*scale)
	}
	b := ggml.F32Bytes(v)
	require.NoError(t, s.set.Add(weights.NewTensor(name, safetensors.F32, shape, "mem", func() ([]byte, error) { return b, nil })))
	s.vals[name] = v
}

func (s *randomSet) addLayers(t *testing.T, p string, layers int, hidden, inter int64) {
	for l := 0; l < layers; l++ {
		q := fmt.Sprintf("%sencoder.layers.%d.", p, l)
		for _, ln := range []string{"layer_norm1", "layer_norm2"} {
			s.addAround(t, q+ln+".weight", 1, 0.3, hidden)
			s.add(t, q+ln+".bias", 0.1, hidden)
		}
		for _, pr := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			s.add(t, q+"self_attn."+pr+".weight", 1/math.Sqrt(float64(hidden)), hidden, hidden)
			s.add(t, q+"self_attn."+pr+".bias", 0.1, hidden)
		}
		s.add(t, q+"mlp.fc1.weight", 1/math.Sqrt(float64(hidden)), inter, hidden)
		s.add(t, q+"mlp.fc1.bias", 0.1, inter)
		s.add(t, q+"mlp.fc2.weight", 1/math.Sqrt(float64(inter)), hidden, inter)
		s.add(t, q+"mlp.fc2.bias", 0.1, hidden)
	}
}

// ---- float64 reference of a CLIP encoder --------------------------------

type mat [][]float64 // rows = tokens

func (s *randomSet) f64(name string) []float64 {
	v := s.vals[name]
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func (s *randomSet) layerNorm(x mat, p string) mat {
	w, b := s.f64(p+".weight"), s.f64(p+".bias")
	out := make(mat, len(x))
	for i, row := range x {
		m, v := 0.0, 0.0
		for _, a := range row {
			m += a / float64(len(row))
		}
		for _, a := range row {
			v += (a - m) * (a - m) / float64(len(row))
		}
		out[i] = make([]float64, len(row))
		for j, a := range row {
			out[i][j] = (a-m)/math.Sqrt(v+1e-5)*w[j] + b[j]
		}
	}
	return out
}

func (s *randomSet) linear(x mat, p string, bias bool) mat {
	w := s.f64(p + ".weight")
	in := len(x[0])
	outW := len(w) / in
	var b []float64
	if bias {
		b = s.f64(p + ".bias")
	}
	out := make(mat, len(x))
	for i, row := range x {
		out[i] = make([]float64, outW)
		for o := 0; o < outW; o++ {
			acc := 0.0
			if b != nil {
				acc = b[o]
			}
			for k, a := range row {
				acc += w[o*in+k] * a
			}
			out[i][o] = acc
		}
	}
	return out
}

func addM(a, b mat) mat {
	out := make(mat, len(a))
	for i := range a {
		out[i] = make([]float64, len(a[i]))
		for j := range a[i] {
			out[i][j] = a[i][j] + b[i][j]
		}
	}
	return out
}

func (s *randomSet) layer(x mat, p string, heads int, act Activation, causal bool) mat {
	h := s.layerNorm(x, p+"layer_norm1")
	q, k, v := s.linear(h, p+"self_attn.q_proj", true), s.linear(h, p+"self_attn.k_proj", true), s.linear(h, p+"self_attn.v_proj", true)
	C, N := len(x[0]), len(x)
	D := C / heads
	att := make(mat, N)
	for i := range att {
		att[i] = make([]float64, C)
	}
	for hd := 0; hd < heads; hd++ {
		for i := 0; i < N; i++ {
			sc := make([]float64, N)
			mx := math.Inf(-1)
			for j := 0; j < N; j++ {
				if causal && j > i {
					sc[j] = math.Inf(-1)
					continue
				}
				for d := 0; d < D; d++ {
					sc[j] += q[i][hd*D+d] * k[j][hd*D+d]
				}
				sc[j] /= math.Sqrt(float64(D))
				mx = math.Max(mx, sc[j])
			}
			sum := 0.0
			for j := range sc {
				sc[j] = math.Exp(sc[j] - mx)
				sum += sc[j]
			}
			for j := 0; j < N; j++ {
				for d := 0; d < D; d++ {
					att[i][hd*D+d] += sc[j] / sum * v[j][hd*D+d]
				}
			}
		}
	}
	x = addM(x, s.linear(att, p+"self_attn.out_proj", true))
	f := s.linear(s.layerNorm(x, p+"layer_norm2"), p+"mlp.fc1", true)
	for _, row := range f {
		for j, a := range row {
			if act == GELU {
				row[j] = a * 0.5 * (1 + math.Erf(a/math.Sqrt2))
			} else {
				row[j] = a / (1 + math.Exp(-1.702*a))
			}
		}
	}
	return addM(x, s.linear(f, p+"mlp.fc2", true))
}

func flat(ms ...mat) []float32 {
	var out []float32
	for _, m := range ms {
		for _, row := range m {
			for _, a := range row {
				out = append(out, float32(a))
			}
		}
	}
	return out
}

func maxAbs(got, want []float32) float64 {
	m := 0.0
	for i := range got {
		m = math.Max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}

// ---- tests ----------------------------------------------------------------

// A text encoder shaped unlike the tiny SDXL one (3 layers, hidden 128 = 2
// heads, MLP 96, 9 positions, vocabulary 50, projection 32): every size
// must come from the weights, and the numbers must match a float64 CLIP.
func TestTextHyperparametersFromWeights(t *testing.T) {
	const V, P, C, I, L, Proj = 50, 9, 128, 96, 3, 32
	for _, act := range []Activation{QuickGELU, GELU} {
		t.Run(act.String(), func(t *testing.T) {
			s := newRandomSet(7)
			s.add(t, "x.text_model.embeddings.token_embedding.weight", 0.5, V, C)
			s.add(t, "x.text_model.embeddings.position_embedding.weight", 0.5, P, C)
			s.addLayers(t, "x.text_model.", L, C, I)
			s.addAround(t, "x.text_model.final_layer_norm.weight", 1, 0.3, C)
			s.add(t, "x.text_model.final_layer_norm.bias", 0.1, C)
			s.add(t, "x.text_projection.weight", 1/math.Sqrt(C), Proj, C)

			ctx := context.Background()
			rt := newRuntime(t)
			m, err := LoadText(ctx, rt, s.set, "x", TextConfig{Activation: act}, nil)
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, TextParams{Vocab: V, Positions: P, Hidden: C, Heads: 2, Layers: L, Intermediate: I, Projection: Proj}, m.Params)

			ids := [][]int{{49 - 1, 3, 17, 49, 5, 49}, {1, 2, 3, 4, 5, 6}}
			r, err := m.Encode(ctx, rt, ids)
			require.NoError(t, err)
			N := len(ids[0])
			require.Len(t, r.Hidden, L+1)
			for _, h := range r.Hidden {
				require.Len(t, h, 2*N*C)
			}
			require.Len(t, r.Last, 2*N*C)
			require.Len(t, r.Pooled, 2*C)
			require.Len(t, r.Projected, 2*Proj)
			require.Equal(t, 3, m.PoolPosition(ids[0])) // first largest id
			require.Equal(t, 5, m.PoolPosition(ids[1]))

			// float64 reference, sequence by sequence.
			tok, pos := s.f64("x.text_model.embeddings.token_embedding.weight"), s.f64("x.text_model.embeddings.position_embedding.weight")
			var want [L + 1][]float32
			var wantLast, wantPooled, wantProj []float32
			for b, seq := range ids {
				x := make(mat, N)
				for i, id := range seq {
					x[i] = make([]float64, C)
					for j := range x[i] {
						x[i][j] = tok[id*C+j] + pos[i*C+j]
					}
				}
				want[0] = append(want[0], flat(x)...)
				for l := 0; l < L; l++ {
					x = s.layer(x, fmt.Sprintf("x.text_model.encoder.layers.%d.", l), 2, act, true)
					want[l+1] = append(want[l+1], flat(x)...)
				}
				last := s.layerNorm(x, "x.text_model.final_layer_norm")
				wantLast = append(wantLast, flat(last)...)
				pooled := mat{last[m.PoolPosition(ids[b])]}
				wantPooled = append(wantPooled, flat(pooled)...)
				wantProj = append(wantProj, flat(s.linear(pooled, "x.text_projection", false))...)
			}
			for l := range want {
				require.Less(t, maxAbs(r.Hidden[l], want[l]), 2e-5, "hidden state %d", l)
			}
			require.Less(t, maxAbs(r.Last, wantLast), 2e-5)
			require.Less(t, maxAbs(r.Pooled, wantPooled), 2e-5)
			require.Less(t, maxAbs(r.Projected, wantProj), 2e-5)
		})
	}
}

// A vision tower with another geometry (28-pixel images, 7-pixel patches,
// 17 positions, 1 layer, 2 heads) and no projections.
func TestVisionHyperparametersFromWeights(t *testing.T) {
	const S, PS, C, I = 28, 7, 128, 64
	const G = S / PS
	s := newRandomSet(9)
	p := "v.vision_model."
	s.add(t, p+"embeddings.class_embedding", 0.5, C)
	s.add(t, p+"embeddings.patch_embedding.weight", 0.1, C, 3, PS, PS)
	s.add(t, p+"embeddings.position_embedding.weight", 0.5, G*G+1, C)
	s.addAround(t, p+"pre_layrnorm.weight", 1, 0.3, C)
	s.add(t, p+"pre_layrnorm.bias", 0.1, C)
	s.addLayers(t, p, 1, C, I)
	s.addAround(t, p+"post_layernorm.weight", 1, 0.3, C)
	s.add(t, p+"post_layernorm.bias", 0.1, C)

	ctx := context.Background()
	rt := newRuntime(t)
	m, err := LoadVision(ctx, rt, s.set, "v.", VisionConfig{}, nil)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, VisionParams{ImageSize: S, PatchSize: PS, Positions: G*G + 1, Hidden: C, Heads: 2, Layers: 1, Intermediate: I}, m.Params)

	img := make([]float32, 3*S*S)
	for i := range img {
		img[i] = float32(s.r.NormFloat64())
	}
	r, err := m.Encode(ctx, rt, [][]float32{img})
	require.NoError(t, err)
	require.Nil(t, r.Projected)
	require.Nil(t, r.IDEmbeds())

	// float64 reference: patch embedding, class token, positions, pre-LN, layer.
	pw, cls, pos := s.f64(p+"embeddings.patch_embedding.weight"), s.f64(p+"embeddings.class_embedding"), s.f64(p+"embeddings.position_embedding.weight")
	x := make(mat, G*G+1)
	x[0] = make([]float64, C)
	for j := range x[0] {
		x[0][j] = cls[j] + pos[j]
	}
	for gy := 0; gy < G; gy++ {
		for gx := 0; gx < G; gx++ {
			row := make([]float64, C)
			for o := 0; o < C; o++ {
				acc := 0.0
				for ch := 0; ch < 3; ch++ {
					for ky := 0; ky < PS; ky++ {
						for kx := 0; kx < PS; kx++ {
							acc += pw[((o*3+ch)*PS+ky)*PS+kx] * float64(img[(ch*S+gy*PS+ky)*S+gx*PS+kx])
						}
					}
				}
				row[o] = acc + pos[(1+gy*G+gx)*C+o]
			}
			x[1+gy*G+gx] = row
		}
	}
	x = s.layer(s.layerNorm(x, p+"pre_layrnorm"), p+"encoder.layers.0.", 2, QuickGELU, false)
	require.Less(t, maxAbs(r.Last, flat(x)), 2e-5)
	require.Less(t, maxAbs(r.Pooled, flat(s.layerNorm(x[:1], p+"post_layernorm"))), 2e-5)
}

func TestLoadRejectsBadShapes(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	build := func(hidden, fc2In int64) *weights.Set {
		s := newRandomSet(3)
		s.add(t, "x.text_model.embeddings.token_embedding.weight", 0.5, 10, hidden)
		s.add(t, "x.text_model.embeddings.position_embedding.weight", 0.5, 4, hidden)
		s.addLayers(t, "x.text_model.", 1, hidden, 32)
		if fc2In != 32 {
			s.set.Replace("x.text_model.encoder.layers.0.mlp.fc2.weight",
				weights.NewTensor("x.text_model.encoder.layers.0.mlp.fc2.weight", safetensors.F32, []int64{hidden, fc2In}, "mem",
					func() ([]byte, error) { return make([]byte, 4*hidden*fc2In), nil }))
		}
		s.add(t, "x.text_model.final_layer_norm.weight", 0.3, hidden)
		s.add(t, "x.text_model.final_layer_norm.bias", 0.1, hidden)
		return s.set
	}
	_, err := LoadText(ctx, rt, build(64, 33), "x.", TextConfig{}, nil)
	require.ErrorContains(t, err, "x.text_model.encoder.layers.0.mlp.fc2.weight")
	_, err = LoadText(ctx, rt, build(96, 32), "x.", TextConfig{}, nil)
	require.ErrorContains(t, err, "not a multiple of the head width 64")
	_, err = LoadText(ctx, rt, build(64, 32), "y.", TextConfig{}, nil)
	require.ErrorIs(t, err, nn.ErrMissing)

	m, err := LoadText(ctx, rt, build(64, 32), "x.", TextConfig{}, nil)
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Encode(ctx, rt, [][]int{{1, 2, 3, 4, 5}})
	require.ErrorContains(t, err, "4 positions")
	_, err = m.Encode(ctx, rt, [][]int{{1, 10}})
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = m.Encode(ctx, rt, [][]int{{1, 2}, {1}})
	require.ErrorContains(t, err, "sequence 1 has 1 tokens")
	_, err = m.Encode(ctx, rt, nil)
	require.Error(t, err)
	m.Config.PoolToken = 7
	require.Equal(t, 2, m.PoolPosition([]int{9, 1, 7, 7}))
	require.Equal(t, 0, m.PoolPosition([]int{9, 1}))

	_, err = EncodeSDXL(ctx, rt, m, m, []int{1, 2}, []int{1, 2}, false)
	require.ErrorContains(t, err, "text_projection")
}
