package cpuinfo

import "golang.org/x/sys/unix"

func physicalCores() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return linuxCores("/sys/devices/system/cpu", set.IsSet)
}
