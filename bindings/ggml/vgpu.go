package ggml

/*
#include "vgpu.h"
*/
import "C"

import "github.com/gophotomaker/photomaker/internal/cpuinfo"

// virtualGPULibrary is the virtual GPU's registry name.
const virtualGPULibrary = "VGPU"

// RegisterVirtualGPU adds the virtual GPU (vgpu.c) to ggml's devices, once
// per process, with memory bytes of device memory (a later call changes
// only the memory), and returns it: device "VGPU0", found by FindDevice as
// "vgpu" (never as "auto"). It is for tests. It behaves towards ggml's
// scheduler like a discrete GPU (device buffers, copies of CPU inputs,
// offloading of ops on host weights) and computes on the CPU, one thread
// per core, so that CI, which has no GPU, runs the code paths of one.
func RegisterVirtualGPU(memory uint64) Device {
	p := C.pm_vgpu_register(C.size_t(memory), C.int(cpuinfo.Threads()))
	for _, d := range Devices() {
		if d.p == p {
			return d
		}
	}
	panic("ggml: the virtual GPU did not register")
}

// deviceProps reads d's properties through ggml_backend_dev_get_props (the
// props struct as vgpu.h declares it; checked in tests).
func deviceProps(d Device) (name, description string, typ DeviceType, free, total uint64) {
	var p C.struct_ggml_backend_dev_props
	C.ggml_backend_dev_get_props(d.p, &p)
	return C.GoString(p.name), C.GoString(p.description), DeviceType(p._type), uint64(p.memory_free), uint64(p.memory_total)
}
