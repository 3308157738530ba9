package registry

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vessel-dev/vessel/internal/image"
)

// importThenPull imports src into a registry data dir the way `vessel image import --data-dir`
// does, then serves the dir and pulls ref from it with the host's image store.
func importThenPull(t *testing.T, src, nameOverride, ref string, want v1.Hash) {
	t.Helper()
	regDir := t.TempDir()
	arts, err := ReadArchive(src, nameOverride, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := WithLocal(regDir, func(addr string) error {
		_, err := Push(context.Background(), addr, arts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := pullFrom(t, start(t, regDir).Addr(), ref)
	if got.Digest != want {
		t.Errorf("pulled %s, want %s", got.Digest, want)
	}
}

func TestImportDockerSave(t *testing.T) {
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("nginx:1.25") // short Docker Hub name, as `docker save nginx:1.25` writes
	src := filepath.Join(t.TempDir(), "nginx.tar")
	if err := tarball.WriteToFile(src, tag, img); err != nil {
		t.Fatal(err)
	}
	importThenPull(t, src, "", "library/nginx:1.25", mustDigest(t, img))
}

func TestImportOCILayoutAndArchive(t *testing.T) {
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		ocispec.AnnotationRefName: "quay.io/team/app:v2"})); err != nil {
		t.Fatal(err)
	}
	importThenPull(t, dir, "", "team/app:v2", mustDigest(t, img))

	// The same layout as an OCI archive (`docker save` ≥ 25, `buildah push oci-archive:`), named
	// on the command line.
	archive := filepath.Join(t.TempDir(), "app.tar")
	tarDir(t, dir, archive)
	importThenPull(t, archive, "other/app:v3", "other/app:v3", mustDigest(t, img))
}

func tarDir(t *testing.T, dir, dst string) {
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	defer tw.Close()
	if err := tw.AddFS(os.DirFS(dir).(fs.FS)); err != nil {
		t.Fatal(err)
	}
}

func TestDemoImage(t *testing.T) {
	img, err := DemoImage([]byte("\x7fELF fake"))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := DemoImage([]byte("\x7fELF fake"))
	if mustDigest(t, img) != mustDigest(t, again) {
		t.Error("demo image not reproducible")
	}
	dir := t.TempDir()
	if err := WithLocal(dir, func(addr string) error {
		_, err := Push(context.Background(), addr, []Artifact{{Name: DemoName, Image: img}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := pullFrom(t, start(t, dir).Addr(), DemoName)
	if ep := got.Config.Entrypoint; len(ep) != 1 || ep[0] != DemoPath {
		t.Errorf("entrypoint %v", ep)
	}
	if _, ok := got.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v", got.Config.ExposedPorts)
	}
	fi, err := os.Stat(filepath.Join(got.RootFS, DemoPath))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("binary in rootfs: %v %v", fi, err)
	}
}

// pullFrom pulls addr/ref into a fresh image store, as a host would.
func pullFrom(t *testing.T, addr, ref string) *image.Image {
	t.Helper()
	store, err := image.Open(t.TempDir(), image.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Pull(context.Background(), addr+"/"+ref, image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
