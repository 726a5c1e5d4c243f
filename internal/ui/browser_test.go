package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fanoutdev/fanout/client"
	"github.com/fanoutdev/fanout/internal/ui"
)

// Browser tests drive headless Chromium (Debian's chromium package, which
// .ci/run installs). Without one they skip, unless CI=true or
// FANOUT_REQUIRE_BROWSER=1: then they fail.

// readmeScreenshot is the README's picture of a batch page, rewritten by
// this test with FANOUT_UPDATE_DOCS=1.
const readmeScreenshot = "../../docs/images/ui-batch.png"

// chromium starts a headless browser for the test and returns its context.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" || os.Getenv("FANOUT_REQUIRE_BROWSER") == "1" {
			t.Fatal("no Chromium found (apt-get install chromium); CI=true or FANOUT_REQUIRE_BROWSER=1 requires the browser tests to run")
		}
		t.Skip("no Chromium found: apt-get install chromium to run the browser tests")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.WindowSize(1280, 1000), chromedp.DisableGPU,
		chromedp.Flag("hide-scrollbars", true), chromedp.Flag("force-color-profile", "srgb"))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	if err := chromedp.Do(ctx); err != nil { // start the browser now, to fail here if it cannot
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// artifacts is the directory screenshots go to: $FANOUT_ARTIFACTS/ui, or
// a temporary directory kept after the test. Its path is logged.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FANOUT_ARTIFACTS")
	var err error
	if dir != "" {
		dir = filepath.Join(dir, "ui")
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "fanout-ui-screenshots-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// screenshot captures the page, checks that it shows something, and writes
// it to dir/name (and to more paths, if given).
func screenshot(t *testing.T, ctx context.Context, dir, name string, full bool, also ...string) {
	t.Helper()
	capture := chromedp.CaptureScreenshot()
	if full {
		capture = chromedp.FullScreenshot(100)
	}
	shot, err := chromedp.Run(ctx, capture)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := checkNotBlank(shot); err != "" {
		t.Fatalf("screenshot %s: %s", name, err)
	}
	for _, p := range append([]string{filepath.Join(dir, name)}, also...) {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkNotBlank reports why a PNG looks blank: undecodable, too small,
// nearly one colour, or with too few colours to hold text and charts.
func checkNotBlank(shot []byte) string {
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		return "not a PNG: " + err.Error()
	}
	b := img.Bounds()
	if b.Dx() < 400 || b.Dy() < 300 {
		return "smaller than 400×300"
	}
	counts := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 255}]++
		}
	}
	total, top := 0, 0
	for _, n := range counts {
		total += n
		top = max(top, n)
	}
	if len(counts) < 32 {
		return "fewer than 32 colours"
	}
	if float64(top) > 0.97*float64(total) {
		return "over 97% of it one colour"
	}
	return ""
}

var _ image.Image // the png decoder registers itself through image

