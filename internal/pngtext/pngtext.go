// Package pngtext writes PNG files with tEXt chunks, such as the
// A1111-style "parameters" chunk other tools read generation settings from,
// and writes them atomically (temporary file, then rename).
package pngtext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"os"
	"strings"

	"github.com/gophotomaker/photomaker/internal/atomicfile"
)

// Encode returns img as PNG bytes with one tEXt chunk per entry of text,
// placed right after the header chunk.
func Encode(img image.Image, text [][2]string) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	const sigAndIHDR = 8 + 4 + 4 + 13 + 4 // signature, IHDR length/type/data/crc
	if len(b) < sigAndIHDR || string(b[12:16]) != "IHDR" {
		return nil, errors.New("pngtext: unexpected PNG layout")
	}
	var out bytes.Buffer
	out.Write(b[:sigAndIHDR])
	for _, kv := range text {
		if err := writeText(&out, kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	out.Write(b[sigAndIHDR:])
	return out.Bytes(), nil
}

func writeText(w *bytes.Buffer, key, value string) error {
	if key == "" || len(key) > 79 || strings.ContainsRune(key, 0) {
		return fmt.Errorf("pngtext: invalid keyword %q", key)
	}
	// tEXt is Latin-1; keep ASCII and replace the rest so readers never choke.
	val := []byte(strings.Map(func(r rune) rune {
		if r == 0 {
			return ' '
		}
		if r > 0xff {
			return '?'
		}
		return r
	}, value))
	data := append(append([]byte(key), 0), latin1(val)...)
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], "tEXt")
	w.Write(hdr[:])
	w.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], crc.Sum32())
	w.Write(c[:])
	return nil
}

// latin1 converts UTF-8 bytes of runes ≤ 0xff to single bytes.
func latin1(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for _, r := range string(b) {
		out = append(out, byte(r))
	}
	return out
}

// Read returns the tEXt chunks of a PNG.
func Read(b []byte) (map[string]string, error) {
	if len(b) < 8 || string(b[1:4]) != "PNG" {
		return nil, errors.New("pngtext: not a PNG")
	}
	out := map[string]string{}
	for p := 8; p+12 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[p:]))
		if n < 0 || p+12+n > len(b) {
			return nil, errors.New("pngtext: truncated chunk")
		}
		typ := string(b[p+4 : p+8])
		if typ == "tEXt" {
			data := b[p+8 : p+8+n]
			if i := bytes.IndexByte(data, 0); i > 0 {
				rs := make([]rune, 0, len(data)-i-1)
				for _, c := range data[i+1:] {
					rs = append(rs, rune(c))
				}
				out[string(data[:i])] = string(rs)
			}
		}
		if typ == "IEND" {
			break
		}
		p += 12 + n
	}
	return out, nil
}

// WriteFile writes data to path through a temporary file in the same folder,
// so a crash or cancellation never leaves a half-written file. Unless
// overwrite is set, an existing file is an error.
func WriteFile(path string, data []byte, overwrite bool) error {
	if !overwrite {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s already exists (use --force to overwrite)", path)
		}
	}
	return atomicfile.WriteFile(path, data)
}
