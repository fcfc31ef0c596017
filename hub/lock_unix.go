//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock on path (created if needed), waiting
// until ctx is done. The kernel drops the lock if the process dies, so a
// crashed pull never leaves a stale lock behind.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkFreeSpace fails early when dir's file system has fewer than need
// bytes free (need < 0: unknown, no check).
func checkFreeSpace(dir string, need int64) error {
	if need <= 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // unknown: let the writes tell
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free >= 0 && free < need {
		return fmt.Errorf("%w: %s has %s free, the download needs %s more (free some space or set PHOTOMAKER_CACHE to another disk)",
			ErrDiskFull, dir, FormatBytes(free), FormatBytes(need))
	}
	return nil
}

func isQuota(err error) bool { return errors.Is(err, syscall.EDQUOT) }
