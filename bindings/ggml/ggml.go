// Package ggml is the only cgo package of photomaker: a thin Go layer over
// the ggml C library that ollama's module compiles for us (ggml base and the
// CPU backend, plus Metal on darwin/arm64). GPU backends are separate shared
// libraries loaded at run time (see LoadBackends).
//
// Tensors are described in ggml order: Shape()[0] is the fastest-varying
// dimension (the last dimension of the matching PyTorch tensor).
package ggml

/*
#cgo CPPFLAGS: -DNDEBUG
// After the build's own flags (cgo's default -O2): our kernels' loops run
// 30–50 % faster at -O3 (a q4_K product on the Zen 3 dev VM: 102–118
// GFLOP/s at -O2, 148–169 at -O3).
#cgo CFLAGS: -O3
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include "ggml_api.h"
#include "cpu_kernels.h"

extern void pmLog(int level, char *text, void *user);
extern void pmAbort(char *msg);

static void pm_log_trampoline(enum ggml_log_level level, const char *text, void *user) {
	pmLog((int)level, (char *)text, user);
}
static void pm_install_log(void) { ggml_log_set(pm_log_trampoline, NULL); }
static void pm_abort_trampoline(const char *msg) { pmAbort((char *)msg); }
static void pm_install_abort(void) { ggml_set_abort_callback(pm_abort_trampoline); }

// A GPU backend library brings its own libggml-base, with its own log and
// abort callbacks (by default: everything to stderr). Loading that base
// first, by path, makes the backend link to this copy (the loader matches
// its soname), and our callbacks go in before the backend says anything.
static int pm_adopt_base(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) return 0;
	void (*log_set)(ggml_log_callback, void *) = (void (*)(ggml_log_callback, void *))dlsym(h, "ggml_log_set");
	ggml_abort_callback_t (*abort_set)(ggml_abort_callback_t) = (ggml_abort_callback_t (*)(ggml_abort_callback_t))dlsym(h, "ggml_set_abort_callback");
	if (log_set) log_set(pm_log_trampoline, NULL);
	if (abort_set) abort_set(pm_abort_trampoline);
	return log_set != NULL; // h stays open: the backend uses this copy
}
*/
import "C"

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	// The C implementation of ggml and its CPU backend.
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"
)

// MaxName is ggml's GGML_MAX_NAME: tensor names must be shorter.
const MaxName = C.PM_GGML_MAX_NAME

// Logger receives ggml's log lines. Debug and info lines are dropped unless
// the logger enables them.
var Logger = slog.Default()

var (
	logMu   sync.Mutex
	logLine strings.Builder
	logLvl  C.int
)

//export pmLog
func pmLog(level C.int, text *C.char, _ unsafe.Pointer) {
	logMu.Lock()
	defer logMu.Unlock()
	if level != C.GGML_LOG_LEVEL_CONT {
		logLvl = level
	}
	logLine.WriteString(C.GoString(text))
	s := logLine.String()
	if !strings.HasSuffix(s, "\n") {
		return // ggml writes some lines in pieces
	}
	logLine.Reset()
	s = strings.TrimRight(s, "\n")
	switch logLvl {
	case C.GGML_LOG_LEVEL_ERROR:
		Logger.Error("ggml: " + s)
	case C.GGML_LOG_LEVEL_WARN:
		Logger.Warn("ggml: " + s)
	case C.GGML_LOG_LEVEL_INFO:
		Logger.Debug("ggml: " + s) // ggml's info is chatty; keep it at debug
	default:
		Logger.Debug("ggml: " + s)
	}
}

//export pmAbort
func pmAbort(msg *C.char) {
	// ggml calls abort() right after this; all we can do is explain.
	fmt.Fprintf(os.Stderr, "photomaker: internal error in ggml: %s\nThis is a bug in photomaker; please report it with the command you ran.\n", C.GoString(msg))
}

func init() {
	// Runs after ollama's package init, replacing its log sink with ours.
	C.pm_install_log()
	C.pm_install_abort()
}

// Type is a ggml element type; the values are GGUF type ids.
type Type uint32

