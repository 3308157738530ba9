package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const maxManifestBytes = 4 << 20

var (
	nameRe   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagRe    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRe = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	uploadRe = regexp.MustCompile(`^[a-f0-9]{32}$`)
)

// Handler serves the OCI distribution API from a directory.
type Handler struct {
	dir string
	log *slog.Logger
}

// NewHandler returns a handler over dataDir, creating its layout if missing.
func NewHandler(dataDir string, logger *slog.Logger) (*Handler, error) {
	if logger == nil {
		logger = slog.Default()
	}
	h := &Handler{dir: dataDir, log: logger.With("component", "registry")}
	for _, d := range []string{h.blobDir(), filepath.Join(dataDir, "repositories"), h.uploadDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open registry dir %s: %w", dataDir, err)
		}
	}
	return h, nil
}

func (h *Handler) blobDir() string   { return filepath.Join(h.dir, "blobs", "sha256") }
func (h *Handler) uploadDir() string { return filepath.Join(h.dir, "uploads") }
func (h *Handler) blob(d string) string {
	return filepath.Join(h.blobDir(), strings.TrimPrefix(d, "sha256:"))
}
func (h *Handler) repo(name string) string { return filepath.Join(h.dir, "repositories", name) }
func (h *Handler) manifestLink(name, d string) string {
	return filepath.Join(h.repo(name), "manifests", strings.TrimPrefix(d, "sha256:"))
}
func (h *Handler) tag(name, tag string) string { return filepath.Join(h.repo(name), "tags", tag) }

