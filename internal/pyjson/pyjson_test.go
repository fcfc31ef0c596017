package pyjson

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSanitize(t *testing.T) {
	in := `{"a": -Infinity, "b": [Infinity, NaN, 1.5], "s": "NaN and -Infinity stay", "NaNx": 2}`
	var v map[string]any
	require.NoError(t, json.Unmarshal(Sanitize([]byte(in)), &v))
	require.Nil(t, v["a"])
	require.Equal(t, []any{nil, nil, 1.5}, v["b"])
	require.Equal(t, "NaN and -Infinity stay", v["s"])
	require.Equal(t, 2.0, v["NaNx"])
	require.Equal(t, `"x\"NaN"`, string(Sanitize([]byte(`"x\"NaN"`))))
}

func FuzzSanitize(f *testing.F) {
	f.Add([]byte(`{"a": -Infinity}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := Sanitize(b)
		if json.Valid(b) && !json.Valid(out) {
			t.Fatalf("valid JSON became invalid: %q → %q", b, out)
		}
	})
}
