package imageproc

import (
	"encoding/binary"
	"image"
)

// jpegOrientation returns the EXIF orientation (1..8) found in the APP1
// "Exif" segment of the JPEG stream b, or 1 when there is none or it cannot
// be parsed. Only the marker segments before the first SOS are scanned and
// every read is bounds checked, so malformed input is harmless.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 1
	}
	pos := 2
	for seg := 0; seg < 256 && pos+4 <= len(b); seg++ {
		if b[pos] != 0xFF {
			return 1
		}
		marker := b[pos+1]
		if marker == 0xFF { // fill byte
			pos++
			continue
		}
		switch {
		case marker == 0xDA || marker == 0xD9: // SOS, EOI: no more headers
			return 1
		case marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7): // no length
			pos += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(b[pos+2:]))
		if n < 2 {
			return 1
		}
		end := pos + 2 + n
		if marker == 0xE1 {
			data := b[pos+4 : min(end, len(b))]
			if len(data) >= 6 && string(data[:6]) == "Exif\x00\x00" {
				if o := tiffOrientation(data[6:]); o != 0 {
					return o
				}
			}
		}
		pos = end
	}
	return 1
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF structure; 0 if absent
// or invalid.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > int64(len(t)) {
		return 0
	}
	count := int(bo.Uint16(t[ifd:]))
	for i := 0; i < count && i < 1024; i++ {
		e := int(ifd) + 2 + 12*i
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		var v int
		switch typ, n := bo.Uint16(t[e+2:]), bo.Uint32(t[e+4:]); {
		case typ == 3 && n >= 1: // SHORT, stored left-justified in the value field
			v = int(bo.Uint16(t[e+8:]))
		case typ == 4 && n >= 1: // LONG (non-standard but seen in the wild)
			v = int(bo.Uint32(t[e+8:]))
		default:
			return 0
		}
		if v >= 1 && v <= 8 {
			return v
		}
		return 0
	}
	return 0
}

// applyOrientation transforms img so that it displays upright, following the
// EXIF orientation o (the same mapping as Pillow's ImageOps.exif_transpose:
// 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse, 8 rotate 90 counter-clockwise).
func applyOrientation(img image.Image, o int) image.Image {
	if o < 2 || o > 8 {
		return img
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	src := toNRGBA(img)

	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	dst := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			// (sx, sy): the source pixel shown at (x, y).
			var sx, sy int
			switch o {
			case 2:
				sx, sy = w-1-x, y
			case 3:
				sx, sy = w-1-x, h-1-y
			case 4:
				sx, sy = x, h-1-y
			case 5:
				sx, sy = y, x
			case 6:
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8:
				sx, sy = w-1-y, x
			}
			copy(dst.Pix[y*dst.Stride+4*x:y*dst.Stride+4*x+4], src.Pix[sy*src.Stride+4*sx:sy*src.Stride+4*sx+4])
		}
	}
	return dst
}
