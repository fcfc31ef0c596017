//go:build !linux && !darwin

package cpuinfo

// physicalCores is unknown here: Threads uses GOMAXPROCS.
func physicalCores() int { return 0 }
