//go:build !unix

package gguf

import "os"

func mmap(*os.File, int64) []byte { return nil }
func munmap([]byte)               {}
