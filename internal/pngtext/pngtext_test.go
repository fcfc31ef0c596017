package pngtext

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEncodeReadRoundTrip(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	img.Set(1, 1, color.NRGBA{10, 20, 30, 255})
	b, err := Encode(img, [][2]string{{"parameters", "a photo of a man img\nSteps: 50, Seed: 42, café"}})
	require.NoError(t, err)
	// Still a valid PNG with the same pixels.
	back, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, color.NRGBA{10, 20, 30, 255}, color.NRGBAModel.Convert(back.At(1, 1)))
	text, err := Read(b)
	require.NoError(t, err)
	require.Equal(t, "a photo of a man img\nSteps: 50, Seed: 42, café", text["parameters"])
}

func TestWriteFileNoOverwrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.png")
	require.NoError(t, WriteFile(p, []byte("one"), false))
	require.ErrorContains(t, WriteFile(p, []byte("two"), false), "already exists")
	require.NoError(t, WriteFile(p, []byte("two"), true))
	b, _ := os.ReadFile(p)
	require.Equal(t, "two", string(b))
	entries, _ := os.ReadDir(filepath.Dir(p))
	require.Len(t, entries, 1, "no temporary files left behind")
}
