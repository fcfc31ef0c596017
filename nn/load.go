// Package nn holds the neural-network layers our models are built from, and
// the loader that binds a model's weight declarations to checkpoint tensors.
//
// A model declares its weights once, as Go structs whose *ggml.Tensor fields
// and nested modules carry `w:"name"` tags mirroring the checkpoint's
// canonical names (`w:"to_q"`, `w:"weight"`, `w:"bias,optional"`); slices of
// modules (`w:"layers"`) take their length from the indices present in the
// checkpoint. Forward code never spells a weight name.
package nn

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/internal/mmap"
	"github.com/gophotomaker/photomaker/weights"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// TypePolicy chooses the ggml type a weight is stored in on the device. It
// sees the canonical name and the checkpoint tensor.
type TypePolicy func(name string, t *weights.Tensor) ggml.Type

// AllF32 stores every weight as float32: the reference-precision setting
// used by the golden tests.
func AllF32(string, *weights.Tensor) ggml.Type { return ggml.TypeF32 }

// KeepPrecise wraps a policy so that what ggml computes poorly in low
// precision stays float32 (biases, norms and 1-D tensors) and embeddings
// stay at least f16 (never block-quantized). Rows that are not a whole
// number of the chosen type's blocks take its 32-block sibling or f16
// (ggml.Type.FitRow), as photomaker convert does. A convolution kernel's
// rows are its im2col rows (in·kh·kw): quantized, it is stored flattened
// (see Conv2D).
func KeepPrecise(p TypePolicy) TypePolicy {
	return func(name string, t *weights.Tensor) ggml.Type {
		typ := p(name, t)
		if typ == ggml.TypeF32 || len(t.Shape) < 2 || strings.HasSuffix(name, ".bias") || strings.Contains(name, "norm") {
			return ggml.TypeF32
		}
		if strings.Contains(name, "embedding") && typ.Quantized() {
			return ggml.TypeF16
		}
		return typ.FitRow(rowLength(t.Shape))
	}
}

// rowLength is the length of the rows a tensor of PyTorch shape is
// quantized in: the last dimension, or in·kh·kw for a [out, in, kh, kw]
// convolution kernel.
func rowLength(shape []int64) int64 {
	if len(shape) == 4 {
		return shape[1] * shape[2] * shape[3]
	}
	return shape[len(shape)-1]
}

// Weights is a set of device tensors bound from a checkpoint. Bind declares
// them, Upload allocates device memory and copies the data in.
type Weights struct {
	ctx        *ggml.Context
	buf        *ggml.Buffer
	pending    []binding
	policy     TypePolicy
	maxTensors int // tensors a context holds
	// apart, set by KeepApart or KeepInHost, picks the weights declared in
	// apartCtx, whose buffer is in host memory when apartInHost.
	apart       func(name string) bool
	apartInHost bool
	apartCtx    *ggml.Context
	apartBuf    *ggml.Buffer
	// repacked and apartRepacked hold the weights that the CPU multiplies
	// faster repacked (ggml.Backend.Repacks), out of ctx and apartCtx.
	repacked, apartRepacked *ggml.Buffer
	// byRows, once StoreKernelsByRow made it, holds the float 3×3 kernels
	// declared by kernel row (see Conv2D).
	byRows map[*ggml.Tensor]bool
}

type binding struct {
	dst  *ggml.Tensor
	src  *weights.Tensor
	name string
}

// NewWeights prepares room for up to maxTensors weights stored as policy says.
func NewWeights(maxTensors int, policy TypePolicy) *Weights {
	if policy == nil {
		policy = AllF32
	}
	return &Weights{ctx: ggml.NewContext(maxTensors, 0), policy: policy, maxTensors: maxTensors}
}

// KeepInHost makes Bind declare the weights whose checkpoint names match in
// host memory that the device reads from, as UploadHost does for all of
// them: the scheduler copies them to the device for each graph that uses
// them, so they suit weights that few graphs use. Call it before Bind.
func (w *Weights) KeepInHost(match func(name string) bool) { w.keepApart(match, true) }

// KeepApart makes Bind declare the weights whose checkpoint names match in
// a device buffer of their own, which FreeApart releases once no graph
// will use them again. Call it before Bind.
func (w *Weights) KeepApart(match func(name string) bool) { w.keepApart(match, false) }

func (w *Weights) keepApart(match func(name string) bool, inHost bool) {
	w.apart, w.apartInHost = match, inHost
	w.apartCtx = ggml.NewContext(w.maxTensors, 0)
}

