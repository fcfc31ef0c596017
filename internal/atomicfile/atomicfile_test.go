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
