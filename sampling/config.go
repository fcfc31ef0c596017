package sampling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/gophotomaker/photomaker/internal/pyjson"
)

// Config is the subset of a diffusers scheduler_config.json that the
// samplers use. The zero value is not useful; start from DefaultConfig.
type Config struct {
	NumTrainTimesteps int       `json:"num_train_timesteps"`
	BetaStart         float64   `json:"beta_start"`
	BetaEnd           float64   `json:"beta_end"`
	BetaSchedule      string    `json:"beta_schedule"` // "scaled_linear" or "linear"
	TrainedBetas      []float64 `json:"trained_betas"`
	PredictionType    string    `json:"prediction_type"`  // "epsilon" or "v_prediction"
	TimestepSpacing   string    `json:"timestep_spacing"` // "leading", "linspace" or "trailing"
	StepsOffset       int       `json:"steps_offset"`
	InterpolationType string    `json:"interpolation_type"` // Euler: "linear" (only)
	FinalSigmasType   string    `json:"final_sigmas_type"`  // "zero" or "sigma_min"
	UseKarrasSigmas   bool      `json:"use_karras_sigmas"`
	SetAlphaToOne     bool      `json:"set_alpha_to_one"` // DDIM
	ClipSample        bool      `json:"clip_sample"`      // DDIM
	ClipSampleRange   float64   `json:"clip_sample_range"`
	// Eta is DDIM's eta (0 = deterministic DDIM); not part of the config
	// file in diffusers (a step argument there).
	Eta float64 `json:"-"`
}

// TimestepSpacings are the values of Config.TimestepSpacing: how the
// inference steps are laid out over the training timesteps (diffusers'
// timestep_spacing).
var TimestepSpacings = []string{"leading", "linspace", "trailing"}

// ParseTimestepSpacing reads a spacing as a user wrote it (any case, spaces
// around): one of TimestepSpacings, or "" for the model's own.
func ParseTimestepSpacing(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s != "" && !slices.Contains(TimestepSpacings, s) {
		return "", fmt.Errorf("unknown timestep spacing %q (want %s)", s, strings.Join(TimestepSpacings, ", "))
	}
	return s, nil
}

// DefaultConfig is the SDXL base 1.0 scheduler configuration
// (EulerDiscreteScheduler, scaled_linear betas 0.00085..0.012 over 1000
// steps, leading spacing with steps_offset 1, epsilon prediction).
func DefaultConfig() Config {
	return Config{
		NumTrainTimesteps: 1000,
		BetaStart:         0.00085,
		BetaEnd:           0.012,
		BetaSchedule:      "scaled_linear",
		PredictionType:    "epsilon",
		TimestepSpacing:   "leading",
		StepsOffset:       1,
		InterpolationType: "linear",
		FinalSigmasType:   "zero",
		ClipSampleRange:   1,
	}
}

// ParseConfig reads a diffusers scheduler_config.json (any scheduler class);
// fields it does not mention keep DefaultConfig's values.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	data = pyjson.Sanitize(data) // e.g. "lambda_min_clipped": -Infinity
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("sampling: scheduler config: %w", err)
	}
	return cfg, cfg.validate()
}

// LoadConfig reads a scheduler_config.json file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("sampling: %w", err)
	}
	return ParseConfig(b)
}

func (c Config) validate() error {
	if c.NumTrainTimesteps <= 1 {
		return fmt.Errorf("sampling: num_train_timesteps %d must be > 1", c.NumTrainTimesteps)
	}
	if c.TrainedBetas != nil && len(c.TrainedBetas) != c.NumTrainTimesteps {
		return fmt.Errorf("sampling: %d trained_betas for %d train timesteps", len(c.TrainedBetas), c.NumTrainTimesteps)
	}
	if c.TrainedBetas == nil {
		switch c.BetaSchedule {
		case "scaled_linear", "linear":
		default:
			return fmt.Errorf("sampling: beta_schedule %q not supported (scaled_linear, linear)", c.BetaSchedule)
		}
	}
	switch c.PredictionType {
	case "epsilon", "v_prediction":
	default:
		return fmt.Errorf("sampling: prediction_type %q not supported (epsilon, v_prediction)", c.PredictionType)
	}
	if !slices.Contains(TimestepSpacings, c.TimestepSpacing) {
		return fmt.Errorf("sampling: timestep_spacing %q not supported (%s)", c.TimestepSpacing, strings.Join(TimestepSpacings, ", "))
	}
	switch c.FinalSigmasType {
	case "zero", "sigma_min":
	default:
		return fmt.Errorf("sampling: final_sigmas_type %q not supported (zero, sigma_min)", c.FinalSigmasType)
	}
	if c.InterpolationType != "" && c.InterpolationType != "linear" {
		return fmt.Errorf("sampling: interpolation_type %q not supported (linear)", c.InterpolationType)
	}
	if c.ClipSample && !(c.ClipSampleRange > 0) {
		return fmt.Errorf("sampling: clip_sample_range %g must be > 0", c.ClipSampleRange)
	}
	if c.Eta < 0 {
		return fmt.Errorf("sampling: eta %g must be >= 0", c.Eta)
	}
	return nil
}
