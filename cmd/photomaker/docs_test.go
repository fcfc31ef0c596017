package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// docs/cli.md is the CLI reference; it must name every command and flag
// (regenerate it with `make docs`).
func TestCLIReferenceIsCurrent(t *testing.T) {
	b, err := os.ReadFile(golden.Root() + "/docs/cli.md")
	require.NoError(t, err)
	doc := string(b)
	for _, cmd := range commands() {
		require.True(t, strings.Contains(doc, "## photomaker "+cmd.Name), "command %s missing from docs/cli.md: run make docs", cmd.Name)
		for _, f := range cmd.Flags {
			if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue
			}
			for _, name := range f.Names() {
				if len(name) > 1 {
					require.True(t, strings.Contains(doc, "--"+name+" ") || strings.Contains(doc, "--"+name+","), "flag --%s of %s missing from docs/cli.md: run make docs", name, cmd.Name)
				}
			}
		}
	}
}
