package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// The only platform Vessel's hosts run.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// parallelBlobs is how many blobs of one image download at once.
const parallelBlobs = 3

// downloaded counts blob bytes fetched from registries by all Stores, for benchmarks and metrics.
var downloaded atomic.Int64

// BytesDownloaded returns the number of blob bytes fetched from registries since process start.
func BytesDownloaded() int64 { return downloaded.Load() }

func (s *Store) pull(ctx context.Context, r name.Reference, norm string, opts PullOptions) (*Image, error) {
	start := time.Now()
	reg := registryHost(r.Context().Registry)
	fail := func(op string, err error) error {
		return &PullError{Ref: norm, Registry: reg, Op: op, Reason: classify(err), Err: err}
	}
	kc, err := KeychainFromSecrets(opts.Secrets)
	if err != nil {
		return nil, &PullError{Ref: norm, Registry: reg, Op: "read pull secrets", Reason: ErrUnauthorized, Err: err}
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc),
		remote.WithTransport(s.transport), remote.WithPlatform(platform)}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, fail("fetch manifest", err)
	}
	manifest, mediaType := desc.Manifest, desc.MediaType
	if mediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(manifest))
		if err != nil {
			return nil, fail("parse index", err)
		}
		pick, err := pickPlatform(idx)
		if err != nil {
			return nil, fail("select platform", err)
		}
		child, err := remote.Get(r.Context().Digest(pick.String()), ropts...)
		if err != nil {
			return nil, fail("fetch platform manifest", err)
		}
		manifest, mediaType = child.Manifest, child.MediaType
	}
	if !mediaType.IsImage() {
		return nil, fail("fetch manifest", fmt.Errorf("%w: unsupported media type %s", ErrNotFound, mediaType))
	}
	d, _, err := v1.SHA256(bytes.NewReader(manifest))
	if err != nil {
		return nil, fail("hash manifest", err)
	}
	if err := s.putBlob(d, manifest); err != nil {
		return nil, fail("store manifest", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		return nil, fail("parse manifest", err)
	}
	auth, err := kc.Resolve(r.Context())
	if err != nil {
		return nil, fail("resolve credentials", err)
	}
	rt, err := transport.NewWithContext(ctx, r.Context().Registry, auth, s.transport,
		[]string{r.Context().Scope(transport.PullScope)})
	if err != nil {
		return nil, fail("authenticate", err)
	}
	fetch := func(ctx context.Context, b blobRef) error {
		return s.fetchBlob(ctx, rt, r.Context(), b)
	}

	blobs := []blobRef{{Digest: d.String(), Size: int64(len(manifest))},
		{Digest: m.Config.Digest.String(), Size: m.Config.Size}}
	for _, l := range m.Layers {
		blobs = append(blobs, blobRef{Digest: l.Digest.String(), Size: l.Size})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelBlobs)
	for _, b := range blobs[1:] {
		g.Go(func() error { return fetch(gctx, b) })
	}
	if err := g.Wait(); err != nil {
		return nil, fail("download blob", err)
	}
	cfg, err := s.readConfig(m.Config.Digest)
	if err != nil {
		return nil, fail("read config", err)
	}
	if cfg.OS != "" && (cfg.OS != platform.OS || cfg.Architecture != platform.Architecture) {
		return nil, fail("check platform", fmt.Errorf("%w: image is %s/%s", ErrWrongPlatform, cfg.OS, cfg.Architecture))
	}
	rec := &record{Digest: d.String(), Config: cfg.Config, Blobs: blobs}
	for _, b := range blobs {
		rec.BlobBytes += b.Size
	}
	if old, err := s.readRecord(d); err == nil {
		rec.Refs, rec.TreeBytes = old.Refs, old.TreeBytes
	}
	if err := s.writeRecord(rec); err != nil {
		return nil, fail("write image record", err)
	}
	img, err := s.ready(ctx, norm, d, fetch)
	if err != nil {
		return nil, fail("unpack", err)
	}
	if err := s.addRef(norm, d); err != nil {
		return nil, fail("record reference", err)
	}
	s.log.Info("pulled image", "image", norm, "digest", d, "layers", len(m.Layers),
		"bytes", rec.BlobBytes, "duration", time.Since(start))
	return img, nil
}

