package photomaker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStyles(t *testing.T) {
	require.Len(t, Styles, 11)
	for _, name := range []string{"photographic", "Photographic (Default)", "line-art", "disney", "NEONPUNK", "none", ""} {
		_, err := FindStyle(name)
		require.NoError(t, err, name)
	}
	s, _ := FindStyle("photographic")
	p, n := s.Apply("a photo of a man img", "blurry")
	require.Equal(t, "cinematic photo a photo of a man img . 35mm photograph, film, bokeh, professional, 4k, highly detailed", p)
	require.Equal(t, s.Negative+" blurry", n)
	for _, name := range []string{"default", "(Default)", "DEFAULT"} { // the default style, not none
		s, err := FindStyle(name)
		require.NoError(t, err, name)
		require.Equal(t, DefaultStyle, s.Name, name)
	}
	_, err := FindStyle("watercolour")
	require.ErrorContains(t, err, "unknown style")
	require.ErrorContains(t, err, "choose one of: cinematic, comic-book, digital-art, disney, enhance, fantasy-art, line-art, lowpoly, neonpunk, none, photographic (or the demo's names")
	for _, st := range Styles { // each short name finds its style
		found, err := FindStyle(st.ShortName())
		require.NoError(t, err, st.ShortName())
		require.Equal(t, st.Name, found.Name)
	}
}

func TestSizePresets(t *testing.T) {
	for _, p := range SizePresets {
		require.Zero(t, p.Width%8, p.Name)
		require.Zero(t, p.Height%8, p.Name)
		got, err := FindSize(p.Ratio)
		require.NoError(t, err)
		require.Equal(t, p, got)
	}
	_, err := FindSize("5:4")
	require.ErrorContains(t, err, "16:9")
}
