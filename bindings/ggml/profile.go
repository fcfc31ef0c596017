package ggml

/*
#include <stdint.h>
#include "ggml_api.h"

extern bool pmEval(struct ggml_tensor *t, bool ask, void *user);
static bool pm_eval_trampoline(struct ggml_tensor *t, bool ask, void *user) { return pmEval(t, ask, user); }
static void pm_set_eval(ggml_backend_sched_t s, uintptr_t user) {
	ggml_backend_sched_set_eval_callback(s, user ? pm_eval_trampoline : NULL, (void *)user);
}
*/
import "C"

import (
	"cmp"
	"runtime/cgo"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// OpProfile adds up, by op and by the shapes of its operands, the wall
// time of a scheduler's computations (Scheduler.Profile). Each op then runs
// alone and the backend synchronizes after it, so the total is somewhat
// above an unprofiled run's, but the shares show where a GPU spends its
// time. An op's time includes copying inputs from another backend when it
// starts a split.
type OpProfile struct {
	mu     sync.Mutex
	ops    map[string]*OpTime
	shapes map[string]map[string]*OpTime // by op, then operand shapes
	last   time.Time
}

// OpTime is the time the ops of one kind took, with the bytes their
// operands and results span and their arithmetic (Tensor.FLOPs): divided
// by the time, how close they came to the device's bandwidth or rate.
type OpTime struct {
	Op      string // for Shapes' entries, the operands' shapes
	Count   int    // nodes computed
	Seconds float64
	Bytes   int64
	FLOPs   int64
	// Shapes splits the op's nodes by their operands' shapes, the most
	// time first: which attention or product falls short of the rate.
	Shapes []OpTime
}

// NewOpProfile returns an empty profile.
func NewOpProfile() *OpProfile {
	return &OpProfile{ops: map[string]*OpTime{}, shapes: map[string]map[string]*OpTime{}}
}

// Times returns the ops, the most time first.
func (p *OpProfile) Times() []OpTime {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := byTime(p.ops)
	for i := range out {
		out[i].Shapes = byTime(p.shapes[out[i].Op])
	}
	return out
}

// byTime lists m's entries, the most time first.
func byTime(m map[string]*OpTime) []OpTime {
	out := make([]OpTime, 0, len(m))
	for _, t := range m {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b OpTime) int {
		return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), cmp.Compare(a.Op, b.Op))
	})
	return out
}

// start marks the beginning of a computation.
func (p *OpProfile) start() {
	p.mu.Lock()
	p.last = time.Now()
	p.mu.Unlock()
}

func (p *OpProfile) add(op, shapes string, bytes, flops int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	seconds := now.Sub(p.last).Seconds()
	p.last = now
	byShape := p.shapes[op]
	if byShape == nil {
		byShape = map[string]*OpTime{}
		p.shapes[op] = byShape
	}
	for _, e := range []struct {
		m   map[string]*OpTime
		key string
	}{{p.ops, op}, {byShape, shapes}} {
		t := e.m[e.key]
		if t == nil {
			t = &OpTime{Op: e.key}
			e.m[e.key] = t
		}
		t.Count++
		t.Seconds += seconds
		t.Bytes += bytes
		t.FLOPs += flops
	}
}

// operandShapes names node t's operands by their shapes, trailing ones
// left out: "64×4096×10×2, 64×77×10×2, …" for an attention, "1280×2048,
// 1280" for a bias.
func (t *Tensor) operandShapes() string {
	var b strings.Builder
	for i := range len(t.p.src) {
		s := t.Src(i)
		if s == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		sh := s.Shape()
		n := 4
		for n > 1 && sh[n-1] == 1 {
			n--
		}
		for d := range n {
			if d > 0 {
				b.WriteString("×")
			}
			b.WriteString(strconv.FormatInt(sh[d], 10))
		}
	}
	return b.String()
}

// viewOps cost nothing: asking for them would only add synchronizations.
var viewOps = map[string]bool{"NONE": true, "RESHAPE": true, "VIEW": true, "PERMUTE": true, "TRANSPOSE": true}

//export pmEval
func pmEval(t *C.struct_ggml_tensor, ask C.bool, user unsafe.Pointer) C.bool {
	p := cgo.Handle(uintptr(user)).Value().(*OpProfile)
	tt := &Tensor{p: t}
	op := tt.Op()
	if ask {
		return C.bool(!viewOps[op])
	}
	switch {
	case (op == "CUSTOM" || strings.HasPrefix(op, "MAP_CUSTOM")) && tt.Name() != "":
		op = tt.Name() // our CPU kernels name their nodes (cpu_*.c)
	case op == "MUL_MAT": // by operand types: weights (f16, quantized) times activations or columns
		op += " " + tt.Src(0).Type().String() + "·" + tt.Src(1).Type().String()
	}
	p.add(op, tt.operandShapes(), tt.spannedBytes(), tt.FLOPs())
	return true
}

// spannedBytes is what node t and its operands span in memory: the
// traffic of an op that reads each operand once and writes its result. A
// copy into a tensor (SET or ACC of a band, CPY into a state) writes as
// much as it reads from its other operands; another op in place reads and
// writes its result.
func (t *Tensor) spannedBytes() int64 {
	var n int64
	inPlace := false
	for i := range len(t.p.src) {
		switch s := t.Src(i); {
		case s == nil:
		case t.p.view_src != nil && (s.p == t.p.view_src || s.p.view_src == t.p.view_src): // t is (a view of) s
			inPlace = true
		default:
			n += s.Bytes()
		}
	}
	switch op := t.Op(); {
	case !inPlace:
		return n + t.Bytes()
	case op == "SET" || op == "ACC" || op == "CPY":
		return 2 * n
	}
	return n + 2*t.Bytes()
}

// Profile makes the scheduler's computations add their op times to p; nil
// stops profiling.
func (s *Scheduler) Profile(p *OpProfile) {
	if s.profile != 0 {
		C.pm_set_eval(s.p, 0)
		s.profile.Delete()
		s.profile = 0
	}
	if p != nil {
		s.profile = cgo.NewHandle(p)
		C.pm_set_eval(s.p, C.uintptr_t(s.profile))
	}
}
