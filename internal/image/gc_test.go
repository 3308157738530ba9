package image

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

func TestGCRespectsLeasesAndLRU(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	var imgs []*Image
	for i, tag := range []string{"a", "b", "c"} {
		img, err := random.Image(256<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref := reg.push(t, "gc:"+tag, img)
		got, err := s.Pull(ctx, ref.String(), PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Spread the LRU clock: a is oldest.
		old := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(s.dir.record(got.Digest), old, old)
		imgs = append(imgs, got)
	}
	a, b, c := imgs[0], imgs[1], imgs[2]
	if err := s.Acquire(a.Digest, "sandbox-1"); err != nil {
		t.Fatal(err)
	}

	// The bound fits one image. a is the least recently used but leased, so the unleased ones go,
	// oldest first.
	s = openStore(t, dir, Options{MaxBytes: a.Size + 1}) // a restart: leases come from disk
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []v1.Hash{b.Digest, c.Digest}) {
		t.Errorf("removed %v, want b then c", res.Removed)
	}
	if res.FreedBytes < b.Size || res.UsedBytes != a.Size {
		t.Errorf("freed %d used %d; sizes a=%d b=%d", res.FreedBytes, res.UsedBytes, a.Size, b.Size)
	}
	if _, err := os.Stat(a.RootFS); err != nil {
		t.Errorf("leased image removed: %v", err)
	}
	if _, err := os.Stat(b.RootFS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b's tree still there: %v", err)
	}
	if _, err := s.Get(b.Ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(b) after GC: %v", err)
	}

	// Without the lease, a over a bound of zero bytes goes too.
	s.opts.MaxBytes = 1
	if err := s.PruneLeases(func(holder string) bool { return holder != "sandbox-1" }); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GC(ctx); err != nil || len(res.Removed) != 1 || res.UsedBytes != 0 {
		t.Errorf("GC after release: %+v, %v", res, err)
	}
	if left, _ := os.ReadDir(s.dir.blobs() + "/sha256"); len(left) != 0 {
		t.Errorf("%d blobs left after removing every image", len(left))
	}
}
