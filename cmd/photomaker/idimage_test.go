package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// pngClaiming writes a PNG whose header claims w×h pixels (the pixel data is
// that of a 1×1 image, so decoding it would fail late, if ever reached).
func pngClaiming(t *testing.T, w, h uint32) string {
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 1, 1))))
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	p := filepath.Join(t.TempDir(), "claim.png")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func TestIDImagesRefusedBeforeDecoding(t *testing.T) {
	for _, c := range []struct {
		w, h uint32
		want string
	}{{30000, 30000, "30000"}, {0, 0, "0"}} {
		path := pngClaiming(t, c.w, c.h)
		out := filepath.Join(t.TempDir(), "x.png")
		code, _, errOut := runCLI(t, "generate", "--model", golden.Path("tiny-sdxl.safetensors"),
			"--photomaker", golden.Path("photomaker/photomaker-v1-tiny.safetensors"), "--id-image", path,
			"--prompt", "a photo of a man img", "--device", "cpu", "-o", out)
		require.Equal(t, 1, code, errOut)
		require.Contains(t, errOut, "claim.png")
		require.Contains(t, errOut, c.want)
		_, err := os.Stat(out)
		require.True(t, os.IsNotExist(err), "no output file")
	}
}
