// Package atomicfile writes files that appear complete or not at all: data
// goes to a temporary file in the destination folder, which is renamed over
// the destination only on Commit. Every output of ours (images, converted
// models) is written this way, so a crash, an error or Ctrl-C never leaves a
// half-written file.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is a pending output.
type File struct {
	*os.File
	path string
	done bool
}

// Create starts writing path.
func Create(path string) (*File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, destError(path, err)
	}
	return &File{File: tmp, path: path}, nil
}

// Write writes to the temporary file; an error names the destination.
func (f *File) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	if err != nil {
		err = destError(f.path, err)
	}
	return n, err
}

// Commit closes the temporary file and renames it to the destination, with
// the usual permissions (0644, as os.Create would give under umask 022).
func (f *File) Commit() error {
	if f.done {
		return os.ErrClosed
	}
	f.done = true
	err := f.File.Close()
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.Name())
		return destError(f.path, err)
	}
	return nil
}

// Abort discards the temporary file; it is a no-op after Commit, so it can
// be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// destError names the destination in err instead of the temporary file,
// which the user never asked for ("open dir/.x.png.tmp123: ..."); the
// cause stays reachable with errors.Is.
func destError(path string, err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return fmt.Errorf("cannot write %s: %w", path, err)
}
