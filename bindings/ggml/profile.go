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
	"strings"
	"sync"
	"time"
	"unsafe"
)

// OpProfile adds up, by op, the wall time of a scheduler's computations
// (Scheduler.Profile). Each op then runs alone and the backend synchronizes
// after it, so the total is somewhat above an unprofiled run's, but the
// shares show where a GPU spends its time. An op's time includes copying
// inputs from another backend when it starts a split.
type OpProfile struct {
	mu   sync.Mutex
	ops  map[string]*OpTime
	last time.Time
}

// OpTime is the time the ops of one kind took, with the bytes their
// operands and results span and their arithmetic (Tensor.FLOPs): divided
// by the time, how close they came to the device's bandwidth or rate.
type OpTime struct {
	Op      string
	Count   int // nodes computed
	Seconds float64
	Bytes   int64
	FLOPs   int64
}

// NewOpProfile returns an empty profile.
func NewOpProfile() *OpProfile { return &OpProfile{ops: map[string]*OpTime{}} }

// Times returns the ops, the most time first.
func (p *OpProfile) Times() []OpTime {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]OpTime, 0, len(p.ops))
	for _, t := range p.ops {
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

func (p *OpProfile) add(op string, bytes, flops int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	t := p.ops[op]
	if t == nil {
		t = &OpTime{Op: op}
		p.ops[op] = t
	}
	t.Count++
	t.Seconds += now.Sub(p.last).Seconds()
	t.Bytes += bytes
	t.FLOPs += flops
	p.last = now
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
	p.add(op, tt.spannedBytes(), tt.FLOPs())
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
