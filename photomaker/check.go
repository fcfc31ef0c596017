package photomaker

import (
	"fmt"

	"github.com/gophotomaker/photomaker/models/clip"
	"github.com/gophotomaker/photomaker/models/unet"
	"github.com/gophotomaker/photomaker/models/vae"
	"github.com/gophotomaker/photomaker/nn"
	"github.com/gophotomaker/photomaker/weights"
)

// CheckWeights binds and checks the parts of m (an SDXL model, a
// PhotoMaker adapter, or both) as loading them does, without loading any
// weight: a damaged or incomplete file is refused before a conversion or
// a generation spends minutes on it.
func CheckWeights(m *weights.Model) error {
	if m.Kind.IsPhotoMaker() {
		return checkIDEncoder(m.Tensors)
	}
	if err := unet.Check(m.Tensors, "unet."); err != nil {
		return err
	}
	if err := vae.Check(m.Tensors, "vae."); err != nil {
		return err
	}
	if err := clip.CheckSDXL(m.Tensors); err != nil {
		return err
	}
	if m.Adapter != nil {
		return checkIDEncoder(m.Adapter.Tensors)
	}
	return nil
}

// checkIDEncoder binds the ID encoder of an adapter's tensors.
func checkIDEncoder(set *weights.Set) error {
	ver, err := DetectVersion(set, "pm.")
	if err != nil {
		return err
	}
	w := nn.NewWeights(len(set.Prefix("pm.").Names())+16, nil)
	defer w.Free()
	e := &IDEncoder{Version: ver, w: w}
	if err := e.bind(set, "pm.", IDEncoderOptions{}); err != nil {
		return fmt.Errorf("%s ID encoder: %w", ver, err)
	}
	return nil
}
