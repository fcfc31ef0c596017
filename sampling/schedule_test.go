package sampling

import (
	"math"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
)

func TestAlphasCumprodGolden(t *testing.T) {
	s, err := NewSchedule(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := golden.Ref(t, "schedulers:ddim.alphas_cumprod").Data
	bad := 0
	for i := range want {
		if math.Float32bits(s.AlphasCumprod[i]) != math.Float32bits(want[i]) {
			if bad < 5 {
				t.Errorf("alphas_cumprod[%d] = %g, want %g", i, s.AlphasCumprod[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d/%d alphas_cumprod differ bitwise", bad, len(want))
	}
	golden.AssertClose(t, "alphas_cumprod", s.AlphasCumprod, want, 0, 1e-6)
}
