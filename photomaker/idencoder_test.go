package photomaker

import (
	"context"
	"fmt"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/stretchr/testify/require"
)

func loadIDEncoder(t *testing.T, rt *nn.Runtime, version int) *IDEncoder {
	t.Helper()
	m := openAdapter(t, version)
	e, err := LoadIDEncoder(context.Background(), rt, m.Tensors, "pm.", IDEncoderOptions{})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.Equal(t, Version(version), e.Version)
	return e
}

// Cases id_encoder_v1.n1/n2/n4 and id_encoder_v2.n1/n2/n4 end to end: golden
// pixel values (and v2 face embeddings), prompt embeddings before fusion
// and class-token mask in, updated prompt embeddings out.
func TestIDEncoderGolden(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	px := golden.Ref(t, "id_encoder_v1:id_pixel_values")
	faces := golden.Ref(t, "id_encoder_v2:id_embeds")
	per := 3 * 224 * 224
	for _, version := range []int{1, 2} {
		e := loadIDEncoder(t, rt, version)
		require.Equal(t, 128, e.Width())
		require.Equal(t, version, e.TokensPerImage())
		for _, n := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("v%d/n%d", version, n), func(t *testing.T) {
				c := golden.FindCase(t, fmt.Sprintf("id_encoder_v%d.n%d", version, n))
				ref := func(k string) string { return golden.String(t, c.Outputs[k]) }
				pe := golden.Ref(t, ref("prompt_embeds_before_fuse"))
				mask := maskBools(golden.Int64(t, ref("class_tokens_mask")))
				var ids [][]float32
				if version == 2 {
					for i := 0; i < n; i++ {
						ids = append(ids, faces.Data[i*512:(i+1)*512])
					}
				}
				got, err := e.Encode(ctx, rt, px.Data[:n*per], ids, pe.Data, mask)
				require.NoError(t, err)
				golden.AssertClose(t, "updated_prompt_embeds", got, golden.Ref(t, ref("updated_prompt_embeds")).Data, idTol, 0)
			})
		}
	}
}

func TestIDEncoderInputErrors(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	e1, e2 := loadIDEncoder(t, rt, 1), loadIDEncoder(t, rt, 2)
	px := make([]float32, 2*3*224*224)
	pe := make([]float32, 77*128)
	mask := make([]bool, 77)
	mask[5], mask[6] = true, true
	face := make([]float32, 512)

	_, err := e1.Encode(ctx, rt, px[:100], nil, pe, mask)
	require.ErrorIs(t, err, ErrIDInput)
	require.ErrorContains(t, err, "photos")
	_, err = e1.Encode(ctx, rt, px[:3*224*224], nil, pe, mask) // 1 photo, 2 rows
	require.ErrorContains(t, err, "1 photos need 1 class-word tokens")
	_, err = e1.Encode(ctx, rt, px, [][]float32{face, face}, pe, mask)
	require.ErrorContains(t, err, "v1 takes no face embeddings")
	_, err = e1.Encode(ctx, rt, px, nil, pe[:100], mask)
	require.ErrorIs(t, err, ErrIDInput)
	_, err = e1.EncodeRows(ctx, rt, px, nil, pe, []int{3, 3})
	require.ErrorContains(t, err, "repeated or outside")
	_, err = e1.EncodeRows(ctx, rt, px, nil, pe, []int{3, 77})
	require.ErrorContains(t, err, "repeated or outside")

	_, err = e2.Encode(ctx, rt, px[:3*224*224], nil, pe, mask)
	require.ErrorContains(t, err, "one face embedding per photo")
	_, err = e2.Encode(ctx, rt, px[:3*224*224], [][]float32{face[:10]}, pe, mask)
	require.ErrorContains(t, err, "face embedding 0 has 10 values")
	_, err = e2.Encode(ctx, rt, px, [][]float32{face, face}, pe, mask) // 2 photos need 4 rows
	require.ErrorContains(t, err, "need 4 class-word tokens")
}

func TestDetectVersion(t *testing.T) {
	for _, v := range []int{1, 2} {
		got, err := DetectVersion(openAdapter(t, v).Tensors, "pm.")
		require.NoError(t, err)
		require.Equal(t, Version(v), got)
		require.Equal(t, v, got.TokensPerImage())
	}
	_, err := DetectVersion(openAdapter(t, 1).Tensors, "nope.")
	require.ErrorIs(t, err, nn.ErrMissing)
}
