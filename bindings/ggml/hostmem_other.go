//go:build !linux

package ggml

// addressSpaceRoom: only Linux says what is mapped (/proc/self/status).
func addressSpaceRoom() (room uint64, limited bool) { return 0, false }
