//go:build linux

package ggml

import "syscall"

// addressSpaceRoom is what the process's address-space limit (ulimit -v)
// leaves: the limit less the address space mapped now (VmSize, mapped
// model files included, as the limit counts them). limited is false
// without a limit, or when /proc does not say what is mapped. ggml
// aborts, or crashes, when an allocation fails past the limit.
func addressSpaceRoom() (room uint64, limited bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil || lim.Cur >= 1<<62 { // RLIM_INFINITY
		return 0, false
	}
	mapped, ok := statValue("/proc/self/status", "VmSize:")
	if !ok {
		return 0, false
	}
	return lim.Cur - min(mapped*1024, lim.Cur), true // kB
}
