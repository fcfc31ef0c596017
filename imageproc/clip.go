package imageproc

import (
	"image"
)

// CLIPSize is the side of the square CLIP's vision tower takes
// (CLIPImageProcessor's default crop).
const CLIPSize = 224

// CLIPMean and CLIPStd normalise each RGB channel as OpenAI's CLIP was
// trained (CLIPImageProcessor's defaults).
var (
	CLIPMean = [3]float32{0.48145466, 0.4578275, 0.40821073}
	CLIPStd  = [3]float32{0.26862954, 0.26130258, 0.27577711}
)

// ShortestEdgeSize is transformers' get_resize_output_image_size with an int
// size and default_to_square=False: the shorter side becomes size and the
// longer one int(size * long / short) (truncated). It returns width, height.
func ShortestEdgeSize(w, h, size int) (int, int) {
	short, long := w, h
	if w > h {
		short, long = h, w
	}
	newLong := int(float64(size*long) / float64(short))
	if w <= h {
		return size, newLong
	}
	return newLong, size
}

// CenterCropOffsets returns the top-left corner of transformers'
// center_crop: top = (h - ch) // 2, left = (w - cw) // 2.
func CenterCropOffsets(w, h, cw, ch int) (left, top int) {
	return floorDiv(w-cw, 2), floorDiv(h-ch, 2)
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// CLIPImage returns the 224×224 RGB image CLIPImageProcessor feeds to the
// vision tower, before rescaling and normalisation: convert("RGB"), resize
// the shortest edge to 224 with the bicubic filter f, center crop 224×224
// (zero padding where the resized image would be smaller, which a
// shortest-edge resize to 224 never produces).
func CLIPImage(img image.Image, f Filter) *image.NRGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	rw, rh := ShortestEdgeSize(w, h, CLIPSize)
	resized := ResizeRGB(img, rw, rh, f)
	left, top := CenterCropOffsets(rw, rh, CLIPSize, CLIPSize)
	out := image.NewNRGBA(image.Rect(0, 0, CLIPSize, CLIPSize))
	for y := 0; y < CLIPSize; y++ {
		sy := top + y
		if sy < 0 || sy >= rh {
			continue
		}
		for x := 0; x < CLIPSize; x++ {
			sx := left + x
			if sx < 0 || sx >= rw {
				continue
			}
			copy(out.Pix[y*out.Stride+4*x:y*out.Stride+4*x+4], resized.Pix[sy*resized.Stride+4*sx:sy*resized.Stride+4*sx+4])
		}
	}
	return out
}

// CLIPPixels returns CLIPImageProcessor()(img).pixel_values[0] as computed
// by transformers 5 (whose default CLIPImageProcessor is the torchvision
// backend, the one that produced the reference goldens): float32 in CHW
// order, shape [3,224,224], bicubic resize of the uint8 image with
// torchvision's antialiased uint8 kernel, center crop, then
// (v - 255·mean) / (255·std) in float32.
func CLIPPixels(img image.Image) []float32 {
	return normalizeTorch(CLIPInput(img), CLIPMean, CLIPStd)
}

// CLIPInput is the 224×224 image CLIPPixels normalises: CLIPImage with
// torchvision's bicubic filter.
func CLIPInput(img image.Image) *image.NRGBA { return CLIPImage(img, TorchBicubic) }

// CLIPPixelsPIL is CLIPPixels with the PIL backend (transformers 4's
// CLIPImageProcessor, transformers 5's CLIPImageProcessorPil): Pillow's
// bicubic resize, rescale by 1/255 then normalize.
func CLIPPixelsPIL(img image.Image) []float32 {
	return NormalizeCHW(CLIPImage(img, PILBicubic), CLIPMean, CLIPStd)
}

// normalizeTorch is torchvision's fused rescale+normalize as transformers 5
// applies it: mean and std scaled by 255 in float32, then
// (float32(v) - mean255) / std255.
func normalizeTorch(m *image.NRGBA, mean, std [3]float32) []float32 {
	var lut [3][256]float32
	for c := 0; c < 3; c++ {
		// Rounded to float32 explicitly: Go may otherwise fuse the
		// product into the subtraction below (arm64's FMA) and miss
		// torch's values by an ulp.
		m255 := float32(mean[c] * 255)
		s255 := float32(std[c] * 255)
		for v := 0; v < 256; v++ {
			lut[c][v] = (float32(v) - m255) / s255
		}
	}
	return applyLUT(m, &lut)
}

// NormalizeCHW turns an 8-bit image into CHW float32 planes
// (v/255 - mean[c]) / std[c], computed like transformers' numpy rescale
// (float64 product cast to float32) followed by normalize (float32
// arithmetic).
func NormalizeCHW(m *image.NRGBA, mean, std [3]float32) []float32 {
	var lut [3][256]float32
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			x := float32(float64(v) * (1.0 / 255.0))
			lut[c][v] = (x - mean[c]) / std[c]
		}
	}
	return applyLUT(m, &lut)
}

func applyLUT(m *image.NRGBA, lut *[3][256]float32) []float32 {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	out := make([]float32, 3*w*h)
	for y := 0; y < h; y++ {
		row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				out[c*w*h+y*w+x] = lut[c][row[4*x+c]]
			}
		}
	}
	return out
}
