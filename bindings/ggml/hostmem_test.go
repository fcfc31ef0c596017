package ggml

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeRoot writes files (path → content) under a temporary root.
func fakeRoot(t *testing.T, files map[string]string) string {
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return root
}

func TestHostMemory(t *testing.T) {
	const meminfo = "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n"
	const gib = 1 << 30
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  uint64
		ok    bool
	}{
		{"meminfo only", map[string]string{"proc/meminfo": meminfo}, 8000000 * 1024, true},
		{"cgroup v2 limit below MemAvailable (page cache does not count)", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/job\n",
			"sys/fs/cgroup/job/memory.max":     "4294967296\n",
			"sys/fs/cgroup/job/memory.current": "3221225472\n",
			"sys/fs/cgroup/job/memory.stat":    "anon 1\ninactive_file 1073741824\nactive_file 5\n",
		}, 2 * gib, true},
		{"cgroup v2 without a limit", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "max\n",
		}, 8000000 * 1024, true},
		{"cgroup v1 seen at the mount's root (a container)", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "5:cpu:/\n4:memory:/docker/abc\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "3221225472\n",
			"sys/fs/cgroup/memory/memory.usage_in_bytes": "1073741824\n",
			"sys/fs/cgroup/memory/memory.stat":           "inactive_file 99\ntotal_inactive_file 0\n",
		}, 2 * gib, true},
		{"cgroup v1 unlimited", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "4:memory:/x\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 8000000 * 1024, true},
		{"over the limit", map[string]string{
			"proc/self/cgroup":             "0::/\n",
			"sys/fs/cgroup/memory.max":     "1000\n",
			"sys/fs/cgroup/memory.current": "2000\n",
		}, 0, true},
		{"nothing known", map[string]string{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := hostMemoryAt(fakeRoot(t, tc.files))
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}
	// This machine: known on Linux, and never more than MemAvailable.
	if avail, ok := memAvailable("/proc/meminfo"); ok {
		got, ok := availableHostMemory()
		require.True(t, ok)
		require.LessOrEqual(t, got, avail)
	}
}
