package photomaker_test

import (
	"context"
	"fmt"
	"image"
	"log"

	"github.com/gophotomaker/photomaker/imageproc"
	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/photomaker"
)

// Generating a photo of a person from two ID photos. The tiny random-weight
// test model stands in for real weights (its pictures are noise); with real
// files, pass an SDXL checkpoint and photomaker-v1.bin instead.
func Example() {
	ctx := context.Background()
	p, err := photomaker.Load(ctx, photomaker.Config{
		Model:      golden.Path("tiny-sdxl.safetensors"),                     // e.g. "RealVisXL_V4.0.safetensors"
		PhotoMaker: golden.Path("photomaker/photomaker-v1-tiny.safetensors"), // e.g. "photomaker-v1.bin"
		Device:     "cpu",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	var photos []image.Image
	for _, f := range []string{"faces/astronaut_0.png", "faces/astronaut_1.png"} {
		img, err := imageproc.DecodeFile(golden.Path(f), imageproc.Limits{})
		if err != nil {
			log.Fatal(err)
		}
		photos = append(photos, img)
	}
	res, err := p.Generate(ctx, photomaker.Request{
		Prompt:   "a photo of a man img, wearing a spacesuit",
		IDImages: photos,
		Width:    128, Height: 128, Steps: 4, Seed: 42,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Kind(), len(res.Images), res.Images[0].Bounds().Dx(), "x", res.Images[0].Bounds().Dy(), "seed", res.Seed)
	// Output: PhotoMaker v1 adapter 1 128 x 128 seed 42
}
