package image

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Error categories. Every error returned by Store.Pull satisfies errors.Is for exactly one of them
// (or none, for local I/O failures), so callers can decide between retrying with back-off
// (ErrUnreachable) and reporting a permanent problem with the image reference (the others).
var (
	// ErrInvalidReference: the image reference does not parse (Kubernetes' InvalidImageName).
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrNotFound: the registry has no such repository, tag or digest; also returned by Store.Get
	// when the image is not in the local cache.
	ErrNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnreachable: the registry could not be contacted, or answered with a server error.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrWrongPlatform: the image has no linux/amd64 variant.
	ErrWrongPlatform = errors.New("no linux/amd64 image")
	// ErrDigestMismatch: content did not hash to the digest that names it, even after a re-fetch.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidLayer: a layer is malformed or tries to write outside the root filesystem.
	ErrInvalidLayer = errors.New("invalid layer")
)

// PullError says which image, from which registry, failed during which step. Reason is one of the
// category errors above; errors.Is(err, ErrNotFound) etc. match it.
type PullError struct {
	Ref      string // normalised reference, e.g. docker.io/library/nginx:latest
	Registry string // registry host that was contacted
	Op       string // step that failed, e.g. "fetch manifest"
	Reason   error  // category
	Err      error  // underlying cause
}

func (e *PullError) Error() string {
	if errors.Is(e.Err, e.Reason) {
		return fmt.Sprintf("pull %s from %s: %s: %v", e.Ref, e.Registry, e.Op, e.Err)
	}
	return fmt.Sprintf("pull %s from %s: %s: %v: %v", e.Ref, e.Registry, e.Op, e.Reason, e.Err)
}

// Is makes errors.Is match the category as well as anything in the cause chain.
func (e *PullError) Is(target error) bool { return target == e.Reason }

func (e *PullError) Unwrap() error { return e.Err }

// classify maps an error from go-containerregistry or net/http onto a category.
func classify(err error) error {
	for _, cat := range []error{ErrInvalidReference, ErrNotFound, ErrUnauthorized, ErrUnreachable,
		ErrWrongPlatform, ErrDigestMismatch, ErrInvalidLayer} {
		if errors.Is(err, cat) {
			return cat
		}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ErrUnauthorized
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return ErrNotFound
			}
		}
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			return ErrUnauthorized
		case terr.StatusCode == http.StatusNotFound:
			return ErrNotFound
		default:
			return ErrUnreachable
		}
	}
	var statusErr *httpStatusError
	if errors.As(err, &statusErr) {
		return classifyStatus(statusErr.code)
	}
	// Anything else from a remote operation is a transport failure: connection refused, DNS,
	// TLS, timeouts, resets. These are worth retrying with back-off.
	return ErrUnreachable
}

func classifyStatus(code int) error {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ErrUnauthorized
	case code == http.StatusNotFound:
		return ErrNotFound
	default:
		return ErrUnreachable
	}
}

// httpStatusError is an unexpected status on a blob download.
type httpStatusError struct {
	url  string
	code int
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("GET %s: HTTP %d", e.url, e.code) }
