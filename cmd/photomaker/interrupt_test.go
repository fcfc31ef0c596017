//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"bytes"
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// SIGTERM (timeout, docker stop) and SIGHUP stop a command as Ctrl-C does,
// so it removes what it was writing; the first signal says that a second
// quits at once.
func TestInterruptibleStopsOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		var errOut bytes.Buffer
		c := cli.NewContext(&cli.App{ErrWriter: &errOut}, nil, nil)
		c.Context = context.Background()
		ctx, stop := interruptible(c)
		require.NoError(t, syscall.Kill(os.Getpid(), sig))
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not stop the command", sig)
		}
		require.Contains(t, errOut.String(), sig.String()+": stopping (again to quit at once)")
		stop()
	}
}
