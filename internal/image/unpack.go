package image

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// maxSymlinkHops bounds symlink resolution like the kernel's MAXSYMLINKS.
	maxSymlinkHops = 40
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// unpacker applies layers, lowest first, onto a directory it owns exclusively (a private temp
// dir), so nothing else changes the tree while it resolves paths. Every path a layer names is
// resolved inside root with chroot semantics: ".." stops at root and absolute symlinks restart at
// root, so a symlinked parent directory cannot lead a write outside the tree. Entry names and hard
// link targets that climb out with "../" are refused outright, since no well-formed image has them.
type unpacker struct {
	root   string
	isRoot bool // may chown and create device nodes
	// Directory metadata is applied last: a read-only or timestamped directory would otherwise be
	// changed (or made unwritable) by the entries written into it afterwards.
	dirs []dirMeta
}

type dirMeta struct {
	path  string
	mode  fs.FileMode
	mtime time.Time
}

func newUnpacker(root string) *unpacker {
	return &unpacker{root: root, isRoot: os.Geteuid() == 0}
}

// decompress sniffs the compression from the content rather than trusting the media type: Docker
// schema 2 images label gzip layers and some registries mislabel them.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// apply extracts one layer's tar stream. It returns an error wrapping ErrInvalidLayer for content
// that tries to escape the tree; other errors are I/O or format errors.
func (u *unpacker) apply(r io.Reader) error {
	tr := tar.NewReader(r)
	// touched holds every path this layer wrote plus their ancestors: an opaque marker hides
	// everything in its directory from lower layers but must keep what this layer put there,
	// and tar order does not promise the marker comes first.
	touched := map[string]bool{}
	var opaque []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "." {
			if hdr.Typeflag == tar.TypeDir {
				if err := u.meta(u.root, hdr); err != nil {
					return err
				}
			}
			continue
		}
		dir, base := path.Split(rel)
		parent, err := u.resolve(dir, true)
		if err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		if base == whiteoutOpaque {
			opaque = append(opaque, parent)
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			victim := filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))
			if err := os.RemoveAll(victim); err != nil {
				return fmt.Errorf("whiteout %q: %w", hdr.Name, err)
			}
			continue
		}
		target := filepath.Join(parent, base)
		for p := target; p != u.root && !touched[p]; p = filepath.Dir(p) {
			touched[p] = true
		}
		if err := u.write(target, hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	for _, d := range opaque {
		if err := pruneUntouched(d, touched); err != nil {
			return fmt.Errorf("opaque directory %s: %w", d, err)
		}
	}
	return nil
}

// finish applies the deferred directory metadata, deepest first.
func (u *unpacker) finish() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		if _, err := os.Lstat(d.path); errors.Is(err, fs.ErrNotExist) {
			continue // removed by a later layer's whiteout
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", d.path, err)
		}
		if err := os.Chtimes(d.path, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("chtimes %s: %w", d.path, err)
		}
	}
	u.dirs = nil
	return nil
}

func pruneUntouched(dir string, touched map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case !touched[p]:
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		case e.IsDir():
			if err := pruneUntouched(p, touched); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanEntry turns a tar name into a path relative to the root, refusing names that climb out.
// A leading "/" is tolerated: tar writers use it for root-relative names.
func cleanEntry(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: path %q escapes the root filesystem", ErrInvalidLayer, name)
	}
	if p == "" {
		p = "."
	}
	return p, nil
}

// resolve walks rel (a directory path relative to root) component by component, following
// symlinks with chroot semantics, and returns the real path, which is always inside root.
// Missing directories are created when create is set.
func (u *unpacker) resolve(rel string, create bool) (string, error) {
	cur := u.root
	comps := strings.Split(rel, "/")
	hops := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur != u.root {
				cur = filepath.Dir(cur)
			}
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(next, 0o755); err != nil {
				return "", err
			}
			cur = next
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > maxSymlinkHops {
				return "", fmt.Errorf("%w: too many symlinks resolving %q", ErrInvalidLayer, rel)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				cur = u.root
			}
			comps = append(strings.Split(target, "/"), comps...)
		case fi.IsDir():
			cur = next
		default:
			return "", fmt.Errorf("%w: %q is not a directory", ErrInvalidLayer, next[len(u.root):])
		}
	}
	return cur, nil
}

func (u *unpacker) write(target string, hdr *tar.Header, r io.Reader) error {
	if fi, err := os.Lstat(target); err == nil {
		// A directory over a directory merges; anything else replaces what the lower layer had.
		if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := os.RemoveAll(target); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA still appears in old layers
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		buf := copyBufs.Get().(*[]byte)
		_, err = io.CopyBuffer(f, r, *buf)
		copyBufs.Put(buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		// Stored verbatim: it is resolved later inside the sandbox's own root, never on the host.
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
	case tar.TypeLink:
		return u.hardlink(target, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if hdr.Typeflag != tar.TypeFifo && !u.isRoot {
			return nil // only root may create device nodes; the guest's devtmpfs provides them anyway
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(target, mode, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
	default:
		return nil // PAX global headers, GNU sparse and other exotica carry no file
	}
	return u.meta(target, hdr)
}

// hardlink links target to the file the layer names by linkname, which must already exist in the
// tree (from this or a lower layer).
func (u *unpacker) hardlink(target, linkname string) error {
	rel, err := cleanEntry(linkname)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	dir, base := path.Split(rel)
	parent, err := u.resolve(dir, false)
	if err != nil {
		return fmt.Errorf("%w: hard link target %q: %v", ErrInvalidLayer, linkname, err)
	}
	src := filepath.Join(parent, base)
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("%w: hard link target %q: %v", ErrInvalidLayer, linkname, err)
	}
	if fi.IsDir() || src == u.root {
		return fmt.Errorf("%w: hard link to directory %q", ErrInvalidLayer, linkname)
	}
	return os.Link(src, target)
}

// meta applies owner, xattrs, mode and times. Owner goes first: chown clears setuid bits.
func (u *unpacker) meta(target string, hdr *tar.Header) error {
	if u.isRoot {
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil &&
			!errors.Is(err, unix.ENOTSUP) && !(errors.Is(err, unix.EPERM) && hdr.Typeflag == tar.TypeSymlink) {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set symlink times: %w", err)
		}
	case tar.TypeDir:
		u.dirs = append(u.dirs, dirMeta{path: target, mode: mode, mtime: hdr.ModTime})
	default:
		if err := os.Chmod(target, mode); err != nil {
			return err
		}
		if err := os.Chtimes(target, hdr.ModTime, hdr.ModTime); err != nil {
			return err
		}
	}
	return nil
}
