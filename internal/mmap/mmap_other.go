//go:build !unix

// Package mmap maps model files read-only; on this platform it never maps
// and callers use ReadAt.
package mmap

import "os"

// Map returns nil: no mapping on this platform.
func Map(*os.File, int64) []byte { return nil }

// Unmap does nothing.
func Unmap([]byte) {}