// regError is an error in the distribution API's JSON shape.
type regError struct {
	status  int
	code    string
	message string
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, e regError) {
	if e.status >= 500 {
		h.log.Error("registry request failed", "method", r.Method, "path", r.URL.Path, "err", e.message)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": e.code, "message": e.message}}})
}

func internal(err error) regError {
	return regError{http.StatusInternalServerError, "UNKNOWN", err.Error()}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := r.URL.Path
	if p == "/v2" || p == "/v2/" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
		return
	}
	if p == "/v2/_catalog" {
		h.catalog(w, r)
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		h.fail(w, r, regError{http.StatusNotFound, "UNSUPPORTED", "not a registry path"})
		return
	}
	var name, kind, arg string
	for _, k := range []string{"/blobs/uploads/", "/blobs/uploads", "/blobs/", "/manifests/", "/tags/list"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			name, kind, arg = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	if !nameRe.MatchString(name) {
		h.fail(w, r, regError{http.StatusNotFound, "NAME_INVALID", fmt.Sprintf("invalid repository name %q", name)})
		return
	}
	var e *regError
	switch {
	case kind == "blobs/uploads":
		e = h.upload(w, r, name, arg)
	case kind == "blobs" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		e = h.getBlob(w, r, arg)
	case kind == "manifests" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		e = h.getManifest(w, r, name, arg)
	case kind == "manifests" && r.Method == http.MethodPut:
		e = h.putManifest(w, r, name, arg)
	case kind == "manifests" && r.Method == http.MethodDelete:
		e = h.deleteManifest(w, name, arg)
	case kind == "tags/list" && r.Method == http.MethodGet:
		e = h.tags(w, name)
	default:
		e = &regError{http.StatusMethodNotAllowed, "UNSUPPORTED", r.Method + " " + p}
	}
	if e != nil {
		h.fail(w, r, *e)
	}
}

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, d string) *regError {
	if !digestRe.MatchString(d) {
		return &regError{http.StatusBadRequest, "DIGEST_INVALID", d}
	}
	f, err := os.Open(h.blob(d))
	if errors.Is(err, fs.ErrNotExist) {
		return &regError{http.StatusNotFound, "BLOB_UNKNOWN", d}
	}
	if err != nil {
		return ptr(internal(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ptr(internal(err))
	}
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "max-age=31536000") // content-addressed
	http.ServeContent(w, r, "", fi.ModTime(), f)        // also answers HEAD and Range
	return nil
}

func ptr(e regError) *regError { return &e }

// upload handles the blob upload protocol: monolithic POST with ?digest=, cross-repository mount,
// and POST + PATCH* + PUT chunked uploads.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, name, id string) *regError {
	if id == "" {
		if r.Method != http.MethodPost {
			return &regError{http.StatusMethodNotAllowed, "UNSUPPORTED", r.Method}
		}
		q := r.URL.Query()
		if d := q.Get("mount"); d != "" && digestRe.MatchString(d) {
			if _, err := os.Stat(h.blob(d)); err == nil {
				w.Header().Set("Location", "/v2/"+name+"/blobs/"+d)
				w.Header().Set("Docker-Content-Digest", d)
				w.WriteHeader(http.StatusCreated)
				return nil
			}
		}
		id = newUploadID()
		f, err := os.OpenFile(filepath.Join(h.uploadDir(), id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return ptr(internal(err))
		}
		f.Close()
		if d := q.Get("digest"); d != "" {
			return h.finishUpload(w, r, name, id, d)
		}
		h.uploadStatus(w, name, id, http.StatusAccepted)
		return nil
	}
	if !uploadRe.MatchString(id) {
		return &regError{http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", id}
	}
	path := filepath.Join(h.uploadDir(), id)
	if _, err := os.Stat(path); err != nil {
		return &regError{http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", id}
	}
	switch r.Method {
	case http.MethodGet:
		h.uploadStatus(w, name, id, http.StatusNoContent)
	case http.MethodPatch:
		if e := h.appendUpload(path, r.Body); e != nil {
			return e
		}
		h.uploadStatus(w, name, id, http.StatusAccepted)
	case http.MethodPut:
		return h.finishUpload(w, r, name, id, r.URL.Query().Get("digest"))
	case http.MethodDelete:
		os.Remove(path)
		w.WriteHeader(http.StatusNoContent)
	default:
		return &regError{http.StatusMethodNotAllowed, "UNSUPPORTED", r.Method}
	}
	return nil
}

func newUploadID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *Handler) uploadStatus(w http.ResponseWriter, name, id string, status int) {
	var size int64
	if fi, err := os.Stat(filepath.Join(h.uploadDir(), id)); err == nil {
		size = fi.Size()
	}
	w.Header().Set("Location", "/v2/"+name+"/blobs/uploads/"+id)
	w.Header().Set("Docker-Upload-UUID", id)
	w.Header().Set("Range", "0-"+strconv.FormatInt(max(size-1, 0), 10))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

func (h *Handler) appendUpload(path string, body io.Reader) *regError {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return ptr(internal(err))
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ptr(internal(err))
	}
	return nil
}

// finishUpload appends the last chunk, then moves the upload into blobs/ only if it hashes to d.
func (h *Handler) finishUpload(w http.ResponseWriter, r *http.Request, name, id, d string) *regError {
	path := filepath.Join(h.uploadDir(), id)
	if !digestRe.MatchString(d) {
		os.Remove(path)
		return &regError{http.StatusBadRequest, "DIGEST_INVALID", "missing or invalid digest " + d}
	}
	if e := h.appendUpload(path, r.Body); e != nil {
		return e
	}
	got, err := hashFile(path)
	if err != nil {
		return ptr(internal(err))
	}
	if got != d {
		os.Remove(path)
		return &regError{http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("upload hashes to %s, not %s", got, d)}
	}
	if err := os.Rename(path, h.blob(d)); err != nil {
		return ptr(internal(err))
	}
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d)
	w.Header().Set("Docker-Content-Digest", d)
	w.WriteHeader(http.StatusCreated)
	return nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// resolve turns a tag or digest into the digest of a manifest this repository has.
func (h *Handler) resolve(name, ref string) (string, *regError) {
	d := ref
	if !digestRe.MatchString(ref) {
		if !tagRe.MatchString(ref) {
			return "", &regError{http.StatusBadRequest, "TAG_INVALID", ref}
		}
		b, err := os.ReadFile(h.tag(name, ref))
		if errors.Is(err, fs.ErrNotExist) {
			return "", &regError{http.StatusNotFound, "MANIFEST_UNKNOWN", name + ":" + ref}
		}
		if err != nil {
			return "", ptr(internal(err))
		}
		d = strings.TrimSpace(string(b))
	}
	if _, err := os.Stat(h.manifestLink(name, d)); err != nil {
		return "", &regError{http.StatusNotFound, "MANIFEST_UNKNOWN", name + "@" + d}
	}
	return d, nil
}

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, name, ref string) *regError {
	d, e := h.resolve(name, ref)
	if e != nil {
		return e
	}
	mt, err := os.ReadFile(h.manifestLink(name, d))
	if err != nil {
		return ptr(internal(err))
	}
	b, err := os.ReadFile(h.blob(d))
	if err != nil {
		return ptr(internal(err))
	}
	w.Header().Set("Content-Type", string(mt))
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		w.Write(b)
	}
	return nil
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, name, ref string) *regError {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxManifestBytes+1))
	if err != nil {
		return ptr(internal(err))
	}
	if len(b) > maxManifestBytes {
		return &regError{http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "manifest too large"}
	}
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	isDigest := digestRe.MatchString(ref)
	if isDigest && ref != d {
		return &regError{http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("manifest hashes to %s, not %s", d, ref)}
	}
	if !isDigest && !tagRe.MatchString(ref) {
		return &regError{http.StatusBadRequest, "TAG_INVALID", ref}
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return &regError{http.StatusBadRequest, "MANIFEST_INVALID", err.Error()}
	}
	mt := r.Header.Get("Content-Type")
	if mt == "" {
		mt = m.MediaType
	}
	tmp := filepath.Join(h.uploadDir(), newUploadID())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return ptr(internal(err))
	}
	if err := os.Rename(tmp, h.blob(d)); err != nil {
		return ptr(internal(err))
	}
	if err := h.writeFile(h.manifestLink(name, d), mt); err != nil {
		return ptr(internal(err))
	}
	if !isDigest {
		if err := h.writeFile(h.tag(name, ref), d); err != nil {
			return ptr(internal(err))
		}
	}
	h.log.Debug("manifest stored", "repository", name, "reference", ref, "digest", d)
	w.Header().Set("Location", "/v2/"+name+"/manifests/"+d)
	w.Header().Set("Docker-Content-Digest", d)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// writeFile replaces a small file atomically.
