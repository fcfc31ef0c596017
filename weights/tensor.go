// Package weights opens model files (single-file SDXL checkpoints, diffusers
// folders, PhotoMaker adapters, LoRAs) and presents their tensors under ONE
// canonical naming, lazily: no tensor byte is read until a caller asks for it.
//
// Canonical names are a component prefix followed by the diffusers /
// transformers parameter name of that component:
//
//	unet.  UNet2DConditionModel      (unet.down_blocks.1.attentions.0.proj_in.weight)
//	vae.   AutoencoderKL             (vae.decoder.mid_block.attentions.0.to_q.weight)
//	te1.   CLIPTextModel             (te1.text_model.encoder.layers.0.self_attn.q_proj.weight)
//	te2.   CLIPTextModelWithProjection (te2.text_model..., te2.text_projection.weight [out,in])
//	pm.    PhotoMaker id_encoder     (pm.vision_model..., pm.fuse_module..., pm.qformer_perceiver...)
//
// Shapes are in PyTorch order. Layout conversions (OpenCLIP's fused
// in_proj, the transposed text_projection, the VAE's 1×1-conv attention) are
// applied on demand when a tensor's bytes are read.
package weights

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Tensor is one lazily loaded tensor under its canonical name.
type Tensor struct {
	// Name is the full canonical name (also when reached through a Prefix view).
	Name  string
	DType safetensors.DType
	// Shape is in PyTorch order (outermost first).
	Shape []int64
	// File is the path of the file holding the data.
	File string
	// Source is the tensor's name inside File ("" for computed tensors).
	Source string
	// StoredAs is, for a tensor computed from another (a LoRA merged into a
	// weight), the dtype the original was stored in: the natural type to
	// keep it in on a device.
	StoredAs safetensors.DType
	// AlsoReads lists other files a computed tensor reads (a merged LoRA's),
	// so that a loader can release their pages too.
	AlsoReads []string

	load    func() ([]byte, error)
	loadF32 func() ([]float32, error) // optional fast path for computed F32 tensors
}

// Elements returns the product of the shape.
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes returns the raw little-endian data in t.DType. The slice may alias a
// read-only memory mapping: do not modify it, and do not use it after the
// owning Set is closed.
func (t *Tensor) Bytes() ([]byte, error) {
	if t.load == nil {
		return nil, fmt.Errorf("tensor %s has no data source", t.Name)
	}
	b, err := t.load()
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %s: %w", t.File, t.Name, err)
	}
	if want := t.NBytes(); int64(len(b)) != want {
		return nil, fmt.Errorf("%s: tensor %s: got %d bytes, shape %v of %s needs %d", t.File, t.Name, len(b), t.Shape, t.DType, want)
	}
	return b, nil
}

// Float32 returns the data converted to float32 (a fresh slice).
func (t *Tensor) Float32() ([]float32, error) {
	if t.loadF32 != nil {
		v, err := t.loadF32()
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		return v, nil
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	if q, ok := quantType(t.DType); ok {
		v, err := dequantize(q, b, t.Elements())
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", t.File, t.Name, err)
		}
		return v, nil
	}
	return safetensors.DecodeFloat32(t.DType, b)
}

// NBytes returns the size of the tensor's raw data in its DType, including
// ggml's block-quantized types (whole blocks per row), or -1 when the DType
// is unknown or the rows are not whole blocks.
func (t *Tensor) NBytes() int64 {
	if sz := t.DType.Size(); sz > 0 {
		return t.Elements() * int64(sz)
	}
	q, ok := quantType(t.DType)
	if !ok {
		return -1
	}
	ne0 := int64(1)
	if len(t.Shape) > 0 {
		ne0 = t.Shape[len(t.Shape)-1]
	}
	row := q.RowBytes(ne0)
	if row < 0 || ne0 == 0 {
		return max(row, 0)
	}
	return row * (t.Elements() / ne0)
}

// Quantized reports whether the tensor holds ggml quantization blocks (a
// DType such as "Q4_K", from a GGUF file). Bytes then returns the raw blocks
// and Float32 decodes them.
func (t *Tensor) Quantized() bool {
	_, ok := quantType(t.DType)
	return ok
}

// NewTensor makes a tensor whose bytes come from load. It is meant for
// other packages (GGUF reader, tests) that build Sets.
func NewTensor(name string, dtype safetensors.DType, shape []int64, file string, load func() ([]byte, error)) *Tensor {
	return &Tensor{Name: name, DType: dtype, Shape: shape, File: file, load: load}
}

// setData is the storage shared by a Set and its Prefix views.
type setData struct {
	mu      sync.RWMutex
	byName  map[string]*Tensor
	sorted  []string // nil when stale
	closers []io.Closer
}

