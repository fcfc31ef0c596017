package imageproc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
)

func readFace(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(golden.Path("faces/" + name + ".png"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodePNG(t *testing.T) {
	img, err := Decode(bytes.NewReader(readFace(t, "astronaut_3")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 240 || b.Dy() != 300 {
		t.Fatalf("bounds %v", b)
	}
}

func TestDecodeGIFFirstFrame(t *testing.T) {
	pal := color.Palette{color.NRGBA{0, 0, 0, 255}, color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 255}}
	f1 := image.NewPaletted(image.Rect(0, 0, 4, 3), pal)
	f2 := image.NewPaletted(image.Rect(0, 0, 4, 3), pal)
	for i := range f1.Pix {
		f1.Pix[i], f2.Pix[i] = 1, 2
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, &gif.GIF{Image: []*image.Paletted{f1, f2}, Delay: []int{0, 0}}); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 4 || b.Dy() != 3 {
		t.Fatalf("bounds %v", b)
	}
	if c := nrgbaOf(img.At(1, 1)); c != (color.NRGBA{255, 0, 0, 255}) {
		t.Fatalf("first frame pixel %v, want red", c)
	}
	if c := nrgbaOf(ToRGB(img).At(2, 2)); c != (color.NRGBA{255, 0, 0, 255}) {
		t.Fatalf("ToRGB pixel %v", c)
	}
}

// bitWriter writes the LSB-first bit stream of a lossless WebP (VP8L).
type bitWriter struct {
	buf   []byte
	nbits uint
}

func (w *bitWriter) write(v uint32, n uint) {
	for i := uint(0); i < n; i++ {
		if w.nbits%8 == 0 {
			w.buf = append(w.buf, 0)
		}
		if v>>i&1 != 0 {
			w.buf[len(w.buf)-1] |= 1 << (w.nbits % 8)
		}
		w.nbits++
	}
}

// simpleCode writes a VP8L "simple" prefix code with one or two 8-bit
// symbols (one symbol: zero bits per use; two: one bit, first symbol = 0).
func (w *bitWriter) simpleCode(syms ...uint32) {
	w.write(1, 1) // simple code
	w.write(uint32(len(syms)-1), 1)
	w.write(1, 1) // first symbol uses 8 bits
	for _, s := range syms {
		w.write(s, 8)
	}
}

// losslessWebP builds a w×h VP8L image whose green channel takes value g0
// or g1 per pixel (pattern[i] selects), with fixed red, blue and alpha.
// It exercises the real x/image/webp decoder without external tools.
func losslessWebP(w, h int, r, g0, g1, b, a uint8, pattern []bool) []byte {
	var bw bitWriter
	bw.write(0x2f, 8)
	bw.write(uint32(w-1), 14)
	bw.write(uint32(h-1), 14)
	bw.write(1, 1)                        // alpha is used
	bw.write(0, 3)                        // version
	bw.write(0, 1)                        // no transform
	bw.write(0, 1)                        // no color cache
	bw.write(0, 1)                        // no meta prefix codes
	bw.simpleCode(uint32(g0), uint32(g1)) // green (+ length prefixes)
	bw.simpleCode(uint32(r))
	bw.simpleCode(uint32(b))
	bw.simpleCode(uint32(a))
	bw.simpleCode(0) // distance
	for _, p := range pattern {
		if p {
			bw.write(1, 1)
		} else {
			bw.write(0, 1)
		}
	}
	data := bw.buf
	var out bytes.Buffer
	chunk := len(data) + len(data)%2
	out.WriteString("RIFF")
	binary.Write(&out, binary.LittleEndian, uint32(4+8+chunk))
	out.WriteString("WEBPVP8L")
	binary.Write(&out, binary.LittleEndian, uint32(len(data)))
	out.Write(data)
	if len(data)%2 == 1 {
		out.WriteByte(0)
	}
	return out.Bytes()
}

func TestDecodeWebP(t *testing.T) {
	pattern := []bool{false, true, true, false, false, true} // 3×2
	data := losslessWebP(3, 2, 10, 20, 200, 30, 255, pattern)
	img, err := Decode(bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 3 || b.Dy() != 2 {
		t.Fatalf("bounds %v", b)
	}
	for i, p := range pattern {
		want := color.NRGBA{10, 20, 30, 255}
		if p {
			want.G = 200
		}
		if c := nrgbaOf(img.At(i%3, i/3)); c != want {
			t.Fatalf("pixel %d = %v, want %v", i, c, want)
		}
	}

	// Truncated WebP: the header is fine but the pixel data is cut.
	for _, n := range []int{len(data) - 2, 25, 21, 12} {
		_, err := Decode(bytes.NewReader(data[:n]), Limits{})
		if err == nil {
			t.Fatalf("truncated WebP (%d of %d bytes) decoded without error", n, len(data))
		}
	}
	// Truncated just after the VP8L header: recognised, refused cleanly.
	if _, err := Decode(bytes.NewReader(data[:25]), Limits{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated WebP: %v, want ErrCorrupt", err)
	}
}

// jpegWithOrientation encodes a 32×16 black image with a white 8×8 block
// at the stored top-left and inserts an APP1 Exif segment holding the
// orientation tag (little- or big-endian TIFF).
func jpegWithOrientation(t testing.TB, o int, bigEndian bool) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 32, 16))
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			img.Pix[y*img.Stride+x] = 255
		}
	}
	var enc bytes.Buffer
	if err := jpeg.Encode(&enc, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	var bo interface {
		binary.ByteOrder
		binary.AppendByteOrder
	} = binary.LittleEndian
	tiff := []byte("II")
	if bigEndian {
		bo, tiff = binary.BigEndian, []byte("MM")
	}
	tiff = bo.AppendUint16(tiff, 42)
	tiff = bo.AppendUint32(tiff, 8)
	tiff = bo.AppendUint16(tiff, 2) // two entries: an unrelated one first
	tiff = bo.AppendUint16(tiff, 0x010F)
	tiff = bo.AppendUint16(tiff, 2) // ASCII "Go\0" fits inline
	tiff = bo.AppendUint32(tiff, 3)
	tiff = append(tiff, 'G', 'o', 0, 0)
	tiff = bo.AppendUint16(tiff, 0x0112)
	tiff = bo.AppendUint16(tiff, 3) // SHORT
	tiff = bo.AppendUint32(tiff, 1)
	tiff = bo.AppendUint16(tiff, uint16(o))
	tiff = append(tiff, 0, 0)
	tiff = bo.AppendUint32(tiff, 0) // no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff...)
	app1 := []byte{0xFF, 0xE1}
	app1 = binary.BigEndian.AppendUint16(app1, uint16(len(payload)+2))
	app1 = append(app1, payload...)
	src := enc.Bytes()
	out := append([]byte{}, src[:2]...)
	out = append(out, app1...)
	return append(out, src[2:]...)
}

func TestEXIFOrientation(t *testing.T) {
	// Where the stored top-left white block ends up, as (column, row) of
	// the 8×8 block grid of the upright image, and the upright size.
	cases := []struct {
		o          int
		w, h       int
		bx, by     int
		bigEndian  bool
		orientName string
	}{
		{1, 32, 16, 0, 0, false, "normal"},
		{2, 32, 16, 3, 0, false, "mirror"},
		{3, 32, 16, 3, 1, true, "rotate 180"},
		{4, 32, 16, 0, 1, false, "flip"},
		{5, 16, 32, 0, 0, true, "transpose"},
		{6, 16, 32, 1, 0, false, "rotate 90 cw"},
		{7, 16, 32, 1, 3, false, "transverse"},
		{8, 16, 32, 0, 3, true, "rotate 90 ccw"},
	}
	for _, c := range cases {
		data := jpegWithOrientation(t, c.o, c.bigEndian)
		if got := jpegOrientation(data); got != c.o {
			t.Fatalf("orientation %d parsed as %d", c.o, got)
		}
		img, err := Decode(bytes.NewReader(data), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", c.orientName, err)
		}
		b := img.Bounds()
		if b.Dx() != c.w || b.Dy() != c.h {
			t.Fatalf("%s: size %dx%d, want %dx%d", c.orientName, b.Dx(), b.Dy(), c.w, c.h)
		}
		m := toNRGBA(img)
		for by := 0; by < c.h/8; by++ {
			for bx := 0; bx < c.w/8; bx++ {
				sum := 0
				for y := 0; y < 8; y++ {
					for x := 0; x < 8; x++ {
						sum += int(m.Pix[(by*8+y)*m.Stride+4*(bx*8+x)])
					}
				}
				white := sum/64 > 128
				if white != (bx == c.bx && by == c.by) {
					t.Fatalf("%s: block (%d,%d) mean %d", c.orientName, bx, by, sum/64)
				}
			}
		}
	}
}

func TestEXIFMalformed(t *testing.T) {
	good := jpegWithOrientation(t, 6, false)
	// Corrupt the TIFF magic, the IFD offset and the segment length: the
	// orientation falls back to 1 and decoding still works or fails
	// cleanly, never panics.
	for _, mut := range []func([]byte){
		func(b []byte) { b[12] = 'X' },               // TIFF byte order
		func(b []byte) { b[16], b[17] = 0xFF, 0xFF }, // IFD0 offset
		func(b []byte) { b[4], b[5] = 0x00, 0x01 },   // APP1 length < 2
		func(b []byte) { b[4], b[5] = 0xFF, 0xFF },   // APP1 length past the end
		func(b []byte) { b[20], b[21] = 0xFF, 0xFF }, // entry count huge
		func(b []byte) { b[42], b[43] = 9, 0 },       // orientation value 9
	} {
		b := append([]byte(nil), good...)
		mut(b)
		_ = jpegOrientation(b)
		_, _ = Decode(bytes.NewReader(b), Limits{})
	}
	for _, b := range [][]byte{nil, {0xFF}, {0xFF, 0xD8}, {0xFF, 0xD8, 0xFF, 0xE1, 0, 8, 'E', 'x', 'i', 'f'}} {
		if o := jpegOrientation(b); o != 1 {
			t.Fatalf("jpegOrientation(%x) = %d", b, o)
		}
	}
}

// pngHeader returns a PNG signature and a valid IHDR chunk claiming w×h.
func pngHeader(w, h uint32) []byte {
	out := []byte("\x89PNG\r\n\x1a\n")
	ihdr := []byte("IHDR")
	ihdr = binary.BigEndian.AppendUint32(ihdr, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 2, 0, 0, 0) // 8-bit RGB, no interlace
	out = binary.BigEndian.AppendUint32(out, 13)
	out = append(out, ihdr...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(ihdr))
}

// hugeReader serves a PNG header claiming 30000×30000 followed by an
// endless IDAT-like stream; decoding the pixels would need 3.6 GB and
// read forever, so passing this test proves the size is checked first.
type hugeReader struct {
	head []byte
	read int
}

func (r *hugeReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if r.read < len(r.head) {
			c := copy(p[n:], r.head[r.read:])
			n += c
			r.read += c
			continue
		}
		p[n] = 0
		n++
		r.read++
	}
	if r.read > 64<<20 {
		return n, errors.New("test reader: read far past the header")
	}
	return n, nil
}

func TestSizeLimitBeforeDecode(t *testing.T) {
	_, err := Decode(&hugeReader{head: pngHeader(30000, 30000)}, Limits{})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("30000×30000 PNG: %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "30000×30000") || !strings.Contains(err.Error(), "16384") {
		t.Fatalf("error does not name the size and limit: %v", err)
	}

	// Megapixel limit: 12000×10000 fits per side but is 120 MP.
	if _, err := Decode(bytes.NewReader(pngHeader(12000, 10000)), Limits{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("120 MP PNG: %v, want ErrTooLarge", err)
	}
	// Custom limits on a real file, with the file named in the error.
	path := golden.Path("faces/astronaut_0.png")
	_, err = DecodeFile(path, Limits{MaxSide: 200})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "256×256") {
		t.Fatalf("MaxSide 200: %v", err)
	}
	if _, err := DecodeFile(path, Limits{MaxPixels: 256*256 - 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxPixels: %v", err)
	}
	if _, err := DecodeFile(path, Limits{MaxSide: 256, MaxPixels: 256 * 256}); err != nil {
		t.Fatalf("exact limits: %v", err)
	}
}

func TestZeroSize(t *testing.T) {
	// A GIF whose logical screen is 0×0.
	g := []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;")
	if _, err := Decode(bytes.NewReader(g), Limits{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("0×0 GIF: %v, want ErrEmpty", err)
	}
	// A PNG claiming 0×0 is refused by the PNG header parser itself.
	if _, err := Decode(bytes.NewReader(pngHeader(0, 0)), Limits{}); err == nil {
		t.Fatal("0×0 PNG accepted")
	}
}

func TestCorruptData(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(path, []byte("this is not an image at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := DecodeFile(path, Limits{})
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("text file: %v, want ErrFormat", err)
	}
	if want := path + " is not a PNG, JPEG, WebP or GIF image"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if _, err := Decode(bytes.NewReader(nil), Limits{}); !errors.Is(err, ErrFormat) {
		t.Fatalf("empty input: %v", err)
	}
	if _, err := DecodeFile(filepath.Join(dir, "missing.png"), Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}

	// Truncated PNG: header readable, pixel data cut.
	face := readFace(t, "astronaut_0")
	_, err = Decode(bytes.NewReader(face[:len(face)/2]), Limits{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "256×256") {
		t.Fatalf("truncated PNG: %v, want ErrCorrupt naming the size", err)
	}
	// Flipped bits inside the compressed data.
	bad := append([]byte(nil), face...)
	for i := len(bad) / 3; i < len(bad)/3+64; i++ {
		bad[i] ^= 0x5a
	}
	if _, err := Decode(bytes.NewReader(bad), Limits{}); err == nil {
		t.Fatal("corrupted PNG decoded without error")
	}
	// Truncated JPEG.
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 64, 64)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(bytes.NewReader(buf.Bytes()[:buf.Len()/2]), Limits{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated JPEG: %v", err)
	}
	// Header only.
	if _, err := Decode(bytes.NewReader(pngHeader(10, 10)), Limits{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PNG header without data: %v", err)
	}
}

func TestDecodeRoundTripPNG(t *testing.T) {
	// Straight-alpha values survive decode (no premultiplication round trip).
	m := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	copy(m.Pix, []uint8{200, 100, 50, 3, 1, 2, 3, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got := toNRGBA(img)
	if !bytes.Equal(got.Pix, m.Pix) {
		t.Fatalf("pixels %v, want %v", got.Pix, m.Pix)
	}
	if rgb := ToRGB(img); !bytes.Equal(rgb.Pix, []uint8{200, 100, 50, 255, 1, 2, 3, 255}) {
		t.Fatalf("ToRGB %v", rgb.Pix)
	}
}
