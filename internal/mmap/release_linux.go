package mmap

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Releaser keeps a pass over a model larger than RAM (converting it, or
// uploading it to a GPU) from keeping it all resident: the inputs are
// memory-mapped, and pages of a file mapping that have been read count in
// the process's RSS until the kernel needs the memory. Every releaseEvery
// bytes it drops this process's pages of the inputs' mappings (MADV_DONTNEED
// on a read-only file mapping only unmaps; the data stays in the page cache
// and is faulted back in if read again).
type Releaser struct {
	inputs []string // absolute paths; a folder covers the files inside it
	read   int64
}

const releaseEvery = 64 << 20

// NewReleaser watches the mappings of the given files or folders.
func NewReleaser(paths ...string) *Releaser {
	r := &Releaser{}
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				abs = real
			}
			r.inputs = append(r.inputs, abs)
		}
	}
	return r
}

func (r *Releaser) covers(path string) bool {
	for _, in := range r.inputs {
		if path == in || strings.HasPrefix(path, in+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// After notes n bytes read and releases the mappings once enough were.
func (r *Releaser) After(n int64) {
	r.read += n
	if r.read >= releaseEvery {
		r.Release()
	}
}

// Release drops the inputs' resident pages now (at the end of a pass).
func (r *Releaser) Release() {
	r.read = 0
	if len(r.inputs) == 0 {
		return
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode pathname
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[1], "r") || strings.Contains(fields[1], "w") || !r.covers(strings.Join(fields[5:], " ")) {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		madviseDontNeed(uintptr(start), uintptr(end-start))
	}
}

// madviseDontNeed calls madvise(2) on a range of a read-only file mapping.
func madviseDontNeed(addr, length uintptr) {
	syscall.Syscall(syscall.SYS_MADVISE, addr, length, uintptr(syscall.MADV_DONTNEED))
}
