package image

import (
	"errors"
	"testing"
)

func TestNormalize(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.25", "docker.io/library/nginx:1.25"},
		{"docker.io/nginx", "docker.io/library/nginx:latest"},
		{"index.docker.io/library/nginx:1", "docker.io/library/nginx:1"},
		{"foo/bar", "docker.io/foo/bar:latest"},
		{"quay.io/foo/bar:v1", "quay.io/foo/bar:v1"},
		{"127.0.0.1:5000/vessel/demo", "127.0.0.1:5000/vessel/demo:latest"},
		{"localhost:5000/demo:x", "localhost:5000/demo:x"},
		{"nginx@" + dgst, "docker.io/library/nginx@" + dgst},
		{"nginx:1.25@" + dgst, "docker.io/library/nginx@" + dgst},
		{"127.0.0.1:5000/a/b:t@" + dgst, "127.0.0.1:5000/a/b@" + dgst},
	} {
		got, err := Normalize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "nginx@sha256:short", " nginx", "nginx:bad!tag"} {
		if _, err := Normalize(bad); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("Normalize(%q) error = %v; want ErrInvalidReference", bad, err)
		}
	}
}
