package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func init() { register(versionCommand) }

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the Go toolchain and the pinned ggml source",
		Action: func(c *cli.Context) error {
			ggmlVersion := "unknown"
			if info, ok := debug.ReadBuildInfo(); ok {
				for _, m := range info.Deps {
					if m.Path == "github.com/ollama/ollama" {
						ggmlVersion = "ggml from github.com/ollama/ollama " + m.Version
					}
				}
			}
			fmt.Fprintf(c.App.Writer, "photomaker %s\n%s\n%s %s/%s\n", version, ggmlVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
