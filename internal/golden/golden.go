// Package golden gives tests access to the reference kit's goldens and tiny
// models, from the repository's testdata/ (always present) or, for files too
// large to vendor, from ../shared/reference beside the checkout (optional).
package golden

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/gophotomaker/photomaker/internal/pyjson"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Root returns the repository root (the folder holding go.mod).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Path returns the path of a file under testdata/.
func Path(rel string) string { return filepath.Join(Root(), "testdata", rel) }

// SharedPath returns a path under ../shared/reference, skipping the test when
// the kit is not beside the checkout.
func SharedPath(t testing.TB, rel string) string {
	p := filepath.Join(Root(), "..", "shared", "reference", rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference kit file %s not present", p)
	}
	return p
}

var (
	mu    sync.Mutex
	files = map[string]*safetensors.File{}
)

// File opens testdata/golden/<name>.safetensors once per test binary.
func File(t testing.TB, name string) *safetensors.File {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if f, ok := files[name]; ok {
		return f
	}
	f, err := safetensors.Open(Path(filepath.Join("golden", name+".safetensors")))
	if err != nil {
		t.Fatalf("open golden %s: %v", name, err)
	}
	files[name] = f
	return f
}

// Tensor is a golden tensor as float32 plus its shape.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// Ref resolves a reference of the form "file:name" (as cases.json writes
// them) to a float32 tensor. A trailing "[:n]" keeps the first n rows.
func Ref(t testing.TB, ref string) Tensor {
	t.Helper()
	file, name, ok := strings.Cut(ref, ":")
	if !ok {
		t.Fatalf("bad golden reference %q", ref)
	}
	rows := -1
	if i := strings.Index(name, "[:"); i >= 0 && strings.HasSuffix(name, "]") {
		var n int
		if err := json.Unmarshal([]byte(name[i+2:len(name)-1]), &n); err != nil {
			t.Fatalf("bad row count in %q", ref)
		}
		rows, name = n, name[:i]
	}
	f := File(t, file)
	info, ok := f.Tensor(name)
	if !ok {
		t.Fatalf("golden %s has no tensor %q", file, name)
	}
	data, err := f.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	shape := append([]int64(nil), info.Shape...)
	if rows >= 0 {
		per := len(data) / int(shape[0])
		data = data[:rows*per]
		shape[0] = int64(rows)
	}
	return Tensor{Shape: shape, Data: data}
}

// Int64 resolves a "file:name" reference to an integer tensor.
func Int64(t testing.TB, ref string) []int64 {
	t.Helper()
	file, name, _ := strings.Cut(ref, ":")
	v, err := File(t, file).Int64(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Case is one entry of cases.json.
type Case struct {
	Name          string                     `json:"name"`
	Kind          string                     `json:"kind"`
	ReferenceCall string                     `json:"reference_call"`
	Inputs        map[string]json.RawMessage `json:"inputs"`
	Outputs       map[string]json.RawMessage `json:"outputs"`
	Intermediates map[string]json.RawMessage `json:"intermediates"`
	Notes         any                        `json:"notes"`
	Extra         map[string]json.RawMessage `json:"extra"`
}

// Manifest is cases.json.
type Manifest struct {
	Meta  map[string]json.RawMessage `json:"meta"`
	Cases []Case                     `json:"cases"`
}

var manifest = sync.OnceValues(func() (*Manifest, error) {
	b, err := os.ReadFile(Path("golden/cases.json"))
	if err != nil {
		return nil, err
	}
	// Python's json writes bare Infinity/NaN (e.g. lambda_min_clipped),
	// which encoding/json rejects; they only occur in config values.
	b = pyjson.Sanitize(b)
	var m Manifest
	return &m, json.Unmarshal(b, &m)
})

// Cases returns cases.json.
func Cases(t testing.TB) *Manifest {
	t.Helper()
	m, err := manifest()
	if err != nil {
		t.Fatalf("cases.json: %v", err)
	}
	return m
}

// FindCase returns the case with the given name.
func FindCase(t testing.TB, name string) Case {
	t.Helper()
	for _, c := range Cases(t).Cases {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no golden case %q", name)
	return Case{}
}

// String decodes a JSON string field such as a case input that names a
// golden tensor.
func String(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("expected a JSON string, got %s", raw)
	}
	return s
}

// MaxAbsDiff returns max |a-b| and fails the test on a length mismatch.
func MaxAbsDiff(t testing.TB, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("length %d, want %d", len(got), len(want))
	}
	m := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}

// AssertClose fails unless |got-want| <= abs + rel·|want| elementwise.
func AssertClose(t testing.TB, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		lim := abs + rel*math.Abs(float64(want[i]))
		if math.IsNaN(d) || d > lim {
			if math.IsNaN(d) || d-lim > worst || at < 0 {
				worst, at = d-lim, i
			}
		}
	}
	if at >= 0 {
		t.Fatalf("%s: element %d = %g, want %g (max abs diff %g, tolerance abs %g rel %g)", what, at, got[at], want[at], MaxAbsDiff(t, got, want), abs, rel)
	}
	t.Logf("%s: max abs diff %.3g (tolerance abs %g rel %g)", what, MaxAbsDiff(t, got, want), abs, rel)
}