// A person's path through the dashboard, in a real browser against a real
// server, coordinator and worker: the batches page follows a running
// batch without a reload; its page shows a failed item's error; cancel
// ends it; redrive starts a new batch of its failed and not-run items.
func TestBrowser(t *testing.T) {
	t.Parallel()
	b := setup(t, ui.Config{PageSize: 10})
	ctx := chromium(t) // closed before the dashboard and the deployment
	dir := artifacts(t)

	// 40 ms items, 6 at once: about 150 items/s, so the batch runs for
	// seconds and is still running when canceled.
	const n = 1500
	r := b.env.Submit(client.BatchRequest{Activity: "sleep", Items: sleepItems(n, 40, failEvery(25, "disk full writing part %d: <no space left>")),
		Options: client.Options{MaxInFlight: 6, MaxAttempts: 1, ItemsPerMessage: 1}})
	// A finished batch too, so that the list has more than one status.
	done := b.env.Submit(client.BatchRequest{Activity: "sha256", Items: []json.RawMessage{json.RawMessage(`{"data":"a"}`)}})
	b.env.Wait(done.BatchID, time.Minute)

	// The batches page: the running batch's counts change, and the page is
	// the same page (a mark set on it survives).
	row := `document.querySelector('tr[data-batch="` + r.BatchID + `"]')`
	doneText := row + `.querySelector('[data-field="succeeded"]').textContent`
	if err := chromedp.Do(ctx, chromedp.Navigate(b.srv.URL+"/batches"), chromedp.WaitVisible(chromedp.CSS(`tr[data-batch="`+r.BatchID+`"]`))); err != nil {
		t.Fatal(err)
	}
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](doneText))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.fanoutMark = "same page"; true`)); err != nil {
		t.Fatal(err)
	}
	changed, err := chromedp.Run(ctx, chromedp.Poll[string](doneText+` !== `+quoteJS(first)+` && `+doneText, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("the batches page did not update the running batch (succeeded stayed %s): %v", first, err)
	}
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.fanoutMark || "reloaded"`))
	if err != nil || mark != "same page" {
		t.Fatalf("the page was reloaded to update (%q, %v)", mark, err)
	}
	t.Logf("batches page: succeeded %s → %s without a reload", first, changed)
	screenshot(t, ctx, dir, "batches.png", false)

	// The batch's page, once a failure is counted: the failed item's error.
	eventually(t, 30*time.Second, "a failed item counted", func() bool { return b.status(r.BatchID).Failed >= 2 })
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-batch="`+r.BatchID+`"] a.id`)), chromedp.WaitVisible(chromedp.CSS("#failed table"))); err != nil {
		t.Fatalf("open the batch: %v", err)
	}
	failedText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#failed table")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(failedText, "disk full writing part 0: <no space left>") {
		t.Fatalf("the batch page's failed items do not show item 0's error:\n%s", failedText)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`(window.fanoutLiveEvents || 0) > 1`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the batch page got no live updates: %v", err)
	}
	var also []string
	if os.Getenv("FANOUT_UPDATE_DOCS") == "1" {
		also = append(also, readmeScreenshot)
	}
	screenshot(t, ctx, dir, "batch.png", true, also...)

	// Cancel, confirmed: the page shows the batch canceled.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#cancel")), chromedp.WaitVisible(chromedp.CSS("#confirm"))); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#notice"))); err != nil {
		t.Fatalf("confirm cancel: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#status").textContent === "canceled"`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		status, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#status")))
		t.Fatalf("after cancel the page shows %q, want canceled: %v", status, err)
	}
	screenshot(t, ctx, dir, "canceled.png", false)

	// Redrive, confirmed: the new batch's page, linked to this one.
	if err := chromedp.Do(ctx, chromedp.Navigate(b.srv.URL+"/batches/"+r.BatchID), chromedp.Click(chromedp.CSS("#redrive")), chromedp.WaitVisible(chromedp.CSS("#confirm"))); err != nil {
		t.Fatalf("redrive: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#notice"))); err != nil {
		t.Fatalf("confirm redrive: %v", err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	newID, _, _ := strings.Cut(strings.TrimPrefix(loc, b.srv.URL+"/batches/"), "?")
	summary, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#summary")))
	if err != nil {
		t.Fatal(err)
	}
	notice, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#notice")))
	if err != nil {
		t.Fatal(err)
	}
	if newID == r.BatchID || !strings.Contains(notice, "Redriven") {
		t.Fatalf("after redrive at %s: %s\n%s", loc, notice, summary)
	}
	p := b.status(newID)
	old := b.status(r.BatchID)
	if p.Total != old.Total-old.Succeeded {
		t.Fatalf("the redrive runs %d items, want the %d failed and not run", p.Total, old.Total-old.Succeeded)
	}
	screenshot(t, ctx, dir, "redrive.png", false)

	// The workers and activities pages show the worker and its activities.
	for _, page := range []struct{ path, want string }{{"/workers", "sleep"}, {"/activities", "sha256"}} {
		if err := chromedp.Do(ctx, chromedp.Navigate(b.srv.URL+page.path)); err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil || !strings.Contains(text, page.want) {
			t.Fatalf("%s: %v\n%s", page.path, err, text)
		}
		screenshot(t, ctx, dir, strings.TrimPrefix(page.path, "/")+".png", false)
	}
}

func quoteJS(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
