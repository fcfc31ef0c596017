//go:build !linux

package mmap

// Releaser does nothing where /proc/self/maps and madvise are unavailable.
type Releaser struct{}

// NewReleaser returns a no-op Releaser.
func NewReleaser(...string) *Releaser { return &Releaser{} }

// After does nothing.
func (*Releaser) After(int64) {}

// Release does nothing.
func (*Releaser) Release() {}
