package photomaker

import (
	"fmt"
	"strings"
)

// SizePreset is one of the official demo's output sizes.
type SizePreset struct {
	Name   string `json:"name"`
	Ratio  string `json:"ratio"` // "3:2", "2:3", ...
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

// SizePresets are the official PhotoMaker demo's aspect ratios (sides
// rounded to multiples of 8).
var SizePresets = []SizePreset{
	{"Instagram (1:1)", "1:1", 1024, 1024},
	{"35mm film / Landscape (3:2)", "3:2", 1024, 680},
	{"35mm film / Portrait (2:3)", "2:3", 680, 1024},
	{"CRT Monitor / Landscape (4:3)", "4:3", 1024, 768},
	{"CRT Monitor / Portrait (3:4)", "3:4", 768, 1024},
	{"Widescreen TV / Landscape (16:9)", "16:9", 1024, 576},
	{"Widescreen TV / Portrait (9:16)", "9:16", 576, 1024},
	{"Widescreen Monitor / Landscape (16:10)", "16:10", 1024, 640},
	{"Widescreen Monitor / Portrait (10:16)", "10:16", 640, 1024},
	{"Cinemascope (2.39:1)", "2.39:1", 1024, 424},
	{"Widescreen Movie (1.85:1)", "1.85:1", 1024, 552},
	{"Academy Movie (1.37:1)", "1.37:1", 1024, 744},
	{"Sheet-print (A-series) / Landscape (297:210)", "297:210", 1024, 720},
	{"Sheet-print (A-series) / Portrait (210:297)", "210:297", 720, 1024},
}

// FindSize looks a preset up by its ratio ("3:2") or its name.
func FindSize(s string) (SizePreset, error) {
	for _, p := range SizePresets {
		if s == p.Ratio || strings.EqualFold(s, p.Name) {
			return p, nil
		}
	}
	ratios := make([]string, len(SizePresets))
	for i, p := range SizePresets {
		ratios[i] = p.Ratio
	}
	return SizePreset{}, fmt.Errorf("unknown aspect %q; choose one of %s", s, strings.Join(ratios, ", "))
}
