// Package image pulls OCI and Docker images into a content-addressed cache shared by every sandbox
// on a host, and unpacks each image once into a root filesystem the runtimes use.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
)

// Image is a pulled, unpacked image as runtimes see it. The Store owns the files under RootFS:
// callers must treat them as read-only (overlay a writable layer on top) and hold a lease while a
// sandbox uses them.
type Image struct {
	Ref      string              // normalised reference it was pulled or looked up by
	Digest   v1.Hash             // digest of the linux/amd64 image manifest
	Config   ocispec.ImageConfig // Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, …
	RootFS   string              // unpacked root filesystem directory
	Size     int64               // bytes on disk: blobs plus unpacked tree
	LastUsed time.Time
}

// PullPolicy mirrors the Kubernetes field of the same name.
type PullPolicy int

const (
	// PullIfNotPresent uses a cached image for a tag without asking the registry. The default.
	PullIfNotPresent PullPolicy = iota
	// PullAlways asks the registry what a tag points at (a manifest request, no layer download
	// when the digest is already cached).
	PullAlways
)

// PullOptions are per-pull settings, normally taken from the pod.
type PullOptions struct {
	Secrets []corev1.Secret // kubernetes.io/dockerconfigjson pull secrets
	Policy  PullPolicy
}

// Options configure a Store.
type Options struct {
	// MaxBytes bounds the cache for GC; 0 means unbounded.
	MaxBytes int64
	// Insecure lists registry hosts ("host:port") that may be reached over plain HTTP. Loopback
	// registries always may; everything else is HTTPS only.
	Insecure []string
	// Transport is the base HTTP transport (default http.DefaultTransport).
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// Store is the host's image cache. All methods are safe for concurrent use, also by several
// Stores opened on the same directory in one process (but not by several processes).
type Store struct {
	dir       layout
	opts      Options
	log       *slog.Logger
	transport http.RoundTripper

	pulls  singleflight.Group // by normalised reference
	blobs  singleflight.Group // by blob digest
	unpack singleflight.Group // by manifest digest

	// gcMu is held shared by pulls and exclusively by GC, so GC never deletes a blob or tree that
	// a pull in progress is about to use.
	gcMu sync.RWMutex
	// recMu serialises read-modify-write of image records.
	recMu sync.Mutex
}

// record is the JSON kept per image manifest under images/.
type record struct {
	Digest    string              `json:"digest"`
	Refs      []string            `json:"refs"`
	Config    ocispec.ImageConfig `json:"config"`
	Blobs     []blobRef           `json:"blobs"` // manifest, config, layers in order
	BlobBytes int64               `json:"blobBytes"`
	TreeBytes int64               `json:"treeBytes"`
}

type blobRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Open opens (creating if needed) the store under dir. Partial downloads and unpacks left by a
// crash are deleted here: they are never visible under their final names.
func Open(dir string, opts Options) (*Store, error) {
	s := &Store{dir: layout{root: dir}, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "image-store")
	base := opts.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	s.transport = &schemePolicy{base: base, insecure: opts.Insecure}
	if err := os.RemoveAll(s.dir.tmp()); err != nil {
		return nil, fmt.Errorf("open image store %s: clean tmp: %w", dir, err)
	}
	for _, d := range s.dir.dirs() {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open image store %s: %w", dir, err)
		}
	}
	// rootfs trees are traversed by unprivileged sandbox processes: keep their parent searchable.
	if err := os.Chmod(s.dir.rootfs(), 0o711); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	return s, nil
}

// Get returns the cached image a reference resolves to, without contacting any registry. It
// unpacks from cached blobs if the tree is missing. It returns an error satisfying
// errors.Is(err, ErrNotFound) when the reference is not cached. The caller owns the returned
// value. Each call counts as a use for LRU.
func (s *Store) Get(ref string) (*Image, error) {
	r, err := parse(ref)
	if err != nil {
		return nil, err
	}
	norm := canonical(r)
	d, err := s.lookupRef(norm)
	if err != nil {
		return nil, fmt.Errorf("get image %s: %w", norm, err)
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.ready(context.Background(), norm, d, nil)
}

// Pull makes the linux/amd64 variant of ref available locally and returns it. Concurrent pulls of
// one reference share a single download; the context of the first caller governs it. A cached
// image is returned without network access unless opts.Policy is PullAlways and ref is a tag.
// Errors are *PullError values whose Reason is one of the Err* categories.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	r, err := parse(ref)
	if err != nil {
		return nil, &PullError{Ref: ref, Registry: "", Op: "parse reference", Reason: ErrInvalidReference, Err: err}
	}
	norm := canonical(r)
	_, byDigest := r.(name.Digest)
	if byDigest || opts.Policy == PullIfNotPresent {
		if d, err := s.lookupRef(norm); err == nil {
			s.gcMu.RLock()
			img, err := s.ready(ctx, norm, d, nil)
			s.gcMu.RUnlock()
			if err == nil {
				return img, nil
			}
			s.log.Warn("cached image unusable, pulling again", "image", norm, "err", err)
		}
	}
	v, err, _ := s.pulls.Do(norm, func() (any, error) {
		s.gcMu.RLock()
		defer s.gcMu.RUnlock()
		return s.pull(ctx, r, norm, opts)
	})
	if err != nil {
		return nil, err
	}
	img := *v.(*Image) // each caller gets its own copy
	return &img, nil
}

