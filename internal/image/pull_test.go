package image

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
)

func appImage(t testing.TB) v1.Image {
	return imageOf(t, tarLayer(t,
		entry{name: "bin/", typ: '5', mode: 0o755},
		entry{name: "bin/app", mode: 0o755, body: "#!/bin/sh\necho hi\n"},
	))
}

func TestPullByTagAndDigest(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	img := appImage(t)
	ref := reg.push(t, "team/app:v1", img)
	want, _ := img.Digest()
	s := openStore(t, t.TempDir(), Options{})
	ctx := context.Background()

	got, err := s.Pull(ctx, ref.String(), PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want {
		t.Errorf("digest %s, want %s", got.Digest, want)
	}
	if got.Ref != reg.host+"/team/app:v1" {
		t.Errorf("ref %q", got.Ref)
	}
	c := got.Config
	if !slices.Equal(c.Entrypoint, []string{"/bin/app"}) || !slices.Equal(c.Cmd, []string{"--port", "8080"}) ||
		c.WorkingDir != "/srv" || c.User != "1000:1000" || !slices.Contains(c.Env, "A=b") {
		t.Errorf("config %+v", c)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	if b, err := os.ReadFile(filepath.Join(got.RootFS, "bin/app")); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("rootfs bin/app: %q, %v", b, err)
	}

	byDigest := reg.host + "/team/app@" + want.String()
	s2 := openStore(t, t.TempDir(), Options{})
	got2, err := s2.Pull(ctx, byDigest, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got2.Digest != want {
		t.Errorf("by digest: %s, want %s", got2.Digest, want)
	}
	// Cached: Get answers without the registry.
	reg.Close()
	if _, err := s2.Get(byDigest); err != nil {
		t.Errorf("Get after registry closed: %v", err)
	}
	if _, err := s.Get(ref.String()); err != nil {
		t.Errorf("Get by tag: %v", err)
	}
	if _, err := s.Get(reg.host + "/team/other:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of unknown image: %v, want ErrNotFound", err)
	}
}

func TestPullAuth(t *testing.T) {
	reg := newTestRegistry(t, "alice", "s3cret")
	ref := reg.push(t, "private/app:v1", appImage(t),
		remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	ctx := context.Background()

	s := openStore(t, t.TempDir(), Options{})
	if _, err := s.Pull(ctx, ref.String(), PullOptions{Secrets: []corev1.Secret{pullSecret(reg.host, "alice", "s3cret")}}); err != nil {
		t.Fatalf("pull with right credentials: %v", err)
	}
	for name, secrets := range map[string][]corev1.Secret{
		"wrong password": {pullSecret(reg.host, "alice", "nope")},
		"no secret":      nil,
	} {
		_, err := openStore(t, t.TempDir(), Options{}).Pull(ctx, ref.String(), PullOptions{Secrets: secrets})
		var perr *PullError
		if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &perr) || perr.Registry != reg.host {
			t.Errorf("%s: %v, want ErrUnauthorized from %s", name, err, reg.host)
		}
	}
}

func TestPullMultiArch(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	amd, arm := appImage(t), imageOf(t, tarLayer(t, entry{name: "arm", body: "arm"}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	push := func(repoTag string, idx v1.ImageIndex) string {
		r := reg.host + "/" + repoTag
		ref, _ := parse(r)
		if err := remote.WriteIndex(ref, idx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	ref := push("multi:latest", idx)
	got, err := openStore(t, t.TempDir(), Options{}).Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := amd.Digest(); got.Digest != want {
		t.Errorf("picked %s, want amd64 %s", got.Digest, want)
	}
	// By the index digest too.
	idxDigest, _ := idx.Digest()
	if got, err := openStore(t, t.TempDir(), Options{}).Pull(context.Background(),
		reg.host+"/multi@"+idxDigest.String(), PullOptions{}); err != nil || got.Digest != mustDigest(amd) {
		t.Errorf("pull by index digest: %v", err)
	}

	armOnly := push("armonly:latest", mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}}))
	_, err = openStore(t, t.TempDir(), Options{}).Pull(context.Background(), armOnly, PullOptions{})
	if !errors.Is(err, ErrWrongPlatform) {
		t.Errorf("arm-only index: %v, want ErrWrongPlatform", err)
	}
	t.Logf("wrong platform error: %v", err)
}

func mustDigest(img v1.Image) v1.Hash {
	d, err := img.Digest()
	if err != nil {
		panic(err)
	}
	return d
}

func TestPullErrors(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	ref := reg.push(t, "app:v1", appImage(t))
	ctx := context.Background()
	pull := func(r string) error {
		_, err := openStore(t, t.TempDir(), Options{}).Pull(ctx, r, PullOptions{})
		return err
	}
	if err := pull(reg.host + "/app:missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
	if err := pull(reg.host + "/nothere:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing repo: %v", err)
	}
	if err := pull("Bad Ref"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("bad ref: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	err = pull(dead + "/app:v1")
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("closed port: %v", err)
	}
	t.Logf("unreachable error: %v", err)
	// Plain HTTP to a non-loopback registry is refused unless configured insecure.
	if err := pull("10.255.255.1:5000/app:v1"); err == nil {
		t.Error("plain HTTP to a private address allowed")
	}

	reg.corrupt.Store(true)
	err = pull(ref.String())
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("corrupt registry: %v, want ErrDigestMismatch", err)
	}
	t.Logf("digest mismatch error: %v", err)
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	img, err := random.Image(1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.push(t, "rand:v1", img)
	reg.blobGets.Store(0)
	s := openStore(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Pull(context.Background(), ref.String(), PullOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reg.blobGets.Load(); got != 4 { // config + 3 layers
		t.Errorf("blob GETs = %d, want 4", got)
	}
}

func TestCorruptCachedBlobRefetched(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	img := appImage(t)
	ref := reg.push(t, "app:v1", img)
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	ctx := context.Background()
	got, err := s.Pull(ctx, ref.String(), PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	blob := s.dir.blob(ld)
	for name, damage := range map[string]func(){
		"truncated": func() { os.Truncate(blob, 10) },
		"same size, flipped byte": func() {
			b, _ := os.ReadFile(blob)
			b[len(b)/2] ^= 0xff
			os.WriteFile(blob, b, 0o600)
		},
	} {
		damage()
		// As if the host crashed before the tree was renamed into place.
		if err := os.RemoveAll(got.RootFS); err != nil {
			t.Fatal(err)
		}
		before := reg.blobGets.Load()
		s = openStore(t, dir, Options{})
		if _, err := s.Get(ref.String()); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("%s: Get without network: %v, want ErrDigestMismatch", name, err)
		}
		if _, err := s.Pull(ctx, ref.String(), PullOptions{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := reg.blobGets.Load() - before; n != 1 {
			t.Errorf("%s: %d blob GETs, want 1 re-fetch", name, n)
		}
		if b, err := os.ReadFile(filepath.Join(got.RootFS, "bin/app")); err != nil || len(b) == 0 {
			t.Errorf("%s: rootfs not rebuilt: %v", name, err)
		}
	}
	// Leftovers of an interrupted download are removed on open and never used.
	os.WriteFile(filepath.Join(dir, "tmp", "blob-123"), []byte("partial"), 0o600)
	openStore(t, dir, Options{})
	if _, err := os.Stat(filepath.Join(dir, "tmp", "blob-123")); !errors.Is(err, os.ErrNotExist) {
		t.Error("partial download survived Open")
	}
}
