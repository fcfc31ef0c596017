// Package imageproc loads ID photos and turns them into the tensors the
// PhotoMaker pipeline consumes: CLIP pixel values (CLIPImageProcessor
// semantics, with bit-exact reimplementations of torchvision's and Pillow's
// 8-bit bicubic resize), VAE inputs in [-1,1], and decoded VAE outputs back
// to 8-bit images the way diffusers does.
package imageproc

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"io"
	"os"

	// Registered decoders: PNG, JPEG, GIF (first frame) and WebP.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/webp"
)

// Limits bounds the images Decode accepts. The header is checked before any
// pixel is decoded, so a small file that claims a huge canvas is refused
// without allocating it. Zero fields take the defaults.
type Limits struct {
	// MaxSide is the largest accepted width or height (default 16384).
	MaxSide int
	// MaxPixels is the largest accepted width×height (default 100 megapixels).
	MaxPixels int64
}

// Default limits.
const (
	DefaultMaxSide   = 16384
	DefaultMaxPixels = 100_000_000
)

// DefaultLimits are the limits used when a Limits field is zero.
var DefaultLimits = Limits{MaxSide: DefaultMaxSide, MaxPixels: DefaultMaxPixels}

func (l Limits) withDefaults() Limits {
	if l.MaxSide <= 0 {
		l.MaxSide = DefaultMaxSide
	}
	if l.MaxPixels <= 0 {
		l.MaxPixels = DefaultMaxPixels
	}
	return l
}

// Errors returned (wrapped) by Decode; test them with errors.Is.
var (
	// ErrFormat: the data is not a PNG, JPEG, WebP or GIF image.
	ErrFormat = errors.New("unsupported image format")
	// ErrTooLarge: the header announces a size beyond the Limits.
	ErrTooLarge = errors.New("image too large")
	// ErrEmpty: the header announces a zero-sized image.
	ErrEmpty = errors.New("empty image")
	// ErrCorrupt: the header was recognised but the image could not be decoded.
	ErrCorrupt = errors.New("corrupt image")
)

// Decode reads a PNG, JPEG, WebP or GIF (first frame) image. The size in the
// header is checked against limits before the pixels are decoded. JPEG EXIF
// orientation is applied, so the result is upright as viewers show it.
func Decode(r io.Reader, limits Limits) (image.Image, error) {
	return decodeNamed(r, "image data", limits)
}

// DecodeFile is Decode on the named file; errors name the file.
func DecodeFile(path string, limits Limits) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeNamed(f, path, limits)
}

// maxHeaderBytes bounds how much of the stream is kept for the header pass
// (DecodeConfig stops at the frame header; EXIF sits before it in JPEG).
const maxHeaderBytes = 1 << 20

func decodeNamed(r io.Reader, name string, limits Limits) (image.Image, error) {
	limits = limits.withDefaults()

	// Header pass: remember what DecodeConfig consumed so that the pixel pass
	// can replay it followed by the rest of the stream.
	var head bytes.Buffer
	cfg, format, err := image.DecodeConfig(io.TeeReader(r, &head))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return nil, fmt.Errorf("%s is not a PNG, JPEG, WebP or GIF image: %w", name, ErrFormat)
		}
		return nil, fmt.Errorf("%s: cannot read image header: %w (%v)", name, ErrCorrupt, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%s: %s image is %d×%d: %w", name, format, cfg.Width, cfg.Height, ErrEmpty)
	}
	if cfg.Width > limits.MaxSide || cfg.Height > limits.MaxSide ||
		int64(cfg.Width)*int64(cfg.Height) > limits.MaxPixels {
		return nil, fmt.Errorf("%s: %s image is %d×%d (%.1f megapixels), limit is %d per side and %.1f megapixels: %w",
			name, format, cfg.Width, cfg.Height, float64(cfg.Width)*float64(cfg.Height)/1e6,
			limits.MaxSide, float64(limits.MaxPixels)/1e6, ErrTooLarge)
	}

	orientation := 1
	if format == "jpeg" {
		hb := head.Bytes()
		if len(hb) > maxHeaderBytes {
			hb = hb[:maxHeaderBytes]
		}
		orientation = jpegOrientation(hb)
	}

	img, gotFormat, err := image.Decode(io.MultiReader(bytes.NewReader(head.Bytes()), r))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot decode %s image (%d×%d): %w (%v)", name, format, cfg.Width, cfg.Height, ErrCorrupt, err)
	}
	if gotFormat != format {
		return nil, fmt.Errorf("%s: format changed between header (%s) and decode (%s): %w", name, format, gotFormat, ErrCorrupt)
	}
	// A GIF's first frame may be smaller than its logical screen; never
	// larger than what the header check accepted.
	if b := img.Bounds(); b.Dx() > cfg.Width || b.Dy() > cfg.Height || b.Empty() {
		return nil, fmt.Errorf("%s: decoded %d×%d but the header says %d×%d: %w", name, b.Dx(), b.Dy(), cfg.Width, cfg.Height, ErrCorrupt)
	}
	return applyOrientation(img, orientation), nil
}
