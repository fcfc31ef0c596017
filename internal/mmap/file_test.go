package mmap

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, []byte("0123456789"), 0o644))
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, int64(10), f.Size())
	b, err := f.Slice(3, 4)
	require.NoError(t, err)
	require.Equal(t, "3456", string(b))
	_, err = f.Slice(8, 4)
	require.ErrorContains(t, err, "outside")
	buf := make([]byte, 4)
	n, err := f.ReadAt(buf, 8)
	require.Equal(t, 2, n)
	require.ErrorIs(t, err, io.EOF)
	_, err = Open(filepath.Dir(p))
	require.ErrorContains(t, err, "folder")
}
