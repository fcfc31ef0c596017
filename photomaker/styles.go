package photomaker

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultNegativePrompt is the official demo's negative prompt.
const DefaultNegativePrompt = "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry"

// Style is a prompt template of the official demo: "{prompt}" in Prompt is
// replaced by the user's prompt, and Negative is put before the user's
// negative prompt.
type Style struct {
	Name, Prompt, Negative string
}

// DefaultStyle is the official demo's default style.
const DefaultStyle = "Photographic (Default)"

// Styles are the official demo's ten templates plus "(No style)".
var Styles = []Style{
	{"(No style)", "{prompt}", ""},
	{"Cinematic", "cinematic still {prompt} . emotional, harmonious, vignette, highly detailed, high budget, bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy", "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, ugly, disfigured"},
	{"Disney Charactor", "A Pixar animation character of {prompt} . pixar-style, studio anime, Disney, high-quality", "lowres, bad anatomy, bad hands, text, bad eyes, bad arms, bad legs, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, blurry, grayscale, noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo"},
	{"Digital Art", "concept art {prompt} . digital artwork, illustrative, painterly, matte painting, highly detailed", "photo, photorealistic, realism, ugly"},
	{"Photographic (Default)", "cinematic photo {prompt} . 35mm photograph, film, bokeh, professional, 4k, highly detailed", "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly"},
	{"Fantasy art", "ethereal fantasy concept art of  {prompt} . magnificent, celestial, ethereal, painterly, epic, majestic, magical, fantasy art, cover art, dreamy", "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed, glitch, noise, noisy, off-center, deformed, cross-eyed, closed eyes, bad anatomy, ugly, disfigured, sloppy, duplicate, mutated, black and white"},
	{"Neonpunk", "neonpunk style {prompt} . cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, crisp, detailed, sleek, ultramodern, magenta highlights, dark purple shadows, high contrast, cinematic, ultra detailed, intricate, professional", "painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, disfigured"},
	{"Enhance", "breathtaking {prompt} . award-winning, professional, highly detailed", "ugly, deformed, noisy, blurry, distorted, grainy"},
	{"Comic book", "comic {prompt} . graphic illustration, comic art, graphic novel art, vibrant, highly detailed", "photograph, deformed, glitch, noisy, realistic, stock photo"},
	{"Lowpoly", "low-poly style {prompt} . low-poly game art, polygon mesh, jagged, blocky, wireframe edges, centered composition", "noisy, sloppy, messy, grainy, highly detailed, ultra textured, photo"},
	{"Line art", "line art drawing {prompt} . professional, sleek, modern, minimalist, graphic, line art, vector graphics", "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, off-center, deformed, cross-eyed, closed eyes, bad anatomy, ugly, disfigured, mutated, realism, realistic, impressionism, expressionism, oil, acrylic"},
}

// styleKey normalises a style name for lookup (see FindStyle).
func styleKey(s string) string { return strings.TrimSuffix(lettersAndDigits(s), "default") }

// lettersAndDigits is s in lower case without anything but letters and
// digits.
func lettersAndDigits(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// FindStyle looks a style up by name: case and everything but letters and
// digits are ignored, so "photographic", "Photographic (Default)" and
// "line-art" all match, "default" is the default style, "" and "none" are
// no style, and "disney" finds the demo's misspelt "Disney Charactor".
func FindStyle(name string) (Style, error) {
	want := styleKey(name)
	switch {
	case lettersAndDigits(name) == "default": // "default", "(Default)"
		want = styleKey(DefaultStyle)
	case want == "" || want == "none":
		want = styleKey(Styles[0].Name)
	}
	for _, s := range Styles {
		k := styleKey(s.Name)
		if k == want || (want == "disney" && strings.HasPrefix(k, "disney")) {
			return s, nil
		}
	}
	names := make([]string, len(Styles))
	for i, s := range Styles {
		names[i] = s.ShortName()
	}
	sort.Strings(names)
	return Style{}, fmt.Errorf("unknown style %q; choose one of: %s (or the demo's names, such as %q)", name, strings.Join(names, ", "), DefaultStyle)
}

// ShortName is the style's name as a command line spells it: "none",
// "photographic", "comic-book", "disney" (FindStyle finds it).
func (s Style) ShortName() string {
	switch k := lettersAndDigits(s.Name); {
	case k == "nostyle":
		return "none"
	case strings.HasPrefix(k, "disney"):
		return "disney"
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimSuffix(s.Name, " (Default)")), " ", "-")
}

// Apply fills the template as the demo does: the prompt goes into
// "{prompt}" and the style's negative prompt is joined before the user's
// with a space.
func (s Style) Apply(prompt, negative string) (string, string) {
	return strings.ReplaceAll(s.Prompt, "{prompt}", prompt), s.Negative + " " + negative
}
