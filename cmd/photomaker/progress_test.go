package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/photomaker"
)

func feed(p *progress) {
	for i := 0; i <= 300; i++ {
		p.update(photomaker.Progress{Stage: "load", Done: i, Total: 300})
	}
	p.update(photomaker.Progress{Stage: "encode", Done: 0, Total: 1})
	p.update(photomaker.Progress{Stage: "encode", Done: 1, Total: 1})
	for i := 0; i <= 3; i++ {
		p.update(photomaker.Progress{Stage: "denoise", Done: i, Total: 3})
	}
	p.done()
}

// Written to a file or pipe, progress is plain lines: each finished stage
// and each denoising step, without carriage returns.
func TestProgressLinesWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	require.False(t, p.terminal)
	feed(p)
	out := buf.String()
	require.NotContains(t, out, "\r")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 5, out)
	require.True(t, strings.HasPrefix(lines[0], "load 300/300 ("), lines[0])
	require.True(t, strings.HasPrefix(lines[1], "encode 1/1 ("), lines[1])
	require.True(t, strings.HasPrefix(lines[2], "denoise 1/3 "), lines[2]) // the loop's start (0/3) prints nothing
	require.Contains(t, lines[2], " it/s (")
	require.Contains(t, lines[4], "denoise 3/3 ")
	require.Contains(t, lines[4], " it/s")
}

// On a terminal each stage is one bar redrawn in place, ending in a newline.
func TestProgressBarsOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, on: true, terminal: true}
	feed(p)
	out := buf.String()
	require.Equal(t, 3, strings.Count(out, "\n"), out)
	require.Contains(t, out, "\rload     [==============================] 300/300")
	require.Contains(t, out, "\rdenoise  [==============================] 3/3")
	require.True(t, strings.HasSuffix(out, "it/s\n"), out)

	buf.Reset()
	feed(&progress{w: &buf, on: false, terminal: true})
	require.Empty(t, buf.String())
}

// Slow steps (a CPU) read as seconds per step, fast ones as steps per
// second, each with the time the remaining steps will take.
func TestProgressRateAndTimeLeft(t *testing.T) {
	var buf bytes.Buffer
	at := time.Unix(0, 0)
	p := &progress{w: &buf, on: true, now: func() time.Time { return at }}
	p.update(photomaker.Progress{Stage: "denoise", Done: 0, Total: 20})
	at = at.Add(21500 * time.Millisecond)
	p.update(photomaker.Progress{Stage: "denoise", Done: 1, Total: 20})
	at = at.Add(20500 * time.Millisecond)
	p.update(photomaker.Progress{Stage: "denoise", Done: 2, Total: 20})
	require.Equal(t, "denoise 1/20 21.5 s/it, 6m49s left (21.5s)\ndenoise 2/20 21.0 s/it, 6m18s left (42.0s)\n", buf.String())

	// The next image's loop (-n 2) starts its own clock.
	buf.Reset()
	at = at.Add(time.Hour)
	p.update(photomaker.Progress{Stage: "denoise", Done: 0, Total: 20})
	at = at.Add(2 * time.Second)
	p.update(photomaker.Progress{Stage: "denoise", Done: 1, Total: 20})
	require.Equal(t, "denoise 1/20 2.0 s/it, 38s left (2.0s)\n", buf.String())

	require.Equal(t, " 10.00 it/s, 2s left", stepRate(5, 25, 500*time.Millisecond))
	require.Equal(t, " 10.00 it/s", stepRate(25, 25, 2500*time.Millisecond))
	require.Equal(t, " 1.0 s/it", stepRate(3, 3, 3001*time.Millisecond))
	require.Empty(t, stepRate(0, 25, time.Second))
}
