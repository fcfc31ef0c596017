package imageproc

import (
	"bytes"
	"errors"
	"image"
	"image/gif"
	"image/jpeg"
	"testing"
)

func FuzzDecode(f *testing.F) {
	f.Add(readFace(f, "lfw_0"))
	f.Add(jpegWithOrientation(f, 6, false))
	f.Add(jpegWithOrientation(f, 3, true))
	f.Add(losslessWebP(3, 2, 1, 2, 3, 4, 5, []bool{true, false, true, false, true, false}))
	f.Add(pngHeader(30000, 30000))
	f.Add([]byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"))
	var buf bytes.Buffer
	_ = gif.Encode(&buf, image.NewPaletted(image.Rect(0, 0, 3, 3), nil), nil)
	f.Add(buf.Bytes())
	buf.Reset()
	_ = jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 9, 9)), nil)
	f.Add(buf.Bytes())
	f.Add([]byte("not an image"))

	limits := Limits{MaxSide: 1024, MaxPixels: 1 << 18}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = jpegOrientation(data)
		img, err := Decode(bytes.NewReader(data), limits)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrEmpty) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		b := img.Bounds()
		if b.Empty() || b.Dx() > limits.MaxSide || b.Dy() > limits.MaxSide || int64(b.Dx())*int64(b.Dy()) > limits.MaxPixels {
			t.Fatalf("accepted image with bounds %v", b)
		}
		r := ResizeBicubic(img, 7, 5)
		if r.Rect.Dx() != 7 || r.Rect.Dy() != 5 {
			t.Fatalf("resize gave %v", r.Rect)
		}
		if b.Dx()*b.Dy() <= 64*64 {
			if px := CLIPPixels(img); len(px) != 3*CLIPSize*CLIPSize {
				t.Fatalf("CLIPPixels gave %d values", len(px))
			}
		}
	})
}
