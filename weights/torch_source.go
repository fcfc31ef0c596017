package weights

import "github.com/gophotomaker/photomaker/weights/torch"

// torchFile adapts a PyTorch zip checkpoint (torch.save) to tensorFile. Names
// are flattened by the torch reader (id_encoder.vision_model..., state_dict.model...).
type torchFile struct{ f *torch.File }

func (t torchFile) Path() string                      { return t.f.Path() }
func (t torchFile) Close() error                      { return t.f.Close() }
func (t torchFile) bytes(name string) ([]byte, error) { return t.f.Bytes(name) }
func (t torchFile) list() []rawTensor {
	ts := t.f.Tensors()
	out := make([]rawTensor, len(ts))
	for i, x := range ts {
		out[i] = rawTensor{Name: x.Name, DType: x.DType, Shape: x.Shape}
	}
	return out
}

// openTorch opens a PyTorch zip checkpoint.
func openTorch(path string) (tensorFile, error) {
	f, err := torch.Open(path)
	if err != nil {
		return nil, err
	}
	return torchFile{f}, nil
}
