package image

import (
	"context"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// BenchmarkPull measures pull+unpack of a ~50 MB image of random (incompressible) layers from a
// loopback registry: cold (empty cache, every blob downloaded) and cached (the path a sandbox
// start takes once the image is on the host). Run with:
//
//	go test ./internal/image -run '^$' -bench Pull -benchtime 5x
func BenchmarkPull(b *testing.B) {
	reg := newTestRegistry(b, "", "")
	img, err := random.Image(10<<20, 5)
	if err != nil {
		b.Fatal(err)
	}
	ref := reg.push(b, "bench:50mb", img).String()
	ctx := context.Background()

	b.Run("cold", func(b *testing.B) {
		var bytes int64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir, err := os.MkdirTemp(b.TempDir(), "store-*")
			if err != nil {
				b.Fatal(err)
			}
			s := openStore(b, dir, Options{})
			before := BytesDownloaded()
			b.StartTimer()
			if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			bytes += BytesDownloaded() - before
			os.RemoveAll(dir)
			b.StartTimer()
		}
		b.ReportMetric(float64(bytes)/float64(b.N)/1e6, "MB-downloaded/op")
	})

	b.Run("cached", func(b *testing.B) {
		s := openStore(b, b.TempDir(), Options{})
		if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
			b.Fatal(err)
		}
		before := BytesDownloaded()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			img, err := s.Pull(ctx, ref, PullOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Acquire(img.Digest, "sandbox"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(BytesDownloaded()-before)/float64(b.N)/1e6, "MB-downloaded/op")
	})

	// After a host agent restart: a new Store over the same dir, cache on disk.
	b.Run("cached-reopen", func(b *testing.B) {
		dir := b.TempDir()
		if _, err := openStore(b, dir, Options{}).Pull(ctx, ref, PullOptions{}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s := openStore(b, dir, Options{})
			if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
