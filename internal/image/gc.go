package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Leases mark images in use so GC never removes them. A lease is an empty file under
// leases/<digest>/<holder>, so leases survive a restart of the host agent: after a restart the
// agent lists its sandboxes and calls PruneLeases to drop the leases of sandboxes that no longer
// exist. Holders are free-form names; the host agent uses the sandbox UID.

// Acquire records that holder uses image d. It is idempotent.
func (s *Store) Acquire(d v1.Hash, holder string) error {
	if holder == "" {
		return errors.New("acquire image lease: empty holder")
	}
	if _, err := os.Stat(s.dir.record(d)); err != nil {
		return fmt.Errorf("acquire image lease on %s for %s: %w", d, holder, ErrNotFound)
	}
	if err := os.MkdirAll(s.dir.leaseDir(d), 0o700); err != nil {
		return fmt.Errorf("acquire image lease on %s for %s: %w", d, holder, err)
	}
	if err := os.WriteFile(s.dir.lease(d, holder), nil, 0o600); err != nil {
		return fmt.Errorf("acquire image lease on %s for %s: %w", d, holder, err)
	}
	return nil
}

// Release drops holder's lease on d. Releasing a lease that does not exist is not an error.
func (s *Store) Release(d v1.Hash, holder string) error {
	if err := os.Remove(s.dir.lease(d, holder)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release image lease on %s for %s: %w", d, holder, err)
	}
	os.Remove(s.dir.leaseDir(d)) // only succeeds when empty
	return nil
}

// Leases returns the holders of every lease, by image digest. The caller owns the map.
func (s *Store) Leases() (map[v1.Hash][]string, error) {
	out := map[v1.Hash][]string{}
	dirs, err := os.ReadDir(s.dir.leases())
	if err != nil {
		return nil, fmt.Errorf("list image leases: %w", err)
	}
	for _, dir := range dirs {
		d := v1.Hash{Algorithm: "sha256", Hex: dir.Name()}
		files, err := os.ReadDir(s.dir.leaseDir(d))
		if err != nil {
			continue
		}
		for _, f := range files {
			if holder, err := unescape(f.Name()); err == nil {
				out[d] = append(out[d], holder)
			}
		}
	}
	return out, nil
}

// PruneLeases releases every lease whose holder keep rejects, e.g. sandboxes that no longer exist.
func (s *Store) PruneLeases(keep func(holder string) bool) error {
	all, err := s.Leases()
	if err != nil {
		return err
	}
	for d, holders := range all {
		for _, h := range holders {
			if !keep(h) {
				if err := s.Release(d, h); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// GCResult says what a GC run did.
type GCResult struct {
	Removed    []v1.Hash
	FreedBytes int64
	UsedBytes  int64 // after the run
}

// GC removes least recently used images without leases until the cache fits Options.MaxBytes
// (nothing happens when it is 0). It blocks while pulls are in progress and blocks new pulls while
// it runs. Blobs shared with images that stay are kept.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var res GCResult
	imgs, err := s.List()
	if err != nil {
		return res, err
	}
	leases, err := s.Leases()
	if err != nil {
		return res, err
	}
	for _, img := range imgs {
		res.UsedBytes += img.Size
	}
	if s.opts.MaxBytes <= 0 {
		return res, nil
	}
	// Oldest first.
	for i := len(imgs) - 1; i >= 0 && res.UsedBytes > s.opts.MaxBytes; i-- {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		img := imgs[i]
		if len(leases[img.Digest]) > 0 {
			continue
		}
		freed, err := s.remove(img.Digest)
		if err != nil {
			return res, err
		}
		s.log.Info("garbage-collected image", "image", img.Ref, "digest", img.Digest, "bytes", img.Size)
		res.Removed = append(res.Removed, img.Digest)
		res.FreedBytes += freed
		res.UsedBytes -= img.Size
	}
	return res, nil
}

// remove deletes one image: record first (so a crash leaves only unreferenced files, which look
// like any other garbage), then refs, tree and the blobs no other image references.
func (s *Store) remove(d v1.Hash) (int64, error) {
	rec, err := s.readRecord(d)
	if err != nil {
		return 0, err
	}
	inUse := map[string]bool{}
	entries, err := os.ReadDir(s.dir.images())
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || hex == d.Hex {
			continue
		}
		other, err := s.readRecord(v1.Hash{Algorithm: "sha256", Hex: hex})
		if err != nil {
			return 0, err
		}
		for _, b := range other.Blobs {
			inUse[b.Digest] = true
		}
	}
	if err := os.Remove(s.dir.record(d)); err != nil {
		return 0, fmt.Errorf("remove image %s: %w", d, err)
	}
	for _, ref := range rec.Refs {
		if cur, err := s.lookupRef(ref); err == nil && cur == d {
			os.Remove(s.dir.ref(ref))
		}
	}
	freed := rec.TreeBytes
	// Rename first so a half-deleted tree is never mistaken for an unpacked one.
	trash := filepath.Join(s.dir.tmp(), "gc-"+d.Hex)
	if err := os.Rename(s.dir.rootfsDir(d), trash); err == nil {
		if err := os.RemoveAll(trash); err != nil {
			return freed, fmt.Errorf("remove image %s tree: %w", d, err)
		}
	}
	os.Remove(s.dir.blockDevice(d))
	for _, b := range rec.Blobs {
		if inUse[b.Digest] {
			continue
		}
		if err := os.Remove(s.dir.blob(mustHash(b.Digest))); err == nil {
			freed += b.Size
		}
	}
	return freed, nil
}

func sortByLastUsed(imgs []Image) {
	sort.SliceStable(imgs, func(i, j int) bool { return imgs[i].LastUsed.After(imgs[j].LastUsed) })
}
