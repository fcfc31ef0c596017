package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gophotomaker/photomaker/photomaker"
)

// progress draws a one-line bar per stage on a terminal-like writer.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	on      bool
	stage   string
	started time.Time
	drawn   time.Time
}

func newProgress(w io.Writer, on bool) *progress { return &progress{w: w, on: on} }

func (p *progress) update(ev photomaker.Progress) {
	if !p.on || ev.Total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Stage != p.stage {
		if p.stage != "" {
			fmt.Fprintln(p.w)
		}
		p.stage, p.started = ev.Stage, time.Now()
	} else if ev.Done < ev.Total && time.Since(p.drawn) < 100*time.Millisecond {
		return // redraw at most ten times a second
	}
	p.drawn = time.Now()
	const width = 30
	filled := width * ev.Done / ev.Total
	rate := ""
	if el := time.Since(p.started).Seconds(); ev.Done > 1 && el > 0 && ev.Stage == "denoise" {
		rate = fmt.Sprintf(" %.2f it/s", float64(ev.Done)/el)
	}
	fmt.Fprintf(p.w, "\r%-8s [%s%s] %d/%d%s", ev.Stage, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), ev.Done, ev.Total, rate)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on && p.stage != "" {
		fmt.Fprintln(p.w)
		p.stage = ""
	}
}
