package imageproc

import (
	"image"
	"image/color"
)

// toNRGBA returns img as 8-bit non-premultiplied RGBA with bounds at the
// origin. Conversions follow Pillow's .convert("RGB"/"RGBA") where Go gives
// the information: gray replicates into R=G=B, palette entries are copied,
// 16-bit samples keep their high byte, and straight-alpha sources keep their
// colour values untouched. The result may share no memory with img.
func toNRGBA(img image.Image) *image.NRGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dst := image.NewNRGBA(image.Rect(0, 0, w, h))
	switch src := img.(type) {
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			si := src.PixOffset(b.Min.X, b.Min.Y+y)
			copy(dst.Pix[y*dst.Stride:y*dst.Stride+4*w], src.Pix[si:si+4*w])
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			si := src.PixOffset(b.Min.X, b.Min.Y+y)
			sp := src.Pix[si : si+4*w]
			d := dst.Pix[y*dst.Stride : y*dst.Stride+4*w]
			for x := 0; x < 4*w; x += 4 {
				r, g, bb, a := sp[x], sp[x+1], sp[x+2], sp[x+3]
				if a != 255 && a != 0 {
					c := color.NRGBAModel.Convert(color.RGBA{r, g, bb, a}).(color.NRGBA)
					r, g, bb = c.R, c.G, c.B
				} else if a == 0 {
					r, g, bb = 0, 0, 0
				}
				d[x], d[x+1], d[x+2], d[x+3] = r, g, bb, a
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			si := src.PixOffset(b.Min.X, b.Min.Y+y)
			d := dst.Pix[y*dst.Stride:]
			for x := 0; x < w; x++ {
				v := src.Pix[si+x]
				d[4*x], d[4*x+1], d[4*x+2], d[4*x+3] = v, v, v, 255
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			d := dst.Pix[y*dst.Stride:]
			for x := 0; x < w; x++ {
				yi := src.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := src.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bb := color.YCbCrToRGB(src.Y[yi], src.Cb[ci], src.Cr[ci])
				d[4*x], d[4*x+1], d[4*x+2], d[4*x+3] = r, g, bb, 255
			}
		}
	case *image.Paletted:
		pal := make([]color.NRGBA, 256)
		for i := range pal {
			if i < len(src.Palette) {
				pal[i] = color.NRGBAModel.Convert(src.Palette[i]).(color.NRGBA)
			} else {
				pal[i] = color.NRGBA{A: 255} // out-of-range index: opaque black
			}
		}
		for y := 0; y < h; y++ {
			si := src.PixOffset(b.Min.X, b.Min.Y+y)
			d := dst.Pix[y*dst.Stride:]
			for x := 0; x < w; x++ {
				c := pal[src.Pix[si+x]]
				d[4*x], d[4*x+1], d[4*x+2], d[4*x+3] = c.R, c.G, c.B, c.A
			}
		}
	default:
		for y := 0; y < h; y++ {
			d := dst.Pix[y*dst.Stride:]
			for x := 0; x < w; x++ {
				c := nrgbaOf(img.At(b.Min.X+x, b.Min.Y+y))
				d[4*x], d[4*x+1], d[4*x+2], d[4*x+3] = c.R, c.G, c.B, c.A
			}
		}
	}
	return dst
}

// nrgbaOf converts one colour to straight 8-bit RGBA, keeping the high byte
// of straight-alpha 16-bit colours instead of going through premultiplied
// values.
func nrgbaOf(c color.Color) color.NRGBA {
	switch c := c.(type) {
	case color.NRGBA:
		return c
	case color.NRGBA64:
		return color.NRGBA{uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8), uint8(c.A >> 8)}
	case color.Gray16:
		v := uint8(c.Y >> 8)
		return color.NRGBA{v, v, v, 255}
	}
	r, g, b, a := c.RGBA()
	if a == 0xffff {
		return color.NRGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 255}
	}
	return color.NRGBAModel.Convert(c).(color.NRGBA)
}

// opaque reports whether every alpha sample of m is 255.
func opaque(m *image.NRGBA) bool {
	for i := 3; i < len(m.Pix); i += 4 {
		if m.Pix[i] != 255 {
			return false
		}
	}
	return true
}

// ToRGB returns img as an opaque 8-bit image, dropping alpha the way
// Pillow's Image.convert("RGB") does (the colour samples are kept, nothing
// is composited onto a background).
func ToRGB(img image.Image) *image.NRGBA {
	m := toNRGBA(img)
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = 255
	}
	return m
}
