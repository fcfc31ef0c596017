package mmap

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// residentKB sums the Rss of this process's mappings of path.
func residentKB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	kb, ours := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"): // a mapping's header
			ours = len(fields) >= 6 && strings.Join(fields[5:], " ") == path
		case ours && len(fields) >= 2 && fields[0] == "Rss:":
			n, err := strconv.Atoi(fields[1])
			require.NoError(t, err)
			kb += n
		}
	}
	return kb
}

// Pages read through a mapping count in RSS until the Releaser drops them;
// the data stays readable (faulted back in from the page cache).
func TestReleaserDropsResidentPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weights.bin")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(t, os.WriteFile(path, data, 0o644))
	m, err := Open(path)
	require.NoError(t, err)
	defer m.Close()
	b, err := m.Slice(0, int64(len(data)))
	require.NoError(t, err)
	sum := 0
	for i := 0; i < len(b); i += 4096 {
		sum += int(b[i])
	}
	require.Greater(t, residentKB(t, path), 4<<10, "read pages are resident")

	r := NewReleaser(filepath.Dir(path)) // a folder covers its files
	r.After(1 << 20)                     // below the threshold: nothing yet
	require.Greater(t, residentKB(t, path), 4<<10)
	r.Release()
	require.Zero(t, residentKB(t, path))
	again := 0
	for i := 0; i < len(b); i += 4096 {
		again += int(b[i])
	}
	require.Equal(t, sum, again)

	NewReleaser(filepath.Join(t.TempDir(), "other")).Release() // other files: untouched
}
