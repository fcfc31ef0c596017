// Package cpuinfo counts the CPU cores worth a compute thread each.
//
// ggml's CPU kernels are bound by the floating-point units and caches of a
// core; a second hardware thread on the same core (SMT, Hyper-Threading)
// adds contention, not speed. So the default thread count is the number of
// physical cores this process may run on (the performance cores on Apple
// silicon), never more than GOMAXPROCS, which already honours CPU affinity
// and container CPU limits.
package cpuinfo

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Threads is the default number of compute threads: physical cores, capped
// by GOMAXPROCS; at least 1.
func Threads() int {
	n := runtime.GOMAXPROCS(0)
	if p := physicalCores(); p > 0 && p < n {
		n = p
	}
	return max(n, 1)
}

// linuxCores counts distinct (package, core) pairs among the CPUs allowed
// says this process may use, from the topology files under root
// (/sys/devices/system/cpu). It returns 0 when the topology is unreadable.
func linuxCores(root string, allowed func(cpu int) bool) int {
	dirs, err := filepath.Glob(filepath.Join(root, "cpu[0-9]*"))
	if err != nil || len(dirs) == 0 {
		return 0
	}
	read := func(dir, name string) (string, bool) {
		b, err := os.ReadFile(filepath.Join(dir, "topology", name))
		return strings.TrimSpace(string(b)), err == nil
	}
	cores := map[string]bool{}
	for _, dir := range dirs {
		cpu, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "cpu"))
		if err != nil || !allowed(cpu) {
			continue
		}
		core, ok1 := read(dir, "core_id")
		pkg, ok2 := read(dir, "physical_package_id")
		if !ok1 || !ok2 {
			return 0 // offline CPUs have no topology; do not guess
		}
		cores[pkg+"/"+core] = true
	}
	return len(cores)
}
