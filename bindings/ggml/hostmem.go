package ggml

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// availableHostMemory is the RAM this process can still use without
// swapping or being killed: MemAvailable, or less when the process's cgroup
// (a container's memory limit) or its address-space limit (ulimit -v)
// leaves less room. ok is false where none is known (not Linux).
func availableHostMemory() (uint64, bool) {
	avail, ok := hostMemoryAt("/")
	if room, limited := addressSpaceRoom(); limited && (!ok || room < avail) {
		return room, true
	}
	return avail, ok
}

func hostMemoryAt(root string) (uint64, bool) {
	avail, ok := memAvailable(filepath.Join(root, "proc/meminfo"))
	if room, limited := cgroupRoom(root); limited && (!ok || room < avail) {
		return room, true
	}
	return avail, ok
}

// memAvailable reads MemAvailable from a meminfo file.
func memAvailable(path string) (uint64, bool) {
	v, ok := statValue(path, "MemAvailable:")
	return v * 1024, ok // kB
}

// cgroupRoom is limit − (usage − reclaimable page cache) of the memory
// cgroup this process is in (v2, or v1's memory controller); limited is
// false without a limit. Inside a container the cgroup is usually mounted
// at its own root, so the hierarchy's root is tried after the full path.
func cgroupRoom(root string) (room uint64, limited bool) {
	f, err := os.Open(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() { // "hierarchy:controllers:path"
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, limitFile, usageFile, cacheKey string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir, limitFile, usageFile, cacheKey = "sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, limitFile, usageFile, cacheKey = "sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
		default:
			continue
		}
		for _, d := range []string{filepath.Join(root, dir, parts[2]), filepath.Join(root, dir)} {
			limit, ok := readUint(filepath.Join(d, limitFile))
			if !ok {
				continue
			}
			if limit >= 1<<60 { // "max", or v1's page-rounded int64 maximum
				break
			}
			usage, _ := readUint(filepath.Join(d, usageFile))
			cache, _ := statValue(filepath.Join(d, "memory.stat"), cacheKey)
			used := usage - min(cache, usage)
			if used >= limit {
				return 0, true
			}
			return limit - used, true
		}
	}
	return 0, false
}

// readUint reads a file holding one number ("max" reads as no limit).
func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 1 << 62, true
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// statValue finds "key value" in a stats file (meminfo, memory.stat).
func statValue(path, key string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, found := strings.CutPrefix(line, key); found && (strings.HasSuffix(key, ":") || strings.HasPrefix(rest, " ")) {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				if v, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
					return v, true
				}
			}
		}
	}
	return 0, false
}
