package registry

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func start(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := New(dir, Options{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPushPullSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := start(t, dir)
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(s.Addr() + "/vessel/demo:latest")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	idxRef, _ := name.ParseReference(s.Addr() + "/vessel/multi:v1")
	if err := remote.WriteIndex(idxRef, idx); err != nil {
		t.Fatal(err)
	}
	// A second push of the same blobs mounts/skips them.
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = start(t, dir) // a new process over the same dir
	ref, _ = name.ParseReference(s.Addr() + "/vessel/demo:latest")
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("image read back is invalid: %v", err)
	}
	if gd, _ := got.Digest(); gd != mustDigest(t, img) {
		t.Errorf("digest %s, want %s", gd, mustDigest(t, img))
	}
	idxRef, _ = name.ParseReference(s.Addr() + "/vessel/multi:v1")
	gi, err := remote.Index(idxRef)
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := gi.Digest(); gd != mustIndexDigest(t, idx) {
		t.Errorf("index digest %s changed on the way", gd)
	}
	tags, err := remote.List(ref.Context())
	if err != nil || !slices.Equal(tags, []string{"latest"}) {
		t.Errorf("tags %v, %v", tags, err)
	}
	reg, _ := name.NewRegistry(s.Addr())
	repos, err := remote.Catalog(t.Context(), reg)
	if err != nil || !slices.Equal(repos, []string{"vessel/demo", "vessel/multi"}) {
		t.Errorf("catalog %v, %v", repos, err)
	}
	if err := remote.Delete(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(ref); err == nil {
		t.Error("deleted tag still resolves")
	}
}

func mustIndexDigest(t *testing.T, idx v1.ImageIndex) v1.Hash {
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRejectsBadInput(t *testing.T) {
	s := start(t, t.TempDir())
	base := "http://" + s.Addr()
	wrong := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		method, path string
		body         string
		status       int
	}{
		{"POST", "/v2/a/blobs/uploads/?digest=" + wrong, "data", http.StatusBadRequest},
		{"PUT", "/v2/a/manifests/" + wrong, `{"schemaVersion":2}`, http.StatusBadRequest},
		{"GET", "/v2/a/manifests/nope", "", http.StatusNotFound},
		{"GET", "/v2/../../etc/manifests/x", "", http.StatusNotFound},
		{"GET", "/v2/a/blobs/sha256:..%2f..%2fx", "", http.StatusBadRequest},
		{"PUT", "/v2/a/manifests/..%2f..%2fx", `{}`, http.StatusBadRequest},
		{"GET", "/v2/a/blobs/uploads/../../../x", "", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, bytes.NewBufferString(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
}