// ready returns the image for digest d, unpacking it from cached blobs if needed. refetch, when
// not nil, replaces a blob found corrupt; without it a corrupt blob is an error.
func (s *Store) ready(ctx context.Context, norm string, d v1.Hash, refetch func(context.Context, blobRef) error) (*Image, error) {
	rec, err := s.readRecord(d)
	if err != nil {
		return nil, err
	}
	tree := s.dir.rootfsDir(d)
	if _, err := os.Stat(tree); errors.Is(err, fs.ErrNotExist) {
		if _, err, _ := s.unpack.Do(d.String(), func() (any, error) {
			return nil, s.unpackImage(ctx, rec, refetch)
		}); err != nil {
			return nil, err
		}
		if rec, err = s.readRecord(d); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	now := time.Now()
	// The record's mtime is the LRU clock: one syscall, no rewrite of the JSON.
	if err := os.Chtimes(s.dir.record(d), now, now); err != nil {
		return nil, fmt.Errorf("mark image %s used: %w", d, err)
	}
	return &Image{Ref: norm, Digest: d, Config: rec.Config, RootFS: tree,
		Size: rec.BlobBytes + rec.TreeBytes, LastUsed: now}, nil
}

func (s *Store) lookupRef(norm string) (v1.Hash, error) {
	if i := strings.LastIndex(norm, "@"); i >= 0 {
		// A digest reference may name an index; only the manifest it resolved to is recorded.
		if b, err := os.ReadFile(s.dir.ref(norm)); err == nil {
			return v1.NewHash(strings.TrimSpace(string(b)))
		}
		if d, err := v1.NewHash(norm[i+1:]); err == nil {
			if _, err := os.Stat(s.dir.record(d)); err == nil {
				return d, nil
			}
		}
		return v1.Hash{}, ErrNotFound
	}
	b, err := os.ReadFile(s.dir.ref(norm))
	if errors.Is(err, fs.ErrNotExist) {
		return v1.Hash{}, ErrNotFound
	}
	if err != nil {
		return v1.Hash{}, err
	}
	return v1.NewHash(strings.TrimSpace(string(b)))
}

func (s *Store) readRecord(d v1.Hash) (*record, error) {
	b, err := os.ReadFile(s.dir.record(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read image record %s: %w", d, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("read image record %s: %w", d, err)
	}
	return &rec, nil
}

// writeRecord replaces the record atomically.
func (s *Store) writeRecord(rec *record) error {
	d, err := v1.NewHash(rec.Digest)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.dir.tmp(), s.dir.record(d), b)
}

func writeFileAtomic(tmpDir, dst string, b []byte) error {
	f, err := os.CreateTemp(tmpDir, "write-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

// List returns every cached image, most recently used first. The caller owns the slice.
func (s *Store) List() ([]Image, error) {
	entries, err := os.ReadDir(s.dir.images())
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Image
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		d := v1.Hash{Algorithm: "sha256", Hex: hex}
		rec, err := s.readRecord(d)
		if err != nil {
			return nil, err
		}
		info, err := e.Info()
		if err != nil {
			continue // removed by a concurrent GC
		}
		img := Image{Digest: d, Config: rec.Config, Size: rec.BlobBytes + rec.TreeBytes,
			LastUsed: info.ModTime(), RootFS: s.dir.rootfsDir(d)}
		if len(rec.Refs) > 0 {
			img.Ref = rec.Refs[0]
		}
		out = append(out, img)
	}
	sortByLastUsed(out)
	return out, nil
}

func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