func (h *Handler) writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(h.uploadDir(), newUploadID())
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (h *Handler) deleteManifest(w http.ResponseWriter, name, ref string) *regError {
	if !digestRe.MatchString(ref) {
		if err := os.Remove(h.tag(name, ref)); err != nil {
			return &regError{http.StatusNotFound, "MANIFEST_UNKNOWN", name + ":" + ref}
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	if err := os.Remove(h.manifestLink(name, ref)); err != nil {
		return &regError{http.StatusNotFound, "MANIFEST_UNKNOWN", name + "@" + ref}
	}
	tags, _ := h.listTags(name)
	for _, t := range tags {
		if b, err := os.ReadFile(h.tag(name, t)); err == nil && strings.TrimSpace(string(b)) == ref {
			os.Remove(h.tag(name, t))
		}
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (h *Handler) listTags(name string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(h.repo(name), "tags"))
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, e := range entries {
		tags = append(tags, e.Name())
	}
	slices.Sort(tags)
	return tags, nil
}

func (h *Handler) tags(w http.ResponseWriter, name string) *regError {
	tags, err := h.listTags(name)
	if errors.Is(err, fs.ErrNotExist) {
		return &regError{http.StatusNotFound, "NAME_UNKNOWN", name}
	}
	if err != nil {
		return ptr(internal(err))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": tags})
	return nil
}

// Repositories lists repository names that have at least one manifest, sorted.
func (h *Handler) Repositories() ([]string, error) {
	root := filepath.Join(h.dir, "repositories")
	var repos []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "manifests" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			repos = append(repos, filepath.ToSlash(rel))
			return filepath.SkipDir
		}
		if d.IsDir() && d.Name() == "tags" {
			return filepath.SkipDir
		}
		return nil
	})
	slices.Sort(repos)
	return repos, err
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request) {
	repos, err := h.Repositories()
	if err != nil {
		h.fail(w, r, internal(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"repositories": repos})
}
