//go:build unix

// Package mmap maps model files read-only so a tensor costs nothing until it
// is read; where mapping is unavailable callers fall back to ReadAt.
package mmap

import (
	"os"
	"syscall"
)

// Map maps size bytes of f read-only, or returns nil when it cannot.
func Map(f *os.File, size int64) []byte {
	if size == 0 || int64(int(size)) != size {
		return nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil
	}
	return b
}

// Unmap releases a mapping made by Map.
func Unmap(b []byte) { _ = syscall.Munmap(b) }
