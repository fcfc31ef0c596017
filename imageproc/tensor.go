package imageproc

import (
	"fmt"
	"image"
	"math"
)

// ToRGBFloatCHW converts img to the VAE encoder's input: RGB (alpha dropped
// as convert("RGB") does), CHW float32 in [-1,1], value = 2·(v/255) − 1
// (diffusers' VaeImageProcessor: pil_to_numpy divides by 255 in float32,
// normalize computes 2·x − 1).
func ToRGBFloatCHW(img image.Image) []float32 {
	m := ToRGB(img)
	w, h := m.Rect.Dx(), m.Rect.Dy()
	out := make([]float32, 3*w*h)
	var lut [256]float32
	for v := range lut {
		x := float32(v) / 255
		lut[v] = float32(2*x) - 1 // explicit rounding: no fused multiply-add
	}
	for y := 0; y < h; y++ {
		row := m.Pix[y*m.Stride:]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				out[c*w*h+y*w+x] = lut[row[4*x+c]]
			}
		}
	}
	return out
}

// FromFloatCHW converts a decoded image (CHW float32, 3 planes of w×h, values
// nominally in [-1,1]) to 8-bit the way diffusers' VaeImageProcessor
// postprocess + numpy_to_pil does: x/2 + 0.5 clamped to [0,1], times 255,
// rounded half to even (numpy .round()), cast to uint8. NaN maps to 0.
func FromFloatCHW(data []float32, w, h int) *image.NRGBA {
	if w <= 0 || h <= 0 || len(data) != 3*w*h {
		panic(fmt.Sprintf("imageproc.FromFloatCHW: %d values for 3×%d×%d", len(data), h, w))
	}
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		row := m.Pix[y*m.Stride:]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				row[4*x+c] = toUint8(data[c*w*h+y*w+x])
			}
			row[4*x+3] = 255
		}
	}
	return m
}

func toUint8(x float32) uint8 {
	v := x/2 + 0.5
	if !(v > 0) { // also NaN
		v = 0
	}
	if v > 1 {
		v = 1
	}
	return uint8(math.RoundToEven(float64(v * 255)))
}