// Types we use.
const (
	TypeF32  Type = C.GGML_TYPE_F32
	TypeF16  Type = C.GGML_TYPE_F16
	TypeQ4_0 Type = C.GGML_TYPE_Q4_0
	TypeQ4_1 Type = C.GGML_TYPE_Q4_1
	TypeQ5_0 Type = C.GGML_TYPE_Q5_0
	TypeQ5_1 Type = C.GGML_TYPE_Q5_1
	TypeQ8_0 Type = C.GGML_TYPE_Q8_0
	TypeQ2_K Type = C.GGML_TYPE_Q2_K
	TypeQ3_K Type = C.GGML_TYPE_Q3_K
	TypeQ4_K Type = C.GGML_TYPE_Q4_K
	TypeQ5_K Type = C.GGML_TYPE_Q5_K
	TypeQ6_K Type = C.GGML_TYPE_Q6_K
	TypeI32  Type = C.GGML_TYPE_I32
	TypeBF16 Type = C.GGML_TYPE_BF16
)

// AllTypes lists the types bound above, for tests and flag parsing.
var AllTypes = []Type{TypeF32, TypeF16, TypeBF16, TypeQ8_0, TypeQ5_0, TypeQ5_1, TypeQ4_0, TypeQ4_1, TypeQ2_K, TypeQ3_K, TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeI32}

// String returns ggml's name for the type ("f16", "q4_K", ...).
func (t Type) String() string { return C.GoString(C.ggml_type_name(C.enum_ggml_type(t))) }

// BlockSize is the number of elements per quantization block (1 for plain types).
func (t Type) BlockSize() int64 { return int64(C.ggml_blck_size(C.enum_ggml_type(t))) }

// BlockBytes is the byte size of one block.
func (t Type) BlockBytes() int64 { return int64(C.ggml_type_size(C.enum_ggml_type(t))) }

// RowBytes is the byte size of a row of n elements (n a multiple of BlockSize).
func (t Type) RowBytes(n int64) int64 {
	return int64(C.ggml_row_size(C.enum_ggml_type(t), C.int64_t(n)))
}

// kFallback maps each k-quant (256-element blocks) to the 32-block type its
// rows take where 256 does not divide them: SDXL's 640-wide rows (about 3 %
// of the UNet's weights) and the 320-, 960- and 1920-wide rows of some
// convolution kernels. These few rows carry much of the error, so q4_K,
// q5_K and q6_K take q8_0: one q4_K UNet step on full-size random weights
// was off against f16 by 5.7 % with q4_0 there, 3.95 % with q5_0 (llama.cpp's
// choice) and 3.56 % with q8_0 (TestQuantizationQualityBig), for a file
// 23 MB (0.8 %) larger and no measurable change in the 512² CPU step.
// q2_K and q3_K, chosen for size, take q4_0.
var kFallback = map[Type]Type{
	TypeQ2_K: TypeQ4_0, TypeQ3_K: TypeQ4_0, TypeQ4_K: TypeQ8_0, TypeQ5_K: TypeQ8_0, TypeQ6_K: TypeQ8_0,
}

// FitRow returns t if its blocks divide a row of n elements; else a k-quant's
// 32-block sibling if that fits (SDXL's 320- and 640-wide rows), else F16.
func (t Type) FitRow(n int64) Type {
	if n%t.BlockSize() == 0 {
		return t
	}
	if fb, ok := kFallback[t]; ok && n%fb.BlockSize() == 0 {
		return fb
	}
	return TypeF16
}

// Quantized reports whether the type is block-quantized.
func (t Type) Quantized() bool { return t.BlockSize() > 1 }

