package ggml

/*
#include <stdlib.h>
#include "ggml_api.h"

static bool pm_abort_requested(void *flag) { return *(volatile int *)flag != 0; }
static void pm_set_cpu_abort(ggml_backend_t b, int *flag) {
	ggml_backend_cpu_set_abort_callback(b, pm_abort_requested, flag);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/gophotomaker/photomaker/internal/cpuinfo"
)

// LibraryPathEnv names extra folders (a list, like PATH) searched for GPU
// backend libraries such as libggml-cuda.so.
const LibraryPathEnv = "PHOTOMAKER_LIB_PATH"

// DeviceType classifies devices.
type DeviceType int

// Device types.
const (
	DeviceCPU   DeviceType = C.GGML_BACKEND_DEVICE_TYPE_CPU
	DeviceGPU   DeviceType = C.GGML_BACKEND_DEVICE_TYPE_GPU
	DeviceIGPU  DeviceType = C.GGML_BACKEND_DEVICE_TYPE_IGPU
	DeviceAccel DeviceType = C.GGML_BACKEND_DEVICE_TYPE_ACCEL
)

func (t DeviceType) String() string {
	switch t {
	case DeviceCPU:
		return "CPU"
	case DeviceGPU:
		return "GPU"
	case DeviceIGPU:
		return "integrated GPU"
	case DeviceAccel:
		return "accelerator"
	}
	return "unknown"
}

// Device is one compute device known to ggml.
type Device struct {
	p           C.ggml_backend_dev_t
	Name        string // "CPU", "CUDA0", "Metal", ...
	Description string
	Type        DeviceType
	Library     string // backend registry name, e.g. "CUDA"
}

// Memory returns the device's free and total memory in bytes.
func (d Device) Memory() (free, total uint64) {
	var f, t C.size_t
	C.ggml_backend_dev_memory(d.p, &f, &t)
	return uint64(f), uint64(t)
}

var loadOnce sync.Once
var loadedLibs []string

// LoadBackends loads GPU backend libraries (libggml-cuda.so and friends)
// from the folders in $PHOTOMAKER_LIB_PATH, the executable's folder and
// <exe>/../lib/photomaker, once per process. It returns the folders in which
// something was loaded; missing libraries are not an error: the CPU always
// works.
func LoadBackends() []string {
	loadOnce.Do(func() {
		var dirs []string
		if v := os.Getenv(LibraryPathEnv); v != "" {
			dirs = append(dirs, filepath.SplitList(v)...)
		}
		if exe, err := os.Executable(); err == nil {
			if real, err := filepath.EvalSymlinks(exe); err == nil {
				exe = real
			}
			dirs = append(dirs, filepath.Dir(exe), filepath.Join(filepath.Dir(exe), "..", "lib", "photomaker"))
		}
		seen, libs := map[string]bool{}, map[string]bool{}
		for _, d := range dirs {
			abs, err := filepath.Abs(d)
			if err != nil || seen[abs] {
				continue
			}
			seen[abs] = true
			names := newBackendLibraries(abs, libs)
			if len(names) == 0 {
				continue // none, or all loaded from an earlier folder
			}
			adoptBase(abs)
			before := C.ggml_backend_dev_count()
			for _, n := range names {
				cs := C.CString(filepath.Join(abs, n))
				C.ggml_backend_load(cs)
				C.free(unsafe.Pointer(cs))
			}
			after := C.ggml_backend_dev_count()
			if after > before {
				loadedLibs = append(loadedLibs, abs)
				for i := before; i < after; i++ {
					dev := deviceAt(int(i))
					Logger.Info("loaded GPU backend", "device", dev.Name, "description", dev.Description, "from", abs)
				}
			} else {
				Logger.Warn("found a ggml backend library but no usable device in it (driver missing or library built for another ggml?); using the CPU", "folder", abs)
			}
		}
	})
	return loadedLibs
}

// backendLibraries lists the ggml backend libraries in dir (not the base
// library they share).
func backendLibraries(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	ext := ".so"
	switch runtime.GOOS {
	case "darwin":
		ext = ".dylib"
	case "windows":
		ext = ".dll"
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.Contains(n, "ggml-") && strings.HasSuffix(n, ext) && !strings.Contains(n, "ggml-base") {
			names = append(names, n)
		}
	}
	return names
}

// newBackendLibraries is the backend libraries in dir not yet loaded from
// an earlier folder (a copy next to the binary and one on the library path
// would otherwise list every device twice); it marks them loaded.
func newBackendLibraries(dir string, loaded map[string]bool) []string {
	var names []string
	for _, n := range backendLibraries(dir) {
		if !loaded[n] {
			loaded[n] = true
			names = append(names, n)
		}
	}
	return names
}

func deviceAt(i int) Device {
	p := C.ggml_backend_dev_get(C.size_t(i))
	return Device{
		p:           p,
		Name:        C.GoString(C.ggml_backend_dev_name(p)),
		Description: C.GoString(C.ggml_backend_dev_description(p)),
		Type:        DeviceType(C.ggml_backend_dev_type(p)),
		Library:     C.GoString(C.ggml_backend_reg_name(C.ggml_backend_dev_backend_reg(p))),
	}
}

// Devices lists every device: the CPU and whatever GPU backends loaded.
func Devices() []Device {
	LoadBackends()
	n := int(C.ggml_backend_dev_count())
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, deviceAt(i))
	}
	return out
}

// ErrNoDevice is returned when a named device does not exist.
var ErrNoDevice = errors.New("no such device")

// FindDevice resolves a user's device name: "cpu", "cuda", "cuda:1",
// "metal", "vulkan", or a ggml device name such as "CUDA0". "auto" picks the
// first GPU, else the CPU.
func FindDevice(name string) (Device, error) {
	devs := Devices()
	want := strings.ToLower(strings.TrimSpace(name))
	if want == "" || want == "auto" {
		for _, d := range devs {
			if (d.Type == DeviceGPU || d.Type == DeviceIGPU) && d.Library != virtualGPULibrary {
				return d, nil
			}
		}
		want = "cpu"
	}
	lib, idx, hasIdx := strings.Cut(want, ":")
	k := 0
	for _, d := range devs {
		if strings.EqualFold(d.Name, want) {
			return d, nil
		}
		if strings.EqualFold(d.Library, lib) || (lib == "cpu" && d.Type == DeviceCPU) {
			if !hasIdx || fmt.Sprint(k) == idx {
				return d, nil
			}
			k++
		}
	}
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
	}
	hint := ""
	if lib != "cpu" {
		hint = fmt.Sprintf("; GPU backends are loaded from $%s, the executable's folder or <exe>/../lib/photomaker (build one with `make cuda`)", LibraryPathEnv)
	}
	return Device{}, fmt.Errorf("%w %q (available: %s)%s", ErrNoDevice, name, strings.Join(names, ", "), hint)
}

// Backend is an initialised device that can hold buffers and run graphs.
type Backend struct {
	p       C.ggml_backend_t
	Dev     Device
	abort   *C.int // CPU only: non-zero asks the running graph to stop
	threads int    // CPU only: the threads a graph computes with
}

// NewBackend initialises a device. threads applies to the CPU (≤0: one per
// physical core).
func NewBackend(dev Device, threads int) (*Backend, error) {
	p := C.ggml_backend_dev_init(dev.p, nil)
	if p == nil {
		return nil, fmt.Errorf("could not initialise device %s (%s)", dev.Name, dev.Description)
	}
	b := &Backend{p: p, Dev: dev}
	if dev.Type == DeviceCPU {
		if threads <= 0 {
			threads = cpuinfo.Threads()
		}
		C.ggml_backend_cpu_set_n_threads(p, C.int(threads))
		b.threads = threads
		b.abort = (*C.int)(C.calloc(1, C.size_t(unsafe.Sizeof(C.int(0)))))
		C.pm_set_cpu_abort(p, b.abort)
	}
	return b, nil
}

// NewCPUBackend initialises the CPU with the given number of threads.
func NewCPUBackend(threads int) (*Backend, error) {
	d, err := FindDevice("cpu")
	if err != nil {
		return nil, err
	}
	return NewBackend(d, threads)
}

// Name returns ggml's backend name.
func (b *Backend) Name() string { return C.GoString(C.ggml_backend_name(b.p)) }

// IsCPU reports whether this is the CPU backend.
func (b *Backend) IsCPU() bool { return b.Dev.Type == DeviceCPU }

// Supports reports whether the backend can compute op node t.
func (b *Backend) Supports(t *Tensor) bool { return bool(C.ggml_backend_dev_supports_op(b.Dev.p, t.p)) }

// Im2ColReadsViews reports whether b's im2col takes a view as input (a band
// of an image's rows). ggml-vulkan's needs a contiguous one, and a
// scheduler would hand the im2col to the CPU; copying every band instead
// costs memory elsewhere (a quarter more for a VAE tile), so only such
// backends get the copies (Context.SetContiguousIm2Col).
func (b *Backend) Im2ColReadsViews() bool {
	c := NewContext(8, 0)
	defer c.Free()
	x := c.NewTensor(TypeF32, 4, 4, 2, 1)
	band := c.View(x, [4]int64{4, 3, 2, 1}, x.Nb(1), x.Nb(2), x.Nb(3), x.Nb(1)) // rows 1–3
	return b.Supports(c.Im2Col(c.NewTensor(TypeF32, 3, 3, 2, 1), band, 1, 1, 1, 0, 1, 1, TypeF32))
}

// SetsViews reports whether b computes ggml's SET on f32 (a band written
// into a larger tensor), so that banded graphs write their bands instead
// of adding them into zeros (Context.SetBandsBySet).
func (b *Backend) SetsViews() bool {
	c := NewContext(8, 0)
	defer c.Free()
	y := c.NewTensor(TypeF32, 4, 4)
	return b.Supports(c.SetInplace(y, c.NewTensor(TypeF32, 4, 2), y.Nb(1), y.Nb(2), y.Nb(3), 2*y.Nb(1)))
}

// Unsupported counts, by op, the nodes of g that b cannot compute. A
// scheduler quietly runs those on its CPU backend, copying their operands
// back and forth: correct, but a GPU that lacks a kernel the models need
// (flash attention in a build without it) becomes many times slower.
func (b *Backend) Unsupported(g *Graph) map[string]int {
	var ops map[string]int
	for i := range g.Nodes() {
		if n := g.Node(i); !b.Supports(n) {
			if ops == nil {
				ops = map[string]int{}
			}
			ops[n.Op()]++
		}
	}
	return ops
}

// Close frees the backend.
func (b *Backend) Close() {
	if b.p != nil {
		C.ggml_backend_free(b.p)
		b.p = nil
	}
	if b.abort != nil {
		C.free(unsafe.Pointer(b.abort))
		b.abort = nil
	}
}

// Buffer is backend memory holding a context's tensors (weights).
type Buffer struct {
	p      C.ggml_backend_buffer_t
	pinned []*C.struct_ggml_tensor // placed by AllocTensors (pinnedTensors)
}

// pinnedTensors holds the tensors AllocTensors placed, until their buffer
// is freed: a graph's own tensors lose their addresses between allocations
// (Graph.forgetStale), except these, which stay where the caller put them.
var pinnedTensors sync.Map // *C.struct_ggml_tensor → struct{}

func isPinned(t *C.struct_ggml_tensor) bool {
	_, ok := pinnedTensors.Load(t)
	return ok
}

// ErrOutOfMemory is wrapped by allocation failures.
var ErrOutOfMemory = errors.New("out of memory")

// AllocSize returns the bytes Alloc would need for ctx's tensors.
func (b *Backend) AllocSize(ctx *Context) int64 {
	return int64(C.ggml_backend_alloc_ctx_tensors_from_buft_size(ctx.p, C.ggml_backend_dev_buffer_type(b.Dev.p)))
}

// Alloc gives every unallocated tensor of ctx memory on this backend, as a
// weights buffer. It checks the device's free memory first.
func (b *Backend) Alloc(ctx *Context) (*Buffer, error) {
	return b.alloc(ctx, C.ggml_backend_dev_buffer_type(b.Dev.p), b.Dev.Type != DeviceCPU)
}

// AllocState is Alloc for tensors that graphs write as well as read (a
// sampler loop's latents). The buffer stays marked as weights on purpose:
// the scheduler then runs every op that reads them on this device, next to
// them, instead of possibly on the CPU, which cannot read device memory.
func (b *Backend) AllocState(ctx *Context) (*Buffer, error) { return b.Alloc(ctx) }

// AllocHost gives every unallocated tensor of ctx memory in host RAM that
// this backend's device reads fastest (pinned memory for CUDA), as a weights
// buffer. A scheduler streams such weights to the device for each graph
// that uses them: the weight-streaming low-VRAM mode.
func (b *Backend) AllocHost(ctx *Context) (*Buffer, error) {
	buft := C.ggml_backend_dev_host_buffer_type(b.Dev.p)
	if buft == nil {
		buft = C.ggml_backend_cpu_buffer_type()
	}
	return b.alloc(ctx, buft, false)
}

func (b *Backend) alloc(ctx *Context, buft C.ggml_backend_buffer_type_t, onDevice bool) (*Buffer, error) {
	need := int64(C.ggml_backend_alloc_ctx_tensors_from_buft_size(ctx.p, buft))
	if need == 0 {
		return &Buffer{}, nil
	}
	if free, total := b.Dev.Memory(); onDevice && total > 0 && uint64(need) > free {
		return nil, fmt.Errorf("%w on %s: the weights need %s but only %s of %s is free; try quantized weights (--type q8_0 or q4_K), --vram stream, or --device cpu",
			ErrOutOfMemory, b.Dev.Name, HumanBytes(need), HumanBytes(int64(free)), HumanBytes(int64(total)))
	}
	if !onDevice {
		if err := checkRAM(need); err != nil {
			return nil, err
		}
	}
	p := C.ggml_backend_alloc_ctx_tensors_from_buft(ctx.p, buft)
	if p == nil {
		where := b.Dev.Name
		if !onDevice {
			where = "host memory"
		}
		return nil, fmt.Errorf("%w in %s: could not allocate %s for weights; try quantized weights or --device cpu", ErrOutOfMemory, where, HumanBytes(need))
	}
	C.ggml_backend_buffer_set_usage(p, C.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
	return &Buffer{p: p}, nil
}

// checkRAM fails when weights of need bytes cannot fit the available RAM.
func checkRAM(need int64) error {
	if avail, ok := hostMemory(); ok && uint64(need) > avail {
		return fmt.Errorf("%w: the weights need %s of RAM but only %s is available; try quantized weights (--type q8_0 or q4_K) or close other programs",
			ErrOutOfMemory, HumanBytes(need), HumanBytes(int64(avail)))
	}
	return nil
}

// AllocTensors gives the listed tensors (not yet allocated) memory in one
// buffer on this backend's device, leaving the rest of their context to the
// scheduler: test inputs that should sit on the device, so that the ops on
// them run there while ops the device lacks still fall back to the CPU. The
// buffer is marked as weights, as Alloc's: the scheduler places an op by
// the weights it reads. The tensors keep their place when a scheduler
// allocates their context's graph (isPinned); free the buffer before their
// context.
func (b *Backend) AllocTensors(ts ...*Tensor) (*Buffer, error) {
	buf, err := allocTensorsIn(C.ggml_backend_dev_buffer_type(b.Dev.p), ts, b.Dev.Name)
	if err != nil {
		return nil, err
	}
	C.ggml_backend_buffer_set_usage(buf.p, C.GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
	for _, t := range ts {
		pinnedTensors.Store(t.p, struct{}{})
		buf.pinned = append(buf.pinned, t.p)
	}
	return buf, nil
}

// allocTensorsIn places ts, one after another, in a new buffer of type
// buft; where names its memory for errors.
func allocTensorsIn(buft C.ggml_backend_buffer_type_t, ts []*Tensor, where string) (*Buffer, error) {
	align := int64(C.ggml_backend_buft_get_alignment(buft))
	up := func(n int64) int64 { return (n + align - 1) / align * align }
	var size int64
	for _, t := range ts {
		size += up(int64(C.ggml_backend_buft_get_alloc_size(buft, t.p)))
	}
	p := C.ggml_backend_buft_alloc_buffer(buft, C.size_t(max(size, align)))
	if p == nil {
		return nil, fmt.Errorf("%w in %s: could not allocate %s", ErrOutOfMemory, where, HumanBytes(size))
	}
	base := C.ggml_backend_buffer_get_base(p)
	var off int64
	for _, t := range ts {
		if C.ggml_backend_tensor_alloc(p, t.p, unsafe.Add(base, off)) != C.GGML_STATUS_SUCCESS {
			C.ggml_backend_buffer_free(p)
			return nil, fmt.Errorf("ggml: could not place tensor %q in a %s buffer", t.Name(), C.GoString(C.ggml_backend_buft_name(buft)))
		}
		off += up(int64(C.ggml_backend_buft_get_alloc_size(buft, t.p)))
	}
	return &Buffer{p: p}, nil
}

// Size returns the buffer's size in bytes.
func (buf *Buffer) Size() int64 {
	if buf.p == nil {
		return 0
	}
	return int64(C.ggml_backend_buffer_get_size(buf.p))
}

// Free releases the buffer.
func (buf *Buffer) Free() {
	if buf.p != nil {
		for _, t := range buf.pinned {
			pinnedTensors.Delete(t)
		}
		buf.pinned = nil
		C.ggml_backend_buffer_free(buf.p)
		buf.p = nil
	}
}

// HumanBytes formats a byte count for messages ("1.5 GiB").
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// hostMemory is availableHostMemory; tests replace it.
var hostMemory = availableHostMemory

// AvailableHostMemory is the RAM this process can still use (MemAvailable,
// or its memory cgroup's room if smaller); ok is false where unknown.
func AvailableHostMemory() (bytes uint64, ok bool) { return hostMemory() }