func pickPlatform(idx *v1.IndexManifest) (v1.Hash, error) {
	var seen []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.OS == platform.OS && m.Platform.Architecture == platform.Architecture {
			return m.Digest, nil
		}
		seen = append(seen, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	return v1.Hash{}, fmt.Errorf("%w: index offers %s", ErrWrongPlatform, strings.Join(seen, ", "))
}

// addRef points norm at d, both in refs/ and in the image record (so GC can drop the ref).
func (s *Store) addRef(norm string, d v1.Hash) error {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	rec, err := s.readRecord(d)
	if err != nil {
		return err
	}
	if !slices.Contains(rec.Refs, norm) {
		rec.Refs = append(rec.Refs, norm)
		if err := s.writeRecord(rec); err != nil {
			return err
		}
	}
	return writeFileAtomic(s.dir.tmp(), s.dir.ref(norm), []byte(d.String()+"\n"))
}

func (s *Store) readConfig(d v1.Hash) (*ocispec.Image, error) {
	b, err := os.ReadFile(s.dir.blob(d))
	if err != nil {
		return nil, err
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(b)); got != d {
		os.Remove(s.dir.blob(d))
		return nil, fmt.Errorf("%w: config blob %s hashes to %s", ErrDigestMismatch, d, got)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", d, err)
	}
	return &cfg, nil
}

// putBlob stores content already in memory (manifests).
func (s *Store) putBlob(d v1.Hash, b []byte) error {
	dst := s.dir.blob(d)
	if fi, err := os.Stat(dst); err == nil && fi.Size() == int64(len(b)) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(s.dir.tmp(), dst, b)
}

// fetchBlob downloads a blob unless a file of the right size is already cached. Content is
// written to tmp/, hashed on the way, and renamed into place only if it matches its digest, so
// a crash or a lying registry never leaves a wrong blob under a digest name. A same-size corrupt
// blob is caught later, when unpacking hashes it.
func (s *Store) fetchBlob(ctx context.Context, rt http.RoundTripper, repo name.Repository, b blobRef) error {
	d, err := v1.NewHash(b.Digest)
	if err != nil {
		return err
	}
	dst := s.dir.blob(d)
	if fi, err := os.Stat(dst); err == nil && fi.Size() == b.Size {
		return nil
	}
	_, err, _ = s.blobs.Do(b.Digest, func() (any, error) {
		if fi, err := os.Stat(dst); err == nil && fi.Size() == b.Size {
			return nil, nil
		}
		return nil, s.download(ctx, rt, repo, d, b.Size, dst)
	})
	return err
}

func (s *Store) download(ctx context.Context, rt http.RoundTripper, repo name.Repository, d v1.Hash, size int64, dst string) error {
	scheme := "https"
	if allowHTTP(repo.RegistryStr(), s.opts.Insecure) {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, repo.RegistryStr(), repo.RepositoryStr(), d)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// A client, not the bare RoundTripper: registries redirect blob downloads to object storage.
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return fmt.Errorf("download blob %s: %w", d, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download blob %s: %w", d, &httpStatusError{url: url, code: resp.StatusCode})
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir.tmp(), "blob-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(resp.Body, size+1), *buf)
	copyBufs.Put(buf)
	downloaded.Add(n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download blob %s: %w", d, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != size || got != d.String() {
		return fmt.Errorf("%w: blob %s from %s: got %d bytes hashing to %s, want %d bytes",
			ErrDigestMismatch, d, repo, n, got, size)
	}
	return os.Rename(f.Name(), dst)
}

// corruptBlobError reports a cached blob whose content no longer matches its digest.
type corruptBlobError struct{ digest string }

func (e *corruptBlobError) Error() string {
	return fmt.Sprintf("%v: cached blob %s is corrupt or missing", ErrDigestMismatch, e.digest)
}

func (e *corruptBlobError) Unwrap() error { return ErrDigestMismatch }

// unpackImage builds rootfs/<digest> from the cached layers. A blob that fails verification is
// deleted and, when refetch is given, downloaded again and the unpack restarted once.
func (s *Store) unpackImage(ctx context.Context, rec *record, refetch func(context.Context, blobRef) error) error {
	d, err := v1.NewHash(rec.Digest)
	if err != nil {
		return err
	}
	final := s.dir.rootfsDir(d)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := s.unpackOnce(ctx, rec, final)
		var corrupt *corruptBlobError
		if !errors.As(err, &corrupt) || refetch == nil || attempt > 0 {
			if err == nil {
				s.log.Info("unpacked image", "digest", d, "duration", time.Since(start))
			}
			return err
		}
		s.log.Warn("cached blob corrupt, fetching again", "digest", corrupt.digest, "image", d)
		for _, b := range rec.Blobs[2:] {
			if b.Digest == corrupt.digest {
				if err := refetch(ctx, b); err != nil {
					return err
				}
			}
		}
	}
}

func (s *Store) unpackOnce(ctx context.Context, rec *record, final string) error {
	tmp, err := os.MkdirTemp(s.dir.tmp(), "rootfs-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	u := newUnpacker(tmp)
	for _, b := range rec.Blobs[2:] {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.applyBlob(u, b); err != nil {
			return fmt.Errorf("layer %s: %w", b.Digest, err)
		}
	}
	if err := u.finish(); err != nil {
		return err
	}
	size, err := treeSize(tmp)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			return nil // another Store on this directory won the race; same content
		}
		return err
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	cur, err := s.readRecord(mustHash(rec.Digest))
	if err != nil {
		return err
	}
	cur.TreeBytes = size
	return s.writeRecord(cur)
}

// applyBlob hashes the compressed layer while unpacking it; if anything goes wrong the hash tells
// a damaged cache entry (re-fetchable) from a layer that is bad at the source.
func (s *Store) applyBlob(u *unpacker, b blobRef) error {
	d := mustHash(b.Digest)
	path := s.dir.blob(d)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &corruptBlobError{digest: b.Digest}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	tee := io.TeeReader(f, h)
	zr, closeZ, applyErr := decompress(tee)
	if applyErr == nil {
		applyErr = u.apply(zr)
		closeZ()
	}
	// Hash whatever the tar reader left unread (padding, or everything after an error).
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.Digest {
		os.Remove(path)
		return &corruptBlobError{digest: b.Digest}
	}
	return applyErr
}

func mustHash(s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		panic(fmt.Sprintf("stored digest %q: %v", s, err))
	}
	return h
}

// schemePolicy refuses plain HTTP except to loopback and to registries configured as insecure.
// go-containerregistry falls back to HTTP on its own for private (RFC 1918) addresses; this keeps
// such registries on HTTPS unless an admin says otherwise.
type schemePolicy struct {
	base     http.RoundTripper
	insecure []string
}

func (p *schemePolicy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !allowHTTP(req.URL.Host, p.insecure) {
		return nil, fmt.Errorf("plain HTTP to %s refused: registry is not configured as insecure", req.URL.Host)
	}
	return p.base.RoundTrip(req)
}

func allowHTTP(hostport string, insecure []string) bool {
	if slices.Contains(insecure, hostport) {
		return true
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if slices.Contains(insecure, host) || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