// FreeApart releases the memory of the weights KeepApart or KeepInHost set
// apart; graphs must not use them afterwards.
func (w *Weights) FreeApart() { freeBuffers(&w.apartBuf, &w.apartRepacked) }

// freeBuffers frees and clears the buffers that are set.
func freeBuffers(bufs ...**ggml.Buffer) {
	for _, b := range bufs {
		if *b != nil {
			(*b).Free()
			*b = nil
		}
	}
}

// StoreKernelsByRow makes Bind store each float 3×3 convolution kernel by
// kernel row, the layout Conv2D convolves with as three products over a
// 1×3 im2col, a third of the full im2col's size (see Conv2D). Call it
// before Bind. The VAE keeps PyTorch's layout: it casts its kernels to the
// type it multiplies in for each decode and rearranges them in the graph
// (KernelByRow).
func (w *Weights) StoreKernelsByRow() { w.byRows = map[*ggml.Tensor]bool{} }

// ErrMissing is wrapped when a required weight is absent.
var ErrMissing = errors.New("missing weight")

// Bind fills module (a pointer to a struct) from the tensors of set under
// prefix (e.g. "unet.").
func (w *Weights) Bind(set *weights.Set, prefix string, module any) error {
	v := reflect.ValueOf(module)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("nn.Bind: want a pointer to a struct, got %T", module)
	}
	return w.bindStruct(set, prefix, v.Elem())
}

var tensorType = reflect.TypeOf((*ggml.Tensor)(nil))

func (w *Weights) bindStruct(set *weights.Set, prefix string, v reflect.Value) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("w")
		if !ok || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		optional := opts == "optional"
		full := prefix + name
		if name == "" {
			full = strings.TrimSuffix(prefix, ".")
		}
		fv := v.Field(i)
		switch {
		case f.Type == tensorType:
			src, ok := set.Get(full)
			if !ok {
				if optional {
					continue
				}
				return fmt.Errorf("%w %s", ErrMissing, full)
			}
			fv.Set(reflect.ValueOf(w.declare(full, src)))
		case f.Type.Kind() == reflect.Struct:
			if optional && !hasPrefix(set, full+".") {
				continue
			}
			if err := w.bindStruct(set, full+".", fv); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			if !hasPrefix(set, full+".") {
				if optional {
					continue
				}
				return fmt.Errorf("%w: nothing under %s", ErrMissing, full)
			}
			nv := reflect.New(f.Type.Elem())
			if err := w.bindStruct(set, full+".", nv.Elem()); err != nil {
				return err
			}
			fv.Set(nv)
		case f.Type.Kind() == reflect.Slice:
			n := countIndices(set, full+".")
			if n == 0 && !optional {
				return fmt.Errorf("%w: no %s.0.*", ErrMissing, full)
			}
			sv := reflect.MakeSlice(f.Type, n, n)
			for j := 0; j < n; j++ {
				el := sv.Index(j)
				p := full + "." + strconv.Itoa(j) + "."
				if el.Kind() == reflect.Pointer {
					if !hasPrefix(set, p) {
						continue // a gap, e.g. to_out.1 (dropout) has no weights
					}
					el.Set(reflect.New(el.Type().Elem()))
					el = el.Elem()
				}
				if err := w.bindStruct(set, p, el); err != nil {
					return err
				}
			}
			fv.Set(sv)
		default:
			return fmt.Errorf("nn.Bind: field %s.%s has unsupported type %s", t.Name(), f.Name, f.Type)
		}
	}
	if conv, ok := v.Addr().Interface().(*Conv2D); ok && conv.Weight != nil {
		conv.byRow = w.byRows[conv.Weight]
	}
	return nil
}

