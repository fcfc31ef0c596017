package imageproc

import (
	"bytes"
	"image"
	"image/color"
	"math"
	"runtime"
	"testing"
)

func TestShortestEdgeSize(t *testing.T) {
	for _, c := range []struct{ w, h, rw, rh int }{
		{256, 256, 224, 224},
		{192, 192, 224, 224},
		{240, 300, 224, 280},
		{300, 240, 280, 224},
		{1000, 333, 672, 224}, // int(224*1000/333) = int(672.67)
		{333, 1000, 224, 672},
		{225, 1, 50400, 224},
	} {
		rw, rh := ShortestEdgeSize(c.w, c.h, 224)
		if rw != c.rw || rh != c.rh {
			t.Errorf("%dx%d -> %dx%d, want %dx%d", c.w, c.h, rw, rh, c.rw, c.rh)
		}
	}
	if l, tp := CenterCropOffsets(224, 281, 224, 224); l != 0 || tp != 28 {
		t.Errorf("crop offsets %d,%d", l, tp)
	}
}

func TestResizeIdentityAndConstant(t *testing.T) {
	img := loadFace(t, "astronaut_3")
	for _, f := range []Filter{PILBicubic, TorchBicubic} {
		same := ResizeRGB(img, 240, 300, f)
		if !bytes.Equal(same.Pix, ToRGB(img).Pix) {
			t.Fatalf("%v: same-size resize changed pixels", f)
		}
	}
	// A constant image stays constant in both directions and filters.
	c := image.NewNRGBA(image.Rect(0, 0, 37, 23))
	for i := 0; i < len(c.Pix); i += 4 {
		copy(c.Pix[i:], []uint8{17, 128, 250, 255})
	}
	for _, f := range []Filter{PILBicubic, TorchBicubic} {
		for _, sz := range [][2]int{{224, 224}, {5, 3}, {37, 100}, {100, 23}, {1, 1}} {
			r := ResizeRGB(c, sz[0], sz[1], f)
			for i := 0; i < len(r.Pix); i += 4 {
				if !bytes.Equal(r.Pix[i:i+4], []uint8{17, 128, 250, 255}) {
					t.Fatalf("%v %v: pixel %v", f, sz, r.Pix[i:i+4])
				}
			}
		}
	}
}

// TestResizeKnownValues checks a 1-D case worked out by hand from Pillow's
// algorithm: upscaling [0, 255] to 4 samples.
func TestResizeKnownValues(t *testing.T) {
	m := image.NewGray(image.Rect(0, 0, 2, 1))
	m.Pix[0], m.Pix[1] = 0, 255
	r := ResizeBicubic(m, 4, 1)
	// centers 0.25, 0.75, 1.25, 1.75 in input pixel units: taps at
	// offsets from the sample centre; kernel a=-0.5, weights normalised
	// over the in-range taps.
	want := make([]uint8, 4)
	for xx := 0; xx < 4; xx++ {
		center := (float64(xx) + 0.5) * 0.5
		var ws, acc float64
		for x := 0; x < 2; x++ {
			w := bicubicKernel(float64(x) - center + 0.5)
			ws += w
			acc += w * float64(m.Pix[x])
		}
		want[xx] = uint8(math.Min(255, math.Max(0, math.Floor(acc/ws+0.5))))
	}
	for x := 0; x < 4; x++ {
		if r.Pix[4*x] != want[x] || r.Pix[4*x+1] != want[x] || r.Pix[4*x+2] != want[x] {
			t.Fatalf("pixel %d = %v, want grey %d (row %v)", x, r.Pix[4*x:4*x+4], want[x], want)
		}
	}
}

func TestResizeAlphaPremultiplied(t *testing.T) {
	// Left half opaque red, right half fully transparent green: with
	// premultiplied resampling, the transparent colour never bleeds in.
	m := image.NewNRGBA(image.Rect(0, 0, 8, 2))
	for y := 0; y < 2; y++ {
		for x := 0; x < 8; x++ {
			c := color.NRGBA{255, 0, 0, 255}
			if x >= 4 {
				c = color.NRGBA{0, 255, 0, 0}
			}
			m.SetNRGBA(x, y, c)
		}
	}
	r := ResizeBicubic(m, 3, 1)
	for x := 0; x < 3; x++ {
		c := r.NRGBAAt(x, 0)
		if c.A != 0 && c.G > 2 {
			t.Fatalf("pixel %d = %v: transparent green leaked", x, c)
		}
	}
	if c := r.NRGBAAt(0, 0); c.A < 250 || c.R < 250 {
		t.Fatalf("left pixel %v", c)
	}
	if c := r.NRGBAAt(2, 0); c.A > 5 {
		t.Fatalf("right pixel %v", c)
	}
}

