package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// The ranges cover every index once, in as many parts as the grain and
// the CPUs allow; small work stays on the caller's goroutine.
func TestRanges(t *testing.T) {
	for _, tc := range []struct{ n, grain, parts int }{
		{0, 1, 1}, {5, 10, 1}, {10, 10, 1}, {1000, 1, runtime.NumCPU()}, {1003, 100, min(runtime.NumCPU(), 10)}, {7, 0, min(runtime.NumCPU(), 7)},
	} {
		seen := make([]int32, tc.n)
		var calls atomic.Int32
		Ranges(tc.n, tc.grain, func(lo, hi int) {
			calls.Add(1)
			require.LessOrEqual(t, lo, hi)
			for i := lo; i < hi; i++ {
				atomic.AddInt32(&seen[i], 1)
			}
		})
		for i, s := range seen {
			require.Equal(t, int32(1), s, "index %d of %+v", i, tc)
		}
		require.Equal(t, int32(tc.parts), calls.Load(), "%+v", tc)
	}
}
