package main

import (
	"bytes"
	"strings"
	"testing"

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