func TestResizeGrayAndOffsetBounds(t *testing.T) {
	g := image.NewGray(image.Rect(0, 0, 50, 40))
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 7)
	}
	a := ResizeBicubic(g, 31, 17)
	// The same pixels behind non-zero bounds give the same result.
	sub := image.NewGray(image.Rect(-10, -10, 60, 50))
	for y := 0; y < 40; y++ {
		copy(sub.Pix[sub.PixOffset(0, y):], g.Pix[y*g.Stride:y*g.Stride+50])
	}
	b := ResizeBicubic(sub.SubImage(image.Rect(0, 0, 50, 40)), 31, 17)
	if !bytes.Equal(a.Pix, b.Pix) {
		t.Fatal("offset bounds changed the result")
	}
	for i := 0; i < len(a.Pix); i += 4 {
		if a.Pix[i] != a.Pix[i+1] || a.Pix[i] != a.Pix[i+2] {
			t.Fatal("grey input produced colour")
		}
	}
}

func TestToFromFloatCHW(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 256, 1))
	for x := 0; x < 256; x++ {
		m.SetNRGBA(x, 0, color.NRGBA{uint8(x), uint8(255 - x), uint8(x / 2), 255})
	}
	f := ToRGBFloatCHW(m)
	if f[0] != -1 || f[255] != 1 || f[256] != 1 {
		t.Fatalf("range: %v %v %v", f[0], f[255], f[256])
	}
	back := FromFloatCHW(f, 256, 1)
	if !bytes.Equal(back.Pix, m.Pix) {
		t.Fatal("8-bit -> [-1,1] -> 8-bit is not the identity")
	}
	// Clamping, NaN and round-half-to-even.
	vals := []float32{-3, 3, float32(math.NaN()), float32(math.Inf(1)), 2*(0.5/255) - 1, 2*(1.5/255) - 1}
	data := make([]float32, 3*len(vals))
	copy(data, vals)
	got := FromFloatCHW(data, len(vals), 1)
	want := []uint8{0, 255, 0, 255}
	for i, w := range want {
		if got.Pix[4*i] != w {
			t.Errorf("value %v -> %d, want %d", vals[i], got.Pix[4*i], w)
		}
	}
	// 0.5 and 1.5 (up to float32 rounding) round to 0 or 1 and 1 or 2.
	if v := got.Pix[16]; v > 1 {
		t.Errorf("0.5/255 -> %d", v)
	}
	if v := got.Pix[20]; v < 1 || v > 2 {
		t.Errorf("1.5/255 -> %d", v)
	}
}

func BenchmarkResizeBicubic256to224(b *testing.B) {
	img := ToRGB(loadFace(b, "astronaut_0"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ResizeRGB(img, 224, 224, PILBicubic)
	}
}

func BenchmarkResizeBicubic1024to224Torch(b *testing.B) {
	img := ResizeRGB(loadFace(b, "astronaut_3"), 1024, 1280, PILBicubic)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ResizeRGB(img, 224, 280, TorchBicubic)
	}
}

func BenchmarkCLIPPixels(b *testing.B) {
	img := loadFace(b, "astronaut_3")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		CLIPPixels(img)
	}
}

// TestResizeParallelDeterministic: splitting rows across goroutines does
// not change the result.
func TestResizeParallelDeterministic(t *testing.T) {
	img := ResizeRGB(loadFace(t, "astronaut_3"), 960, 1200, PILBicubic)
	par := ResizeRGB(img, 224, 280, TorchBicubic)
	prev := runtime.GOMAXPROCS(1)
	ser := ResizeRGB(img, 224, 280, TorchBicubic)
	runtime.GOMAXPROCS(prev)
	if !bytes.Equal(par.Pix, ser.Pix) {
		t.Fatal("parallel and serial resize differ")
	}
}
