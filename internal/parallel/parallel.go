// Package parallel splits a loop over a range into parts that run on
// several cores.
package parallel

import (
	"runtime"
	"sync"
)

// Ranges calls f on ranges [lo, hi) that cover [0, n) in order, one
// goroutine each, and waits for them: as many as there are logical CPUs,
// each at least grain long (smaller work does not pay for a goroutine).
// With a single part, f runs on the caller's goroutine.
func Ranges(n, grain int, f func(lo, hi int)) {
	parts := min(runtime.NumCPU(), n/max(grain, 1))
	if parts <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() { f(n*p/parts, n*(p+1)/parts) })
	}
	wg.Wait()
}