// ParseType accepts ggml's names case-insensitively ("q4_k", "F16").
func ParseType(s string) (Type, error) {
	for _, t := range AllTypes {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	names := make([]string, 0, len(AllTypes))
	for _, t := range AllTypes {
		if t != TypeI32 {
			names = append(names, t.String())
		}
	}
	return 0, fmt.Errorf("unknown tensor type %q (want one of %s)", s, strings.Join(names, ", "))
}

// Quantize converts rows of float32 (n per row) to type t using ggml's
// reference quantizers. It returns the encoded bytes.
func Quantize(t Type, src []float32, n int64) ([]byte, error) {
	return QuantizeRows(t, src, n, 1)
}

// QuantizeRows is Quantize with the rows split across up to workers
// goroutines (0: GOMAXPROCS), at least 64k values each; rows are
// independent, so the bytes equal one ggml call. All callers together run
// at most GOMAXPROCS pieces at once, so a pool of loaders that each
// quantize a tensor does not start a thread per piece and core.
func QuantizeRows(t Type, src []float32, n int64, workers int) ([]byte, error) {
	if n <= 0 || int64(len(src))%n != 0 {
		return nil, fmt.Errorf("quantize: %d values are not whole rows of %d", len(src), n)
	}
	if n%t.BlockSize() != 0 {
		return nil, fmt.Errorf("quantize to %s: row length %d is not a multiple of the block size %d", t, n, t.BlockSize())
	}
	if C.ggml_quantize_requires_imatrix(C.enum_ggml_type(t)) {
		return nil, fmt.Errorf("quantize to %s needs an importance matrix, which photomaker does not support", t)
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	rows, rowBytes := int64(len(src))/n, t.RowBytes(n)
	dst := make([]byte, rows*rowBytes)
	pieces := min(int64(workers), max(1, int64(len(src))/(1<<16)))
	per := max(1, (rows+pieces-1)/pieces)
	if pieces <= 1 || rows <= per {
		quantizeRows(t, src, dst, n)
		return dst, nil
	}
	var wg sync.WaitGroup
	for r0 := int64(0); r0 < rows; r0 += per {
		r1 := min(rows, r0+per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			quantizeSlots <- struct{}{}
			defer func() { <-quantizeSlots }()
			quantizeRows(t, src[r0*n:r1*n], dst[r0*rowBytes:r1*rowBytes], n)
		}()
	}
	wg.Wait()
	return dst, nil
}

// quantizeRows quantizes whole rows of n values of src into dst, which has
// room for them: q4_K, q5_K, q6_K and q8_0 by our quantizers
// (cpu_quantizers.c: ggml's algorithms, several times faster), the other
// types by ggml's.
func quantizeRows(t Type, src []float32, dst []byte, n int64) {
	if len(src) == 0 {
		return
	}
	if C.pm_quantize(C.enum_ggml_type(t), (*C.float)(unsafe.Pointer(&src[0])), unsafe.Pointer(&dst[0]), C.int64_t(len(src))) {
		return
	}
	ggmlQuantizeRows(t, src, dst, n)
}

// fusesMultiplyAdd says whether this build of ggml rounds a·b + c once
// (compiled for FMA), and so whether its q4_K, q5_K and q6_K quantizers round
// their sums as ours do, which never fuse.
func fusesMultiplyAdd() bool { return bool(C.pm_fuses_multiply_add()) }

// ggmlQuantizeRows is quantizeRows by ggml's quantizers alone.
func ggmlQuantizeRows(t Type, src []float32, dst []byte, n int64) {
	if len(src) == 0 {
		return
	}
	C.ggml_quantize_chunk(C.enum_ggml_type(t), (*C.float)(unsafe.Pointer(&src[0])), unsafe.Pointer(&dst[0]), 0, C.int64_t(int64(len(src))/n), C.int64_t(n), nil)
}

// quantizeSlots bounds the QuantizeRows pieces running at once.
var quantizeSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// adoptBase routes the log and abort messages of the libggml-base that the
// backend libraries in dir link to through ours (pm_adopt_base).
func adoptBase(dir string) {
	for _, name := range []string{"libggml-base.so.0", "libggml-base.so", "libggml-base.dylib"} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		cs := C.CString(path)
		ok := C.pm_adopt_base(cs) != 0
		C.free(unsafe.Pointer(cs))
		if !ok {
			Logger.Debug("could not adopt the backend's ggml base library; its messages go to stderr", "path", path)
		}
		return
	}
}
