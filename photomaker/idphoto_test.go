package photomaker

import (
	"image"
	"image/color"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/imageproc"
)

// A photo reduced by IDPhoto gives the ID encoder the very pixels the
// photo gives: every kind of image a decoder returns (alpha, gray, 16-bit,
// YCbCr, paletted, CMYK), landscape, portrait, smaller than 224, odd sizes.
func TestIDPhotoKeepsTheEncoderInput(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range [][2]int{{320, 240}, {301, 597}, {224, 224}, {100, 60}, {225, 223}, {1, 300}} {
		w, h := size[0], size[1]
		rect := image.Rect(0, 0, w, h)
		nrgba, gray16, rgba64 := image.NewNRGBA(rect), image.NewGray16(rect), image.NewRGBA64(rect)
		ycc, cmyk := image.NewYCbCr(rect, image.YCbCrSubsampleRatio420), image.NewCMYK(rect)
		pal := image.NewPaletted(rect, color.Palette{color.Black, color.White, color.NRGBA{200, 30, 90, 128}})
		for y := range h {
			for x := range w {
				nrgba.SetNRGBA(x, y, color.NRGBA{uint8(r.UintN(256)), uint8(r.UintN(256)), uint8(r.UintN(256)), uint8(r.UintN(256))})
				gray16.SetGray16(x, y, color.Gray16{uint16(r.UintN(65536))})
				rgba64.SetRGBA64(x, y, color.RGBA64{uint16(r.UintN(65536)), uint16(r.UintN(65536)), uint16(r.UintN(65536)), 65535})
				cmyk.SetCMYK(x, y, color.CMYK{uint8(r.UintN(256)), uint8(r.UintN(256)), uint8(r.UintN(256)), uint8(r.UintN(256))})
				pal.SetColorIndex(x, y, uint8(r.UintN(3)))
			}
		}
		for i := range ycc.Y {
			ycc.Y[i] = uint8(r.UintN(256))
		}
		for i := range ycc.Cb {
			ycc.Cb[i], ycc.Cr[i] = uint8(r.UintN(256)), uint8(r.UintN(256))
		}
		for name, img := range map[string]image.Image{"nrgba": nrgba, "gray16": gray16, "rgba64": rgba64, "ycbcr": ycc, "cmyk": cmyk, "paletted": pal} {
			small := IDPhoto(img)
			require.Equal(t, image.Rect(0, 0, 224, 224), small.Bounds(), "%s %dx%d", name, w, h)
			require.Equal(t, imageproc.CLIPPixels(img), imageproc.CLIPPixels(small), "%s %dx%d", name, w, h)
		}
	}
}
