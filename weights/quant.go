package weights

import (
	"strings"

	"github.com/gophotomaker/photomaker/bindings/ggml"
	"github.com/gophotomaker/photomaker/weights/gguf"
	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// QuantDType is the DType of a tensor stored in ggml's block-quantized type
// t: the type's name in upper case ("Q4_K", "Q8_0").
func QuantDType(t gguf.Type) safetensors.DType { return safetensors.DType(strings.ToUpper(t.Name())) }

// quantType reports the ggml block type behind a quantized DType.
func quantType(d safetensors.DType) (gguf.Type, bool) {
	if d.Size() > 0 {
		return 0, false
	}
	t, err := gguf.ParseType(string(d))
	if err != nil || t.BlockSize() <= 1 {
		return 0, false
	}
	return t, true
}

// dequantize decodes ggml blocks with ggml's own decoders (the only reason
// this package links the bindings).
func dequantize(t gguf.Type, data []byte, n int64) ([]float32, error) {
	return ggml.Dequantize(ggml.Type(t), data, n)
}
