package vae

import (
	"context"
	"fmt"

	"github.com/gophotomaker/photomaker/nn"
)

// DecodeTiled decodes latents (NCHW, already divided by the scaling factor,
// w×h latent pixels) in overlapping tiles of tile×tile latent pixels that
// overlap by overlap, and blends the overlaps with linear ramps, so that
// only one tile's activations are in memory at a time. The last tile of a
// row or column is moved back to end at the edge, so every tile has the
// same size. GroupNorm statistics are per tile, so the result is close to,
// not equal to, DecodeImage unless one tile covers the image.
func (v *VAE) DecodeTiled(ctx context.Context, rt *nn.Runtime, latents []float32, w, h, tile, overlap int) ([]float32, error) {
	lc := v.Config.LatentChannels
	n, err := batch(len(latents), lc, w, h, 1, "latents")
	if err != nil {
		return nil, err
	}
	if tile <= 0 || overlap < 0 || overlap >= tile {
		return nil, fmt.Errorf("vae: tile %d with overlap %d: want tile > overlap ≥ 0", tile, overlap)
	}
	xs, ys := tileStarts(w, tile, overlap), tileStarts(h, tile, overlap)
	tw, th := min(tile, w), min(tile, h)
	f, oc := v.Config.Factor, v.Config.OutChannels
	W, H := w*f, h*f
	acc := make([]float32, n*oc*W*H)
	wsum := make([]float32, W*H)
	in := make([]float32, n*lc*tw*th)
	for yi, y0 := range ys {
		wy := ramp(ys, yi, th, f)
		for xi, x0 := range xs {
			wx := ramp(xs, xi, tw, f)
			// Crop the tile's latents (every image and channel).
			for p := 0; p < n*lc; p++ {
				for y := 0; y < th; y++ {
					src := latents[(p*h+y0+y)*w+x0:]
					copy(in[(p*th+y)*tw:(p*th+y+1)*tw], src[:tw])
				}
			}
			out, err := v.DecodeImage(ctx, rt, in, tw, th)
			if err != nil {
				return nil, fmt.Errorf("tile at latent (%d, %d): %w", x0, y0, err)
			}
			TW, TH := tw*f, th*f
			for y := 0; y < TH; y++ {
				row := (y0*f + y) * W
				for x := 0; x < TW; x++ {
					wsum[row+x0*f+x] += wy[y] * wx[x]
				}
			}
			for p := 0; p < n*oc; p++ {
				for y := 0; y < TH; y++ {
					dst := acc[p*W*H+(y0*f+y)*W+x0*f:]
					src := out[(p*TH+y)*TW:]
					for x := 0; x < TW; x++ {
						dst[x] += src[x] * (wy[y] * wx[x])
					}
				}
			}
		}
	}
	for p := 0; p < n*oc; p++ {
		plane := acc[p*W*H : (p+1)*W*H]
		for i := range plane {
			plane[i] /= wsum[i]
		}
	}
	return acc, nil
}

// tileStarts returns the start of each tile along a side of size latent
// pixels: every step = tile−overlap, the last one moved back to end at the
// edge.
func tileStarts(size, tile, overlap int) []int {
	if tile >= size {
		return []int{0}
	}
	var s []int
	for x := 0; ; x += tile - overlap {
		if x+tile >= size {
			return append(s, size-tile)
		}
		s = append(s, x)
	}
}

// ramp returns the blending weights of tile i along one side in output
// pixels: 1 inside, rising linearly across the overlap with the previous
// tile and falling across the overlap with the next one, so that the
// weights of two overlapping tiles sum to 1.
func ramp(starts []int, i, tile, f int) []float32 {
	w := make([]float32, tile*f)
	lo, hi := starts[i]*f, (starts[i]+tile)*f
	for p := range w {
		w[p] = 1
		x := lo + p
		if i > 0 {
			if end := (starts[i-1] + tile) * f; x < end {
				w[p] *= (float32(x-lo) + 0.5) / float32(end-lo)
			}
		}
		if i+1 < len(starts) {
			if start := starts[i+1] * f; x >= start {
				w[p] *= (float32(hi-x) - 0.5) / float32(hi-start)
			}
		}
	}
	return w
}
