//go:build unix

package torch

import (
	"os"
	"syscall"
)

func mmap(f *os.File, size int64) []byte {
	if size == 0 || int64(int(size)) != size {
		return nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil // fall back to ReadAt
	}
	return b
}

func munmap(b []byte) { _ = syscall.Munmap(b) }
