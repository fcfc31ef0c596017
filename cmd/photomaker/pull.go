package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/gophotomaker/photomaker/hub"
)

func init() { register(pullCommand) }

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "download models into the cache (resumable, checksummed)",
		ArgsUsage: "[NAME ...]",
		Description: `NAME is a catalog name (see --list), a Hugging Face repository file
(owner/repo/path/file, or owner/repo@revision/path/file) or a URL. Without
NAME: ` + strings.Join(hub.DefaultPull, " + ") + ` (what PhotoMaker needs).

  photomaker pull                     # sdxl + photomaker-v1
  photomaker pull realvisxl-v4 photomaker-v2
  photomaker pull --list              # the catalog and what is downloaded
  photomaker generate --model sdxl --photomaker photomaker-v1 ...

Files go to models/<repo>/<file> under the cache directory ($PHOTOMAKER_CACHE,
else $XDG_CACHE_HOME/photomaker, else ~/.cache/photomaker). An interrupted
download resumes where it stopped; every file is checked against its size and
SHA-256 before it is used. Gated models need a token in HF_TOKEN; HF_ENDPOINT
(or PHOTOMAKER_HF_ENDPOINT) points at a mirror.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "list", Usage: "list the catalog and the downloaded files", EnvVars: envs("list")},
			&cli.StringFlag{Name: "cache-dir", Usage: "cache directory (default $PHOTOMAKER_CACHE, else $XDG_CACHE_HOME/photomaker, else ~/.cache/photomaker)", EnvVars: append(envs("cache-dir"), "PHOTOMAKER_CACHE")},
			&cli.StringFlag{Name: "hf-endpoint", Usage: "Hugging Face server (default $HF_ENDPOINT, else https://huggingface.co)", EnvVars: append(envs("hf-endpoint"), "HF_ENDPOINT")},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar", EnvVars: envs("quiet")},
			&cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: envs("json")},
		},
		Action: runPull,
	}
}

// cacheDir is the --cache-dir value, else $PHOTOMAKER_CACHE_DIR, else the
// hub's default.
func cacheDir(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv("PHOTOMAKER_CACHE_DIR"); v != "" {
		return v
	}
	return hub.DefaultCacheDir()
}

func runPull(c *cli.Context) error {
	c, names, err := interspersed(c) // pull sdxl --quiet
	if err != nil || c == nil {
		return err
	}
	dir := cacheDir(c.String("cache-dir"))
	if c.Bool("list") {
		if len(names) > 0 {
			return usagef("--list takes no NAME")
		}
		return listModels(c.App.Writer, dir, c.Bool("json"))
	}
	if len(names) == 0 {
		names = hub.DefaultPull
	}
	if e := c.String("hf-endpoint"); e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--hf-endpoint %q: want a server's URL, such as https://huggingface.co", e)
		}
	}
	models := make([]hub.Model, len(names))
	for i, n := range names {
		m, err := hub.Parse(n)
		if err != nil {
			return usagef("%v", strings.TrimPrefix(err.Error(), "hub: "))
		}
		models[i] = m
	}
	ctx, stop := interruptible(c)
	defer stop()
	type row struct {
		Name     string `json:"name"`
		Path     string `json:"path"`
		Size     int64  `json:"size"`
		SHA256   string `json:"sha256"`
		Cached   bool   `json:"cached"`
		Verified bool   `json:"verified"`
	}
	var rows []row
	for i, m := range models {
		bar := newDownloadBar(c.App.ErrWriter, names[i], !c.Bool("quiet") && !c.Bool("json"))
		res, err := hub.PullModel(ctx, m, hub.Options{CacheDir: dir, Endpoint: c.String("hf-endpoint"), Progress: bar.update})
		bar.done()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: run `photomaker pull %s` again to resume", names[i])
			}
			msg := strings.TrimPrefix(err.Error(), "hub: ")
			var netErr net.Error
			if errors.As(err, &netErr) { // DNS, refused, timed out: the network, not the file
				msg += "\n  check the connection (or point --hf-endpoint / $HF_ENDPOINT at a mirror); pull resumes where it stopped"
			}
			return errors.New(msg)
		}
		rows = append(rows, row{names[i], res.Path, res.Size, res.SHA256, res.Cached, res.Verified})
		if c.Bool("json") {
			continue
		}
		switch {
		case res.Cached:
			fmt.Fprintf(c.App.Writer, "%s: already downloaded: %s\n", names[i], res.Path)
		case res.Verified:
			fmt.Fprintf(c.App.Writer, "%s: %s (%s, sha256 %s verified)\n", names[i], res.Path, hub.FormatBytes(res.Size), res.SHA256)
		default:
			fmt.Fprintf(c.App.Writer, "%s: %s (%s, sha256 %s; the server gave no checksum to verify against)\n", names[i], res.Path, hub.FormatBytes(res.Size), res.SHA256)
		}
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(rows)
	}
	return nil
}

// listModels prints the catalog with what is downloaded, then the other
// files in the cache.
func listModels(w io.Writer, dir string, asJSON bool) error {
	entries, err := hub.List(dir)
	if err != nil {
		return err
	}
	type row struct {
		Name    string `json:"name,omitempty"`
		Repo    string `json:"repo"`
		File    string `json:"file"`
		Kind    string `json:"kind,omitempty"`
		Status  string `json:"status"` // downloaded, partial, missing
		Path    string `json:"path,omitempty"`
		Size    int64  `json:"size,omitempty"`
		Partial int64  `json:"partial_bytes,omitempty"`
		About   string `json:"description,omitempty"`
	}
	var rows []row
	used := map[string]bool{}
	for _, m := range hub.Catalog {
		r := row{Name: m.Name, Repo: m.Repo, File: m.File, Kind: m.Kind, Status: "missing", Size: m.Size, About: m.Description}
		want := hub.Path(dir, m)
		for _, e := range entries {
			if e.Path != want {
				continue
			}
			used[e.Path] = true
			if e.Partial {
				r.Status, r.Partial = "partial", e.Size
				if e.Total > 0 {
					r.Size = e.Total
				}
			} else if p, ok := hub.Cached(dir, m); ok {
				r.Status, r.Path, r.Size = "downloaded", p, e.Size
			}
		}
		rows = append(rows, r)
	}
	for _, e := range entries {
		if used[e.Path] {
			continue
		}
		r := row{Repo: e.Repo, File: e.File, Status: "downloaded", Path: e.Path, Size: e.Size}
		if e.Partial {
			r.Status, r.Path, r.Partial, r.Size = "partial", "", e.Size, max(e.Total, 0)
		}
		rows = append(rows, r)
	}
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{"cache_dir": dir, "models": rows})
	}
	fmt.Fprintf(w, "cache: %s\n\n", dir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREPOSITORY / FILE\tSIZE\tSTATUS")
	for _, r := range rows {
		name := r.Name
		if name == "" {
			name = "-"
		}
		size := "?"
		if r.Size > 0 {
			size = hub.FormatBytes(r.Size)
		}
		status := "not downloaded"
		switch r.Status {
		case "downloaded":
			status = "downloaded"
		case "partial":
			status = "partial: " + hub.FormatBytes(r.Partial) + " (pull again to resume)"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\n", name, r.Repo, r.File, size, status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nphotomaker pull NAME downloads one; generate takes NAME for --model and --photomaker.\n")
	return nil
}

// resolveModelPath maps what was given to --model or --photomaker to a
// file: an existing path is returned as is; a catalog name ("sdxl"), a
// repository file (owner/repo/file) or a URL is looked up in the model
// cache. Anything else is returned unchanged for the loader to report.
func resolveModelPath(s string) (string, error) {
	if s == "" {
		return s, nil
	}
	if _, err := os.Stat(s); err == nil {
		return s, nil
	}
	m, err := hub.Parse(s)
	if err != nil {
		return s, nil // not a model name: a missing file, which the loader reports
	}
	dir := cacheDir("")
	if p, ok := hub.Cached(dir, m); ok {
		return p, nil
	}
	if m.Name != "" {
		return "", fmt.Errorf("model %s is not downloaded yet: run `photomaker pull %s`", s, s)
	}
	return "", fmt.Errorf("%s: no such file, and not in the model cache %s (run `photomaker pull %s` to download it)", s, dir, s)
}

// resolveModelFlags replaces the values of the --model and --photomaker
// flags (those the command has) by resolveModelPath's result, so a command
// can take catalog names for them with one call before it loads anything.
func resolveModelFlags(c *cli.Context) error {
	for _, name := range []string{"model", "photomaker"} {
		v := c.String(name)
		if v == "" {
			continue
		}
		p, err := resolveModelPath(v)
		if err != nil {
			return err
		}
		if p != v {
			if err := c.Set(name, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// downloadBar draws a one-line progress bar with the transfer rate.
type downloadBar struct {
	mu      sync.Mutex
	w       io.Writer
	on      bool
	name    string
	started time.Time
	first   int64 // bytes on disk when this run started (resumed)
	drawn   time.Time
	active  bool
	now     func() time.Time
}

func newDownloadBar(w io.Writer, name string, on bool) *downloadBar {
	return &downloadBar{w: w, on: on, name: name, first: -1, now: time.Now}
}

func (b *downloadBar) update(done, total int64) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if b.first < 0 {
		b.first, b.started = done, now
	}
	if b.active && done != total && now.Sub(b.drawn) < 100*time.Millisecond {
		return // at most ten redraws a second
	}
	b.drawn, b.active = now, true
	const width = 30
	filled := 0
	size := hub.FormatBytes(done)
	if total > 0 {
		filled = int(width * min(done, total) / total)
		size += " / " + hub.FormatBytes(total)
	}
	rate := ""
	if el := now.Sub(b.started).Seconds(); el > 0.2 && done > b.first {
		rate = fmt.Sprintf("  %.1f MB/s", float64(done-b.first)/el/1e6)
	}
	fmt.Fprintf(b.w, "\r%-14s [%s%s] %s%-14s", b.name, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), size, rate)
}

func (b *downloadBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on && b.active {
		fmt.Fprintln(b.w)
		b.active = false
	}
}
