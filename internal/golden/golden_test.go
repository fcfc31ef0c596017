package golden

import "testing"

func TestManifestParses(t *testing.T) {
	c := FindCase(t, "scheduler.dpmpp_2m.set_timesteps.20")
	if c.Kind != "scheduler" {
		t.Fatalf("kind %q", c.Kind)
	}
	if r := Ref(t, "rng:cpu_seed0_4"); len(r.Data) != 4 {
		t.Fatalf("rng golden has %d values", len(r.Data))
	}
}
