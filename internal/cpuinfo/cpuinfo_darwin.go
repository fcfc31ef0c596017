package cpuinfo

import "golang.org/x/sys/unix"

// physicalCores is the performance cores on Apple silicon (efficiency cores
// slow a thread pool down to their pace), else all physical cores.
func physicalCores() int {
	for _, name := range []string{"hw.perflevel0.physicalcpu", "hw.physicalcpu"} {
		if n, err := unix.SysctlUint32(name); err == nil && n > 0 {
			return int(n)
		}
	}
	return 0
}
