package crilog

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Defaults of the kubelet's containerLogMaxSize and containerLogMaxFiles.
const (
	DefaultMaxBytes = 10 << 20
	DefaultMaxFiles = 5
)

// RotatingFile is an append-only log file bounded in size: a write that
// would grow it past MaxBytes first renames path to path.1 (path.1 to
// path.2, …), dropping the oldest so at most MaxFiles files exist, counting
// path itself. Rotation happens only between Write calls, so a writer that
// writes whole records (one Write per record, as the runtime's CRI writer
// does) never splits a record across files; a single record larger than
// MaxBytes is written whole to a fresh file.
//
// Readers (Copy with Follow) notice the rename and continue in the new file.
// Safe for concurrent use.
type RotatingFile struct {
	path     string
	maxBytes int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenRotating opens (appending to) or creates the log at path. maxBytes <= 0
// or maxFiles <= 0 select the defaults; maxFiles 1 truncates instead of
// keeping a rotated file.
func OpenRotating(path string, maxBytes int64, maxFiles int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	r := &RotatingFile{path: path, maxBytes: maxBytes, maxFiles: maxFiles}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *RotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log %s: %w", r.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log %s: %w", r.path, err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// Write appends p, rotating first when p would not fit.
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.maxBytes {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *RotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("close log %s: %w", r.path, err)
	}
	r.f = nil
	name := func(i int) string { return fmt.Sprintf("%s.%d", r.path, i) }
	if r.maxFiles == 1 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", r.path, err)
		}
	} else {
		if err := os.Remove(name(r.maxFiles - 1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", r.path, err)
		}
		for i := r.maxFiles - 2; i >= 1; i-- {
			if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("rotate log %s: %w", r.path, err)
			}
		}
		if err := os.Rename(r.path, name(1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", r.path, err)
		}
	}
	return r.open()
}

// Close closes the current file. Further writes fail.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
