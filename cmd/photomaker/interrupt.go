package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// stopSignals are what asks a command to stop: Ctrl-C, and SIGTERM and
// SIGHUP, which timeout, docker stop, systemd and a closed terminal send.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// interruptible returns c's context, canceled by the first stop signal:
// the command stops at its next chance and removes what it was writing. A
// second signal ends the process at once (the default handling is back),
// for work that takes long to reach a stop (one ggml node of a huge
// image can run for minutes). Call stop when done.
func interruptible(c *cli.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancel(c.Context)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	go func() {
		select {
		case sig := <-sigs:
			signal.Stop(sigs)
			fmt.Fprintf(c.App.ErrWriter, "\nphotomaker: %v: stopping (again to quit at once)\n", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}
