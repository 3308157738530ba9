package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vessel-dev/vessel/internal/image"
)

// Artifact is one image or multi-platform index read from an archive, with the repository:tag it
// is pushed under in the local registry. Exactly one of Image and Index is set.
type Artifact struct {
	Name  string // e.g. "library/nginx:latest"
	Image v1.Image
	Index v1.ImageIndex
}

// ReadArchive reads `docker save` tars, OCI image layout directories and OCI archives (a layout
// in a tar). Names come from the archive (RepoTags, or the org.opencontainers.image.ref.name /
// io.containerd.image.name annotations); name, if not empty, overrides them and requires the
// archive to hold one image. An OCI archive is extracted under tmpDir, which the caller removes
// after pushing.
func ReadArchive(src, name, tmpDir string) ([]Artifact, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("read image archive: %w", err)
	}
	var arts []Artifact
	switch {
	case fi.IsDir():
		arts, err = readLayout(src)
	default:
		kind, kerr := tarKind(src)
		if kerr != nil {
			return nil, fmt.Errorf("read image archive %s: %w", src, kerr)
		}
		switch kind {
		case "oci":
			dir, xerr := os.MkdirTemp(tmpDir, "oci-archive-*")
			if xerr != nil {
				return nil, xerr
			}
			if xerr := extractTar(src, dir); xerr != nil {
				return nil, fmt.Errorf("read image archive %s: %w", src, xerr)
			}
			arts, err = readLayout(dir)
		case "docker":
			arts, err = readDockerSave(src)
		default:
			return nil, fmt.Errorf("read image archive %s: neither a docker save tar nor an OCI archive", src)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w", src, err)
	}
	if name != "" {
		if len(arts) != 1 {
			return nil, fmt.Errorf("read image archive %s: --name needs an archive with one image, it has %d", src, len(arts))
		}
		arts[0].Name = name
	}
	for i, a := range arts {
		if a.Name == "" {
			return nil, fmt.Errorf("read image archive %s: image %d has no name; give one with --name", src, i)
		}
		n, err := localName(a.Name)
		if err != nil {
			return nil, fmt.Errorf("read image archive %s: %w", src, err)
		}
		arts[i].Name = n
	}
	return arts, nil
}

// localName maps a reference to the repository:tag it gets in the local registry: the registry
// host is dropped, so "nginx" and "docker.io/library/nginx" both become "library/nginx:latest".
func localName(ref string) (string, error) {
	n, err := image.Normalize(ref)
	if err != nil {
		return "", err
	}
	_, rest, _ := strings.Cut(n, "/")
	return rest, nil
}

// tarKind peeks at the members of a tar to tell a docker save archive from an OCI archive.
func tarKind(src string) (string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	kind := ""
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return kind, nil
		}
		if err != nil {
			return "", err
		}
		switch path.Clean(hdr.Name) {
		case ocispec.ImageLayoutFile:
			return "oci", nil
		case "manifest.json":
			kind = "docker" // keep looking: OCI archives from docker ≥ 25 carry both
		}
	}
}

// extractTar unpacks regular files and directories only, refusing names that leave dst.
func extractTar(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("archive member %q escapes the archive", hdr.Name)
		}
		target := filepath.Join(dst, filepath.FromSlash(p))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

func readLayout(dir string) ([]Artifact, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var arts []Artifact
	for _, desc := range im.Manifests {
		a := Artifact{Name: desc.Annotations["io.containerd.image.name"]}
		if a.Name == "" {
			a.Name = desc.Annotations[ocispec.AnnotationRefName]
		}
		switch {
		case desc.MediaType.IsIndex():
			if a.Index, err = idx.ImageIndex(desc.Digest); err != nil {
				return nil, err
			}
		case desc.MediaType.IsImage():
			if a.Image, err = idx.Image(desc.Digest); err != nil {
				return nil, err
			}
		default:
			continue
		}
		arts = append(arts, a)
	}
	return arts, nil
}

func readDockerSave(src string) ([]Artifact, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(src) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, err
	}
	var arts []Artifact
	for i, desc := range m {
		tags := desc.RepoTags
		if len(tags) == 0 {
			tags = []string{""}
		}
		for _, t := range tags {
			var tag *name.Tag
			if t != "" {
				parsed, err := name.NewTag(t)
				if err != nil {
					return nil, fmt.Errorf("image %d: tag %q: %w", i, t, err)
				}
				tag = &parsed
			}
			img, err := tarball.Image(opener, tag)
			if err != nil {
				return nil, fmt.Errorf("image %d (%s): %w", i, t, err)
			}
			arts = append(arts, Artifact{Name: t, Image: img})
		}
	}
	return arts, nil
}

// Push writes artifacts to the registry at addr ("host:port", plain HTTP: a local registry). It
// returns the full references pushed, in order.
func Push(ctx context.Context, addr string, arts []Artifact) ([]string, error) {
	var refs []string
	for _, a := range arts {
		ref, err := name.ParseReference(addr+"/"+a.Name, name.Insecure)
		if err != nil {
			return refs, fmt.Errorf("push %s to %s: %w", a.Name, addr, err)
		}
		var d v1.Hash
		if a.Index != nil {
			err = remote.WriteIndex(ref, a.Index, remote.WithContext(ctx))
			d, _ = a.Index.Digest()
		} else {
			err = remote.Write(ref, a.Image, remote.WithContext(ctx))
			d, _ = a.Image.Digest()
		}
		if err != nil {
			return refs, fmt.Errorf("push %s to %s: %w", a.Name, addr, err)
		}
		refs = append(refs, ref.String()+"@"+d.String())
	}
	return refs, nil
}

// WithLocal runs fn against a registry over dataDir served on an ephemeral loopback port for the
// duration of the call. Writing through the HTTP API (rather than into files) keeps one code path
// for validation; it is safe while another process serves the same dir.
func WithLocal(dataDir string, fn func(addr string) error) error {
	s, err := New(dataDir, Options{Addr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	defer s.Close()
	return fn(s.Addr())
}