// Set is a collection of tensors keyed by name. A Set returned by Prefix is
// a live view of its parent with the prefix stripped from the keys.
type Set struct {
	d      *setData
	prefix string
	owner  bool
}

// NewSet returns an empty Set that will close closers on Close.
func NewSet(closers ...io.Closer) *Set {
	return &Set{d: &setData{byName: map[string]*Tensor{}, closers: closers}, owner: true}
}

// Add inserts t under prefix+key of the view (key = t.Name when the Set is
// not a view). A duplicate name is an error.
func (s *Set) Add(t *Tensor) error {
	return s.put(t.Name, t, false)
}

// Replace inserts or replaces the tensor stored under name (relative to the view).
func (s *Set) Replace(name string, t *Tensor) {
	_ = s.put(name, t, true)
}

func (s *Set) put(name string, t *Tensor, replace bool) error {
	key := s.prefix + name
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if old, dup := s.d.byName[key]; dup && !replace {
		return &DuplicateError{Name: key, First: describe(old), Second: describe(t)}
	}
	if _, had := s.d.byName[key]; !had {
		s.d.sorted = nil
	}
	s.d.byName[key] = t
	return nil
}

// DuplicateError reports two tensors mapping to the same canonical name.
type DuplicateError struct{ Name, First, Second string }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("duplicate tensor %s: both %s and %s map to it", e.Name, e.First, e.Second)
}

func describe(t *Tensor) string {
	if t.Source != "" {
		return fmt.Sprintf("%q in %s", t.Source, t.File)
	}
	return fmt.Sprintf("%q", t.Name)
}

// Get returns the tensor stored under name (relative to the view).
func (s *Set) Get(name string) (*Tensor, bool) {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	t, ok := s.d.byName[s.prefix+name]
	return t, ok
}

func (s *Set) allSorted() []string {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if s.d.sorted == nil {
		names := make([]string, 0, len(s.d.byName))
		for n := range s.d.byName {
			names = append(names, n)
		}
		sort.Strings(names)
		s.d.sorted = names
	}
	return s.d.sorted
}

// Names returns the keys of the view, sorted.
func (s *Set) Names() []string {
	all := s.allSorted()
	if s.prefix == "" {
		return append([]string(nil), all...)
	}
	lo := sort.SearchStrings(all, s.prefix)
	var out []string
	for _, n := range all[lo:] {
		if !strings.HasPrefix(n, s.prefix) {
			break
		}
		out = append(out, n[len(s.prefix):])
	}
	return out
}

// Len returns the number of tensors in the view.
func (s *Set) Len() int {
	if s.prefix == "" {
		s.d.mu.RLock()
		defer s.d.mu.RUnlock()
		return len(s.d.byName)
	}
	return len(s.Names())
}

// Prefix returns a live view of the tensors whose names start with p, with p
// stripped from their keys (Tensor.Name keeps the full canonical name).
func (s *Set) Prefix(p string) *Set {
	return &Set{d: s.d, prefix: s.prefix + p}
}

// Close closes the files behind the Set. Closing a view does nothing.
func (s *Set) Close() error {
	if !s.owner {
		return nil
	}
	s.d.mu.Lock()
	cl := s.d.closers
	s.d.closers = nil
	s.d.mu.Unlock()
	var first error
	for _, c := range cl {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *Set) addCloser(c io.Closer) {
	s.d.mu.Lock()
	s.d.closers = append(s.d.closers, c)
	s.d.mu.Unlock()
}

// --- lazy layout transforms -------------------------------------------------

// transposed2D returns load's [r,c] matrix as [c,r].
func transposed2D(load func() ([]byte, error), rows, cols int64, elem int) func() ([]byte, error) {
	return func() ([]byte, error) {
		src, err := load()
		if err != nil {
			return nil, err
		}
		if int64(len(src)) != rows*cols*int64(elem) {
			return nil, fmt.Errorf("transpose: %d bytes for a %dx%d matrix", len(src), rows, cols)
		}
		dst := make([]byte, len(src))
		for i := int64(0); i < rows; i++ {
			for j := int64(0); j < cols; j++ {
				copy(dst[(j*rows+i)*int64(elem):(j*rows+i+1)*int64(elem)], src[(i*cols+j)*int64(elem):])
			}
		}
		return dst, nil
	}
}

// chunk0 returns part k of n equal parts of load's data along dim 0.
func chunk0(load func() ([]byte, error), k, n int) func() ([]byte, error) {
	return func() ([]byte, error) {
		src, err := load()
		if err != nil {
			return nil, err
		}
		if len(src)%n != 0 {
			return nil, fmt.Errorf("cannot split %d bytes into %d parts", len(src), n)
		}
		sz := len(src) / n
		return src[k*sz : (k+1)*sz : (k+1)*sz], nil
	}
}
