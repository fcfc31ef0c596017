package weights

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/sampling"
)

// FuzzDiffusersConfig feeds arbitrary model_index.json, unet/vae/scheduler
// configs and a shard index to the diffusers folder reader (readConfigs,
// checkDiffusersFamily, componentFiles, openDiffusers), to Model.Config as
// the pipeline calls it, and to sampling.ParseConfig: errors are fine,
// panics are not.
func FuzzDiffusersConfig(f *testing.F) {
	read := func(name string) []byte {
		b, err := os.ReadFile(golden.Path("tiny-sdxl-configs/" + name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	index, unet, vae, sched := read("model_index.json"), read("unet.json"), read("vae.json"), read("scheduler.json")
	shards := []byte(`{"metadata":{"total_size":10},"weight_map":{"a.weight":"diffusion_pytorch_model-00001-of-00002.safetensors","b.weight":"diffusion_pytorch_model-00002-of-00002.safetensors"}}`)
	f.Add(index, unet, vae, sched, shards)
	f.Add([]byte(`{"_class_name":"StableDiffusion3Pipeline"}`), []byte(`{}`), []byte(`{}`), []byte(`{}`), []byte(`{}`))
	f.Add([]byte(`{"_class_name":"FluxPipeline"}`), []byte(`{"cross_attention_dim":768}`), []byte(`{"scaling_factor":0.13025}`), []byte(`{"_class_name":"DPMSolverMultistepScheduler","lambda_min_clipped":-Infinity}`), []byte(`{"weight_map":{}}`))
	f.Add([]byte(`{"_class_name":"StableDiffusionXLInpaintPipeline"}`), []byte(`{"in_channels":9,"cross_attention_dim":[2048]}`), []byte(`{"scaling_factor":"x"}`), []byte(`{"timestep_spacing":"trailing","steps_offset":-5}`), []byte(`{"weight_map":{"x":"../../etc/passwd"}}`))
	f.Add([]byte(`{"_class_name":5,"text_encoder":null}`), []byte(`{"addition_embed_type":"image","_class_name":"UNet2DConditionModel"}`), []byte(`[]`), []byte(`{"num_train_timesteps":0,"beta_start":1e308}`), []byte(`null`))
	f.Add([]byte(`{"_class_name":"StableDiffusionXLPipeline"`), []byte(`{"cross_attention_dim":1024.0}`), []byte(`nul`), []byte(``), []byte(`{"weight_map":{"a":"/abs"}}`))
	// Each fuzz worker rewrites the same files; in memory where possible
	// (rewriting a file in place on ext4 waits for the disk).
	dir := f.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "photomaker-fuzz-"); err == nil {
		dir = d
		f.Cleanup(func() { os.RemoveAll(d) })
	}
	f.Fuzz(func(t *testing.T, index, unet, vae, sched, shards []byte) {
		write := func(rel string, b []byte) {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			_ = os.Remove(p) // a new file, not one truncated in place
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("model_index.json", index)
		write("unet/config.json", unet)
		write("unet/diffusion_pytorch_model.safetensors.index.json", shards)
		write("vae/config.json", vae)
		write("scheduler/scheduler_config.json", sched)

		cfg, err := readConfigs(dir)
		if err == nil {
			if err := checkDiffusersFamily(dir, cfg); err != nil {
				var ue *UnsupportedError
				if !errors.As(err, &ue) {
					t.Fatalf("checkDiffusersFamily: %T %v, want *UnsupportedError", err, err)
				}
			}
			m := &Model{Path: dir, Configs: cfg}
			var vaeCfg struct {
				ScalingFactor float32 `json:"scaling_factor"`
			}
			_ = m.Config("vae", &vaeCfg)
			var unetCfg map[string]any
			_ = m.Config("unet", &unetCfg)
			if raw, ok := cfg["scheduler"]; ok {
				_, _ = sampling.ParseConfig(raw)
			}
		}
		_, _ = sampling.ParseConfig(sched)
		if files, err := componentFiles(filepath.Join(dir, "unet")); err == nil {
			for _, p := range files {
				if rel, err := filepath.Rel(dir, p); err != nil || !filepath.IsLocal(rel) {
					t.Logf("shard index points outside the model folder: %s", p)
				}
			}
		}
		m, err := openDiffusers(dir)
		if err == nil {
			m.Close()
			t.Fatal("a folder without weights opened")
		}
	})
}
