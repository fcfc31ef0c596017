package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"photomaker"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDevices(t *testing.T) {
	code, out, _ := runCLI(t, "devices")
	require.Equal(t, 0, code)
	require.Contains(t, out, "CPU")
	code, out, _ = runCLI(t, "devices", "--json")
	require.Equal(t, 0, code)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.NotEmpty(t, rows)
	require.Equal(t, "CPU", rows[0]["type"])
	require.Greater(t, rows[0]["total_bytes"], 0.0)
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	require.Equal(t, 0, code)
	require.Contains(t, out, "photomaker")
}

func TestUsageErrorsExit2(t *testing.T) {
	code, _, errOut := runCLI(t, "devices", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--help")
	code, _, _ = runCLI(t, "no-such-command")
	require.Equal(t, 2, code)
}
