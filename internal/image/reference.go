package image

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize returns the fully qualified form Kubernetes uses for an image reference:
// "nginx" → "docker.io/library/nginx:latest", "foo/bar@sha256:…" → "docker.io/foo/bar@sha256:…".
// A reference with both a tag and a digest is pulled by digest, so it normalises to the digest form.
func Normalize(ref string) (string, error) {
	r, err := parse(ref)
	if err != nil {
		return "", err
	}
	return canonical(r), nil
}

func parse(ref string) (name.Reference, error) {
	if ref == "" || strings.TrimSpace(ref) != ref {
		return nil, fmt.Errorf("parse %q: %w", ref, ErrInvalidReference)
	}
	// Parse the "tag@digest" form ourselves: go-containerregistry would keep the tag in the
	// repository string.
	if at := strings.LastIndex(ref, "@"); at >= 0 {
		repo := ref[:at]
		if slash, colon := strings.LastIndex(repo, "/"), strings.LastIndex(repo, ":"); colon > slash {
			repo = repo[:colon]
		}
		ref = repo + ref[at:]
	}
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		// StrictValidation refuses an implicit ":latest"; retry leniently only for that case.
		r, err = name.ParseReference(ref)
		if err != nil {
			return nil, fmt.Errorf("parse %q: %w: %v", ref, ErrInvalidReference, err)
		}
	}
	return r, nil
}

// canonical prints r the way Kubernetes does: Docker Hub as "docker.io", never "index.docker.io".
func canonical(r name.Reference) string {
	reg := registryHost(r.Context().Registry)
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

func registryHost(r name.Registry) string {
	if h := r.RegistryStr(); h != name.DefaultRegistry {
		return h
	}
	return "docker.io"
}
