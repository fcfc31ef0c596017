// Package hub downloads model files from a Hugging Face-style server
// ({endpoint}/{repo}/resolve/{revision}/{file}) into a local cache,
// resumably and with size and SHA-256 checks, and finds them there again.
package hub

import (
	"fmt"
	"net/url"
	"strings"
)

// Model is one downloadable file.
type Model struct {
	// Name is the catalog name ("sdxl"); empty for models given as
	// repo/file or URL.
	Name string
	// Repo is the repository ("stabilityai/stable-diffusion-xl-base-1.0");
	// for a URL outside the Hugging Face layout, the URL's host.
	Repo string
	// File is the file's path in the repository (slash-separated).
	File string
	// Revision is the branch, tag or commit ("" = "main").
	Revision string
	// URL, if set, is downloaded instead of the endpoint's resolve URL.
	URL string
	// Size and SHA256 are the expected size in bytes and the lower-case hex
	// SHA-256 of the file when known in advance (0 / ""); otherwise the
	// server's headers give them (Content-Length or X-Linked-Size, and the
	// ETag or X-Linked-Etag when it is a SHA-256, as the Hub reports for
	// LFS files).
	Size   int64
	SHA256 string
	// Kind says what the file is: "sdxl" (an SDXL checkpoint) or
	// "photomaker" (a PhotoMaker adapter).
	Kind string
	// Description is one line for `photomaker pull --list`.
	Description string
}

// DefaultRevision is the revision used when a Model names none.
const DefaultRevision = "main"

// Catalog lists the models known by name. Sizes and checksums are given
// only where they are published and certain; the others are checked
// against the server's headers.
var Catalog = []Model{
	{
		Name: "sdxl", Repo: "stabilityai/stable-diffusion-xl-base-1.0", File: "sd_xl_base_1.0.safetensors",
		Size: 6938078334, SHA256: "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
		Kind: "sdxl", Description: "SDXL 1.0 base (Stability AI), the reference base model",
	},
	{
		Name: "realvisxl-v4", Repo: "SG161222/RealVisXL_V4.0", File: "RealVisXL_V4.0.safetensors",
		Kind: "sdxl", Description: "RealVisXL V4.0, the photorealistic SDXL fine-tune of the PhotoMaker demos",
	},
	{
		Name: "photomaker-v1", Repo: "TencentARC/PhotoMaker", File: "photomaker-v1.bin",
		Kind: "photomaker", Description: "PhotoMaker v1 adapter (TencentARC)",
	},
	{
		Name: "photomaker-v2", Repo: "TencentARC/PhotoMaker-V2", File: "photomaker-v2.bin",
		Kind: "photomaker", Description: "PhotoMaker v2 adapter (TencentARC; needs --id-embeds)",
	},
}

// DefaultPull lists what `photomaker pull` fetches without arguments: a
// base model and the PhotoMaker adapter.
var DefaultPull = []string{"sdxl", "photomaker-v1"}

// Lookup finds a catalog model by name (case-insensitive).
func Lookup(name string) (Model, bool) {
	for _, m := range Catalog {
		if strings.EqualFold(m.Name, name) {
			return m, true
		}
	}
	return Model{}, false
}

// Parse turns what a user typed into a Model: a catalog name ("sdxl"), a
// repository file ("owner/repo/path/to/file", optionally
// "owner/repo@revision/path/to/file"), or a URL. A URL in the Hugging Face
// layout (.../owner/repo/resolve/revision/file) is cached like the
// repository file; any other URL is cached under its host and path.
func Parse(name string) (Model, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return Model{}, fmt.Errorf("hub: empty model name")
	}
	if m, ok := Lookup(name); ok {
		return m, nil
	}
	if strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://") {
		return parseURL(name)
	}
	if strings.Contains(name, "\\") || strings.HasPrefix(name, "/") {
		return Model{}, fmt.Errorf("hub: %q is not a catalog name (%s), owner/repo/file or URL", name, catalogNames())
	}
	parts := strings.Split(name, "/")
	if len(parts) < 3 {
		return Model{}, fmt.Errorf("hub: unknown model %q: want a catalog name (%s), owner/repo/file or a URL", name, catalogNames())
	}
	repo, rev, _ := strings.Cut(parts[1], "@")
	m := Model{Repo: parts[0] + "/" + repo, Revision: rev, File: strings.Join(parts[2:], "/")}
	if err := m.check(); err != nil {
		return Model{}, err
	}
	return m, nil
}

func parseURL(raw string) (Model, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return Model{}, fmt.Errorf("hub: bad URL %q", raw)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	// .../owner/repo/resolve/revision/file...
	for i := 2; i+2 < len(parts); i++ {
		if parts[i] == "resolve" {
			m := Model{Repo: parts[i-2] + "/" + parts[i-1], Revision: parts[i+1], File: strings.Join(parts[i+2:], "/"), URL: raw}
			if m.check() == nil {
				return m, nil
			}
			break
		}
	}
	m := Model{Repo: u.Host, File: strings.Trim(u.Path, "/"), URL: raw}
	if err := m.check(); err != nil {
		return Model{}, err
	}
	return m, nil
}

// check rejects names that would escape the cache directory.
func (m Model) check() error {
	for _, s := range []string{m.Repo, m.File} {
		if s == "" {
			return fmt.Errorf("hub: model %q: empty repository or file", m.String())
		}
		if strings.ContainsAny(s, "\\\x00") {
			return fmt.Errorf("hub: model %q: bad character in %q", m.String(), s)
		}
		for _, seg := range strings.Split(s, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("hub: model %q: bad path %q", m.String(), s)
			}
		}
	}
	if strings.ContainsAny(m.Revision, "/\\\x00") || m.Revision == "." || m.Revision == ".." {
		return fmt.Errorf("hub: model %q: bad revision %q", m.String(), m.Revision)
	}
	return nil
}

// String is the catalog name, or repo/file.
func (m Model) String() string {
	if m.Name != "" {
		return m.Name
	}
	if m.URL != "" {
		return m.URL
	}
	return m.Repo + "/" + m.File
}

// ResolveURL is the file's download URL on endpoint ("" = DefaultEndpoint()).
func (m Model) ResolveURL(endpoint string) string {
	if m.URL != "" {
		return m.URL
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint()
	}
	rev := m.Revision
	if rev == "" {
		rev = DefaultRevision
	}
	esc := func(p string) string {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		return strings.Join(segs, "/")
	}
	return strings.TrimRight(endpoint, "/") + "/" + esc(m.Repo) + "/resolve/" + url.PathEscape(rev) + "/" + esc(m.File)
}

func catalogNames() string {
	names := make([]string, len(Catalog))
	for i, m := range Catalog {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}
