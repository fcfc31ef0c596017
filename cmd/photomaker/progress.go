package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/gophotomaker/photomaker/photomaker"
)

// progress reports the stages of a generation: on a terminal a one-line bar
// per stage, redrawn in place; elsewhere (a log file, a pipe, serve's
// output) plain lines, one per denoising step and one per finished stage,
// so logs stay readable.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	on       bool
	terminal bool
	stage    string
	last     int // the stage's Done so far: less starts it again (the next image's loop)
	started  time.Time
	drawn    time.Time
	now      func() time.Time // nil: time.Now (tests set a clock)
}

func (p *progress) clock() time.Time {
	if p.now == nil {
		return time.Now()
	}
	return p.now()
}

func newProgress(w io.Writer, on bool) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, on: on, terminal: ok && term.IsTerminal(int(f.Fd()))}
}

// stepRate is the denoising speed as people read it: steps per second, or
// seconds per step when a step takes longer than a second (CPUs), and the
// time the remaining steps will take at that speed.
func stepRate(done, total int, elapsed time.Duration) string {
	if done <= 0 || elapsed <= 0 {
		return ""
	}
	perStep := elapsed / time.Duration(done)
	rate := fmt.Sprintf(" %.2f it/s", float64(done)/elapsed.Seconds())
	if perStep > time.Second {
		rate = fmt.Sprintf(" %.1f s/it", perStep.Seconds())
	}
	if left := perStep * time.Duration(total-done); left >= time.Second {
		rate += ", " + left.Round(time.Second).String() + " left"
	}
	return rate
}

func (p *progress) update(ev photomaker.Progress) {
	if !p.on || ev.Total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Stage != p.stage || ev.Done < p.last {
		if p.stage != "" && p.terminal {
			fmt.Fprintln(p.w)
		}
		p.stage, p.started = ev.Stage, p.clock()
	} else if p.terminal && ev.Done < ev.Total && p.clock().Sub(p.drawn) < 100*time.Millisecond {
		return // redraw at most ten times a second
	}
	p.last = ev.Done
	p.drawn = p.clock()
	elapsed := p.drawn.Sub(p.started)
	rate := ""
	if ev.Stage == "denoise" {
		rate = stepRate(ev.Done, ev.Total, elapsed)
	}
	if !p.terminal {
		if ev.Done == ev.Total || (ev.Stage == "denoise" && ev.Done > 0) {
			fmt.Fprintf(p.w, "%s %d/%d%s (%.1fs)\n", ev.Stage, ev.Done, ev.Total, rate, elapsed.Seconds())
		}
		return
	}
	const width = 30
	filled := width * ev.Done / ev.Total
	fmt.Fprintf(p.w, "\r%-8s [%s%s] %d/%d%s", ev.Stage, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), ev.Done, ev.Total, rate)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on && p.stage != "" && p.terminal {
		fmt.Fprintln(p.w)
	}
	p.stage = ""
}
