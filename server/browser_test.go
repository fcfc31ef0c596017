package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gophotomaker/photomaker/internal/golden"
)

// chromiumPath is Debian's chromium package (.ci/run installs it).
const chromiumPath = "/usr/bin/chromium"

// TestBrowserEndToEnd drives the page in headless Chromium against the tiny
// PhotoMaker model: upload a face, see the missing-trigger warning, type
// the prompt, generate two images, check the gallery images load in order
// with download links, re-use a seed, and cancel a long job.
func TestBrowserEndToEnd(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s is not installed (apt-get install -y chromium): skipping the browser test", chromiumPath)
	}
	_, ts := startServer(t, tinyPipeline(t, true), Options{})
	face := golden.Path("faces/astronaut_0.png")

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// Collect script errors: the page must run without any.
	var mu sync.Mutex
	var jsErrors []string
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			jsErrors = append(jsErrors, ev.ExceptionDetails.Text+" "+describe(ev.ExceptionDetails.Exception))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, describe(a))
				}
				jsErrors = append(jsErrors, "console.error: "+strings.Join(parts, " "))
			}
		}
	}))

	start := time.Now()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(ts.URL),
		// The photo section and the styles appear once /api/info answered.
		chromedp.WaitVisible(chromedp.CSS("#photos-section")),
		chromedp.WaitVisible(chromedp.CSS("#trigger-hint")),
		// Generating without a prompt says so; adding a photo clears it.
		chromedp.Click(chromedp.CSS("#generate")),
		chromedp.WaitVisible(chromedp.CSS("#error")),
		chromedp.SetUploadFiles(chromedp.CSS("#photos"), []string{face}),
		chromedp.WaitVisible(chromedp.CSS("#previews img")),
		chromedp.WaitNotVisible(chromedp.CSS("#error")),
		chromedp.SendKeys(chromedp.CSS("#prompt"), "a photo of a man, wearing a spacesuit"),
		chromedp.WaitVisible(chromedp.CSS("#trigger-warning")),
	), "loading the page and choosing a photo")

	// The style list came from /api/info, with the demo's default picked.
	style, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#style")))
	require.NoError(t, err)
	require.Equal(t, "Photographic (Default)", style)
	warning, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#trigger-warning")))
	require.NoError(t, err)
	require.Contains(t, warning, "trigger word")

	// Fix the prompt; use a tiny custom size and few steps.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { document.getElementById("prompt").value = ""; return true; })()`))
	require.NoError(t, err, "clearing the prompt")
	for _, step := range []struct {
		what string
		do   chromedp.Action[chromedp.Void]
	}{
		{"type the prompt", chromedp.SendKeys(chromedp.CSS("#prompt"), "a photo of a man img, wearing a spacesuit")},
		{"warning gone", chromedp.WaitNotVisible(chromedp.CSS("#trigger-warning"))},
		{"custom size", chromedp.SetValue(chromedp.CSS("#size"), "custom")},
		{"custom fields shown", chromedp.WaitVisible(chromedp.CSS("#width"))},
		{"width", chromedp.SetValue(chromedp.CSS("#width"), "64")},
		{"height", chromedp.SetValue(chromedp.CSS("#height"), "64")},
		{"steps", chromedp.SetValue(chromedp.CSS("#steps"), "2")},
		{"seed", chromedp.SetValue(chromedp.CSS("#seed"), "123")},
		{"two images", chromedp.SetValue(chromedp.CSS("#n"), "2")},
		{"click generate", chromedp.Click(chromedp.CSS("#generate"))},
		{"wait for the gallery", chromedp.WaitVisible(chromedp.CSS("#gallery li:nth-child(2) img.result"))},
	} {
		require.NoError(t, chromedp.Do(ctx, step.do), step.what)
	}

	// The image has loaded (a decoded 64×64 PNG), with a download link.
	width, err := chromedp.Run(ctx, chromedp.Poll[int](
		`(() => { const i = document.querySelector("#gallery img.result"); return i && i.complete && i.naturalWidth; })()`,
		chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(t, err, "the gallery image did not load")
	require.Equal(t, 64, width)
	// The images are in order, the first one first.
	dl, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#gallery a.download"), "download"))
	require.NoError(t, err)
	require.Equal(t, "photomaker-123-1.png", dl.Value)
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#gallery a.download"), "href"))
	require.NoError(t, err)
	require.Regexp(t, `^/api/jobs/[0-9a-f]+/images/0\.png$`, href.Value)
	_, img := getPNG(t, ts.URL+href.Value)
	require.Equal(t, 64, img.Bounds().Dx())

	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#status")))
	require.NoError(t, err)
	require.Contains(t, status, "Done")
	require.Contains(t, status, "seed 123")
	progress, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.getElementById("progress").value`))
	require.NoError(t, err)
	require.Equal(t, 1.0, progress)
	// The busy Generate button kept the keyboard focus.
	focused, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id`))
	require.NoError(t, err)
	require.Equal(t, "generate", focused)

	// "Use seed" puts an image's seed back in the form.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#seed"), "-1"),
		chromedp.Click(chromedp.CSS("#gallery button.reuse")),
	), "re-using the seed")
	seed, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#seed")))
	require.NoError(t, err)
	require.Equal(t, "123", seed)
	errorHidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("error").hidden`))
	require.NoError(t, err)
	require.True(t, errorHidden)
	t.Logf("page loaded, photo uploaded and images generated in %s", time.Since(start).Round(time.Millisecond))

	// A long job (Ctrl+Enter in the prompt starts it) can be canceled.
	for _, step := range []struct {
		what string
		do   chromedp.Action[chromedp.Void]
	}{
		{"width", chromedp.SetValue(chromedp.CSS("#width"), "256")},
		{"height", chromedp.SetValue(chromedp.CSS("#height"), "256")},
		{"steps", chromedp.SetValue(chromedp.CSS("#steps"), "200")},
		{"one image", chromedp.SetValue(chromedp.CSS("#n"), "1")},
		{"Ctrl+Enter", chromedp.Focus(chromedp.CSS("#prompt"))},
		{"Ctrl+Enter", chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierCtrl))},
		{"denoising", pollTrue(`/step [1-9]/.test(document.getElementById("status").textContent)`, 5*time.Minute)},
		{"cancel", chromedp.Click(chromedp.CSS("#cancel"))},
		{"canceled", pollTrue(`document.getElementById("status").textContent === "Canceled."`, 30*time.Second)},
	} {
		require.NoError(t, chromedp.Do(ctx, step.do), step.what)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`[document.getElementById("cancel").hidden, document.getElementById("generate").getAttribute("aria-disabled"), document.activeElement.id, document.querySelectorAll("#gallery li").length].join(" ")`))
	require.NoError(t, err)
	require.Equal(t, "true false generate 2", state, "cancel hidden, Generate ready with the focus, no new image")

	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, jsErrors, "script errors on the page")
}

// pollTrue waits until the expression is true.
func pollTrue(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	if o.Description != "" {
		return o.Description
	}
	return fmt.Sprint(string(o.Value))
}
