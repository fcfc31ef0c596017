//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package ggml

// addressSpaceRoom: no address-space limit is known here.
func addressSpaceRoom() (room uint64, limited bool) { return 0, false }
