package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLoad sends many small requests from concurrent clients on loopback
// against the tiny model with a short queue. Clients retry on 429; half
// wait for their PNG (?wait=1), half poll their job. Nothing may be lost:
// every request ends as a finished job with its image, each seed once.
// PHOTOMAKER_SERVE_LOAD_N overrides the number of requests (default 200,
// 50 with -short).
func TestLoad(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 50
	}
	if s := os.Getenv("PHOTOMAKER_SERVE_LOAD_N"); s != "" {
		v, err := strconv.Atoi(s)
		require.NoError(t, err, "PHOTOMAKER_SERVE_LOAD_N")
		n = v
	}
	const clients = 12
	p := tinyPipeline(t, false)
	goroutinesBefore := runtime.NumGoroutine()
	srv, ts := startServer(t, p, Options{MaxQueue: 4, KeepJobs: n})

	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: transport, Timeout: 5 * time.Minute}
	var rejected, retriesMax atomic.Int64
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	errs := make(chan error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				tries, err := loadRequest(client, ts.URL, i)
				rejected.Add(int64(tries - 1))
				if int64(tries) > retriesMax.Load() {
					retriesMax.Store(int64(tries))
				}
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	elapsed := time.Since(start)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d requests from %d clients in %s (%.0f ms per job), %d answers 429 (retried; at most %d tries for one request)",
		n, clients, elapsed.Round(time.Millisecond), float64(elapsed.Milliseconds())/float64(n), rejected.Load(), retriesMax.Load())

	// The server's own record: n finished jobs, every seed once, nothing
	// queued or running.
	srv.mu.Lock()
	seeds := map[int64]bool{}
	for _, j := range srv.jobs {
		require.Equal(t, stateDone, j.state, "job %s: %s", j.id, j.errMsg)
		require.Len(t, j.images, 1)
		seeds[j.req.Seed] = true
	}
	require.Len(t, seeds, n)
	require.Empty(t, srv.pending)
	require.Nil(t, srv.running)
	srv.mu.Unlock()

	// No goroutine is left behind once the server is closed and the
	// client's idle connections are gone.
	require.NoError(t, srv.Close())
	transport.CloseIdleConnections()
	ts.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutinesBefore+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after:\n%s", goroutinesBefore, g, buf[:runtime.Stack(buf, true)])
	}
}

// loadRequest submits request i until it is accepted, then checks its
// image. It returns the number of tries.
func loadRequest(client *http.Client, base string, i int) (int, error) {
	body, _ := json.Marshal(map[string]any{
		"prompt": fmt.Sprintf("load test request %d", i), "width": 32, "height": 32,
		"steps": 1, "guidance": 1, "seed": i,
	})
	wait := i%2 == 0
	url := base + "/api/generate"
	if wait {
		url += "?wait=1"
	}
	for tries := 1; ; tries++ {
		res, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return tries, err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return tries, err
		}
		switch {
		case res.StatusCode == http.StatusTooManyRequests:
			time.Sleep(time.Duration(min(tries, 10)*10+rand.IntN(20)) * time.Millisecond) // back off a little
			continue
		case wait && res.StatusCode == http.StatusOK:
			if got := res.Header.Get("X-Seed"); got != strconv.Itoa(i) {
				return tries, fmt.Errorf("X-Seed %q, want %d", got, i)
			}
			return tries, checkPNG(b)
		case !wait && res.StatusCode == http.StatusAccepted:
			var v jobView
			if err := json.Unmarshal(b, &v); err != nil {
				return tries, err
			}
			return tries, pollJob(client, base, v.ID)
		default:
			return tries, fmt.Errorf("%s: %s", res.Status, b)
		}
	}
}

func pollJob(client *http.Client, base, id string) error {
	for {
		res, err := client.Get(base + "/api/jobs/" + id)
		if err != nil {
			return err
		}
		var v jobView
		err = json.NewDecoder(res.Body).Decode(&v)
		res.Body.Close()
		if err != nil {
			return err
		}
		switch v.Status {
		case stateDone:
			if len(v.Images) != 1 {
				return fmt.Errorf("job %s: %d images", id, len(v.Images))
			}
			res, err := client.Get(base + v.Images[0])
			if err != nil {
				return err
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				return err
			}
			return checkPNG(b)
		case stateError, stateCanceled:
			return fmt.Errorf("job %s %s: %s", id, v.Status, v.Error)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkPNG(b []byte) error {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if img.Bounds().Dx() != 32 || img.Bounds().Dy() != 32 {
		return fmt.Errorf("image is %v, want 32×32", img.Bounds())
	}
	return nil
}
