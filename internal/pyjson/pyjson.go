// Package pyjson reads JSON written by Python's json module, which emits
// bare Infinity, -Infinity and NaN (diffusers scheduler configs contain
// "lambda_min_clipped": -Infinity). encoding/json rejects those tokens.
package pyjson

// Sanitize returns b with every bare Infinity, -Infinity and NaN outside
// strings replaced by null, so encoding/json can parse it. Other bytes are
// unchanged (strings containing those words are left alone).
func Sanitize(b []byte) []byte {
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out = append(out, c)
			continue
		}
		for _, word := range []string{"-Infinity", "Infinity", "NaN"} {
			if len(b)-i >= len(word) && string(b[i:i+len(word)]) == word && !identChar(b, i+len(word)) && (i == 0 || !identChar(b, i-1)) {
				out = append(out, "null"...)
				i += len(word) - 1
				c = 0
				break
			}
		}
		if c != 0 {
			out = append(out, c)
		}
	}
	return out
}

func identChar(b []byte, i int) bool {
	if i < 0 || i >= len(b) {
		return false
	}
	c := b[i]
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