func hasPrefix(set *weights.Set, p string) bool {
	for _, n := range set.Names() {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// countIndices returns 1 + the largest N such that a name starts with p+"N.".
func countIndices(set *weights.Set, p string) int {
	n := 0
	for _, name := range set.Names() {
		rest, ok := strings.CutPrefix(name, p)
		if !ok {
			continue
		}
		idx, _, _ := strings.Cut(rest, ".")
		if k, err := strconv.Atoi(idx); err == nil && k+1 > n {
			n = k + 1
		}
	}
	return n
}

// Count is countIndices for model code that infers depths from the weights.
func Count(set *weights.Set, prefix string) int { return countIndices(set, prefix) }

// StoredType is the type Weights stores a tensor in: the one policy chooses
// (f32 without a policy), except that convolution kernels are not stored as
// bf16 but as f16: ggml's im2col writes only f16 or f32 columns, and it
// cannot multiply f32 columns by a bf16 kernel.
func StoredType(policy TypePolicy, name string, t *weights.Tensor) ggml.Type {
	if policy == nil {
		policy = AllF32
	}
	typ := policy(name, t)
	if typ == ggml.TypeBF16 && len(t.Shape) == 4 {
		return ggml.TypeF16
	}
	return typ
}

func (w *Weights) declare(name string, src *weights.Tensor) *ggml.Tensor {
	typ := StoredType(w.policy, name, src)
	ne := make([]int64, len(src.Shape))
	for i, d := range src.Shape {
		ne[len(ne)-1-i] = d
	}
	switch {
	case len(ne) == 0:
		ne = []int64{1}
	case len(ne) == 4 && typ.Quantized():
		// ggml quantizes along dimension 0, which for a kernel is kw (3):
		// a quantized kernel is stored as its im2col matrix [in·kh·kw, out].
		ne = []int64{rowLength(src.Shape), src.Shape[0]}
	}
	rows := w.byRows != nil && len(ne) == 4 && ne[0] == 3 && ne[1] == 3 && !typ.Quantized()
	if rows {
		ne = []int64{3, ne[2], ne[3], 3} // [kw, in, out, kh]
	}
	ctx := w.ctx
	if w.apart != nil && w.apart(name) {
		ctx = w.apartCtx
	}
	t := ctx.NewTensor(typ, ne...)
	t.SetName(weights.ShortName(name))
	w.pending = append(w.pending, binding{dst: t, src: src, name: name})
	if rows {
		w.byRows[t] = true
	}
	return t
}

// EstimateBytes is the memory the tensors of set under prefix take once
// stored as policy says (ggml's 32-byte alignment included), for planning
// before anything is bound.
func EstimateBytes(set *weights.Set, prefix string, policy TypePolicy) int64 {
	return EstimateBytesOf(set, prefix, policy, nil)
}

// EstimateBytesOf is EstimateBytes for the tensors whose full names match
// (all when match is nil).
func EstimateBytesOf(set *weights.Set, prefix string, policy TypePolicy, match func(name string) bool) int64 {
	var total int64
	forEachStored(set, prefix, policy, func(name string, n int64) {
		if match == nil || match(name) {
			total += n
		}
	})
	return total
}

// LargestBytes is the summed size of the k largest tensors EstimateBytes
// counts.
func LargestBytes(set *weights.Set, prefix string, policy TypePolicy, k int) int64 {
	var sizes []int64
	forEachStored(set, prefix, policy, func(_ string, n int64) { sizes = append(sizes, n) })
	slices.Sort(sizes)
	var sum int64
	for _, n := range sizes[max(0, len(sizes)-k):] {
		sum += n
	}
	return sum
}

func forEachStored(set *weights.Set, prefix string, policy TypePolicy, f func(name string, bytes int64)) {
	if policy == nil {
		policy = AllF32
	}
	sub := set.Prefix(prefix)
	for _, name := range sub.Names() {
		t, _ := sub.Get(name)
		n := int64(1)
		for _, d := range t.Shape {
			n *= d
		}
		typ := StoredType(policy, prefix+name, t)
		b := (n + typ.BlockSize() - 1) / typ.BlockSize() * typ.BlockBytes()
		f(prefix+name, (b+31)&^31)
	}
}

// Allocated is the size of the memory Upload allocated and that is not
// freed (0 before), the weights set apart included.
func (w *Weights) Allocated() int64 {
	return bufferBytes(w.buf, w.apartBuf, w.repacked, w.apartRepacked)
}

func bufferBytes(bufs ...*ggml.Buffer) int64 {
	var n int64
	for _, b := range bufs {
		if b != nil {
			n += b.Size()
		}
	}
	return n
}

// ApartBytes is the size of the buffer that holds the weights set apart
// (KeepApart, KeepInHost), 0 once freed.
func (w *Weights) ApartBytes() int64 { return bufferBytes(w.apartBuf, w.apartRepacked) }

// Bytes returns the device memory the declared weights will take.
func (w *Weights) Bytes(b *ggml.Backend) int64 { return b.AllocSize(w.ctx) }

// Upload allocates the weights on backend b and copies them in, converting
// or quantizing as the policy chose. progress (may be nil) is called after
// each tensor with the number done and the total. On the CPU, the weights
// ggml multiplies faster repacked (q4_K, q4_0) are stored so, unless our
// kernels multiply them (x86 with AVX2).
func (w *Weights) Upload(ctx context.Context, b *ggml.Backend, progress func(done, total int)) error {
	return w.upload(ctx, b.Alloc, b.AllocHost, b, progress)
}

// UploadHost is Upload into host memory that b's device streams from
// (ggml.Backend.AllocHost): the weights take no device memory and are
// copied to the device by every graph that uses them.
func (w *Weights) UploadHost(ctx context.Context, b *ggml.Backend, progress func(done, total int)) error {
	return w.upload(ctx, b.AllocHost, b.AllocHost, nil, progress)
}

// upload allocates and fills the weights; when cpu is not nil, those it
// repacks go in buffers of their own.
func (w *Weights) upload(ctx context.Context, alloc, allocHost func(*ggml.Context) (*ggml.Buffer, error), cpu *ggml.Backend, progress func(done, total int)) error {
	if err := w.allocate(alloc, allocHost, cpu); err != nil {
		return err
	}
	return w.fill(ctx, progress)
}

// allocate gives every declared weight memory: the repacked ones first
// (when cpu is not nil), then the rest of ctx with alloc and the weights set
// apart with alloc or, kept in host memory, allocHost.
func (w *Weights) allocate(alloc, allocHost func(*ggml.Context) (*ggml.Buffer, error), cpu *ggml.Backend) error {
	var err error
	if w.repacked, err = allocRepacked(cpu, w.ctx); err != nil {
		return err
	}
	if w.buf, err = alloc(w.ctx); err != nil {
		return err
	}
	if w.apartCtx == nil {
		return nil
	}
	if w.apartRepacked, err = allocRepacked(cpu, w.apartCtx); err != nil {
		return err
	}
	if w.apartInHost {
		alloc = allocHost
	}
	w.apartBuf, err = alloc(w.apartCtx)
	return err
}

// fill converts every pending tensor and writes it into its memory.
func (w *Weights) fill(ctx context.Context, progress func(done, total int)) error {
	sort.SliceStable(w.pending, func(i, j int) bool { return w.pending[i].src.File < w.pending[j].src.File })
	// Once a tensor is on the device its file pages need not stay resident.
	files := map[string]bool{}
	for _, p := range w.pending {
		files[p.src.File] = true
		for _, f := range p.src.AlsoReads {
			files[f] = true
		}
	}
	var paths []string
	for f := range files {
		paths = append(paths, f)
	}
	release := mmap.NewReleaser(paths...)

	// Conversion (f16 widening, quantization, LoRA merges) runs on every
	// core, a few tensors ahead; uploads to a device happen in order on this
	// goroutine, copies into host memory in the workers.
	type result struct {
		data   []byte
		err    error
		stored bool // the worker wrote it (host memory)
	}
	results := make([]chan result, len(w.pending))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	// Workers may be writing weights: an early return waits for them (after
	// cancel) before the caller can free the buffers.
	var workers sync.WaitGroup
	defer workers.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	// Converted-but-not-uploaded tensors are bounded by their float32 size
	// (what a conversion holds at its peak), not by count: the Go heap they
	// take adds to the peak RSS of a low-memory load.
	ahead := semaphore.NewWeighted(convertBudget)
	weight := func(i int) int64 { return min(convertBudget, 4*w.pending[i].src.Elements()) }
	go func() {
		defer close(next)
		for i := range w.pending {
			if ahead.Acquire(ctx, weight(i)) != nil {
				return
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range runtime.NumCPU() {
		workers.Go(func() {
			for i := range next {
				p := w.pending[i]
				data, err := convert(p.src, p.dst)
				if err == nil && w.byRows[p.dst] {
					data = kernelByRows(data, p.src.Shape, int(p.dst.Type().BlockBytes()))
				}
				// Host memory is written here, on every core: a copy, or
				// ggml's repacking as the tensor is written, which takes
				// longer.
				if err == nil && (p.dst.Repacked() || p.dst.InHostMemory()) {
					results[i] <- result{err: p.dst.SetData(data), stored: true}
					continue
				}
				results[i] <- result{data: data, err: err}
			}
		})
	}
	for i, p := range w.pending {
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return fmt.Errorf("load %s: %w", p.name, r.err)
		}
		if !r.stored {
			if err := p.dst.SetData(r.data); err != nil {
				return fmt.Errorf("load %s: %w", p.name, err)
			}
		}
		release.After(p.src.NBytes())
		ahead.Release(weight(i))
		if progress != nil {
			progress(i+1, len(w.pending))
		}
	}
	w.pending = nil
	release.Release()
	// The conversions' buffers are garbage now, but the Go runtime returns
	// freed heap to the OS only gradually: until then it counts in the RSS
	// of the run that follows.
	debug.FreeOSMemory()
	return nil
}

// allocRepacked places the weights of ctx that cpu (nil: none) multiplies
// faster repacked in a buffer of their own; nil when there are none. q4_K
// and q4_0 weights stay plain where our CPU kernels multiply them (q4_K
// 1.5–2.3× ggml's repacked product, q4_0 about 2×).
func allocRepacked(cpu *ggml.Backend, ctx *ggml.Context) (*ggml.Buffer, error) {
	if cpu == nil || !cpu.IsCPU() {
		return nil, nil
	}
	var ts []*ggml.Tensor
	for _, t := range ctx.Tensors() {
		if cpu.Repacks(t) && !cpuKernelsTakeInts(t.Type()) {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil, nil
	}
	return cpu.AllocRepacked(ts...)
}

// cpuKernelsTakeInts is ggml.CPUKernelsTakeInts, which tests replace to
// repack weights where our kernels would take them.
var cpuKernelsTakeInts = ggml.CPUKernelsTakeInts

// convertBudget bounds the float32 bytes of tensors converted ahead of
// their upload (one larger tensor still goes alone). The Go heap they take
// is a small machine's margin: with 256 MiB, a 256² q4_K bench on the Zen
// 3 dev VM peaked at 2.41–2.59 GB of RSS (up to 46 % of the f16 run's,
// where the bar is 45 %), with 128 MiB at 2.39–2.45 GB, loading as
// fast (SDXL's largest tensor takes 52 MB as float32).
const convertBudget = 128 << 20

// convert produces the bytes of src in dst's type.
func convert(src *weights.Tensor, dst *ggml.Tensor) ([]byte, error) {
	if src.Elements() != dst.Elements() {
		return nil, fmt.Errorf("shape %v does not fit %v", src.Shape, dst.Shape())
	}
	typ := dst.Type()
	if same := map[ggml.Type]safetensors.DType{ggml.TypeF32: safetensors.F32, ggml.TypeF16: safetensors.F16, ggml.TypeBF16: safetensors.BF16}[typ]; same == src.DType && same != "" {
		return src.Bytes()
	}
	if q, err := ggml.ParseType(string(src.DType)); err == nil && q == typ {
		return src.Bytes() // already in the device type (e.g. quantized in a GGUF file)
	}
	f, err := src.Float32()
	if err != nil {
		return nil, err
	}
	if b, ok := ggml.EncodeFloat(typ, f); ok {
		return b, nil
	}
	// A large tensor's rows are quantized on several cores: the in-order
	// upload waits for it, and with it the tensors converted after it.
	return ggml.QuantizeRows(typ, f, dst.Ne(0), 0)
}

// kernelByRows reorders a kernel's bytes from PyTorch's [out, in, kh, kw]
// to [kh, out, in, kw] (ggml's [kw, in, out, kh]): each kernel row's
// [in·kw, out] matrix is then contiguous. It writes a new slice: data may
// be a read-only file mapping.
func kernelByRows(data []byte, shape []int64, elem int) []byte {
	out, in, kh, kw := int(shape[0]), int(shape[1]), int(shape[2]), int(shape[3])
	dst := make([]byte, len(data))
	run := kw * elem // one kernel row of one channel pair
	for ky := 0; ky < kh; ky++ {
		for o := 0; o < out; o++ {
			for c := 0; c < in; c++ {
				from := ((o*in+c)*kh + ky) * run
				to := ((ky*out+o)*in + c) * run
				copy(dst[to:to+run], data[from:from+run])
			}
		}
	}
	return dst
}

// Free releases the device memory and headers.
func (w *Weights) Free() {
	freeBuffers(&w.buf, &w.apartBuf, &w.repacked, &w.apartRepacked)
	for _, c := range []**ggml.Context{&w.ctx, &w.apartCtx} {
		if *c != nil {
			(*c).Free()
			*c = nil
		}
	}
}
