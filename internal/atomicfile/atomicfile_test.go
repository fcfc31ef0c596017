package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.bin")
	f, err := Create(p)
	require.NoError(t, err)
	f.Write([]byte("half"))
	_, err = os.Stat(p)
	require.True(t, os.IsNotExist(err), "nothing visible before Commit")
	f.Abort()
	entries, _ := os.ReadDir(dir)
	require.Empty(t, entries, "Abort leaves nothing behind")

	require.NoError(t, WriteFile(p, []byte("whole")))
	b, _ := os.ReadFile(p)
	require.Equal(t, "whole", string(b))
	st, _ := os.Stat(p)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	entries, _ = os.ReadDir(dir)
	require.Len(t, entries, 1)
}

// Errors name the destination, not the temporary file the user never gave.
func TestErrorsNameDestination(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "missing", "x.png")
	err := WriteFile(p, []byte("x"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.EqualError(t, err, "cannot write "+p+": no such file or directory")

	// A folder in the way fails at the rename.
	p = filepath.Join(dir, "taken")
	require.NoError(t, os.MkdirAll(filepath.Join(p, "inside"), 0o755))
	err = WriteFile(p, []byte("x"))
	require.ErrorContains(t, err, "cannot write "+p+": ")
	require.NotContains(t, err.Error(), ".tmp")
	entries, _ := os.ReadDir(dir)
	require.Len(t, entries, 1, "the temporary file is removed")
}
