package image

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// unpackLayers applies layers with a fresh unpacker into a new directory, as the store does.
func unpackLayers(t *testing.T, layers ...v1.Layer) (string, error) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	u := newUnpacker(root)
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		zr, closeZ, err := decompress(rc)
		if err != nil {
			t.Fatal(err)
		}
		err = u.apply(zr)
		closeZ()
		rc.Close()
		if err != nil {
			return root, err
		}
	}
	return root, u.finish()
}

func TestUnpackWhiteoutsLinksAndMetadata(t *testing.T) {
	lower := tarLayer(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/passwd", body: "root:x:0:0\n"},
		entry{name: "etc/gone", body: "deleted above"},
		entry{name: "opq/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "opq/old", body: "hidden by opaque"},
		entry{name: "opq/sub/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "opq/sub/deep", body: "hidden too"},
		entry{name: "usr/lib/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		entry{name: "var/run", typ: tar.TypeSymlink, link: "/run"},
	)
	upper := tarLayer(t,
		entry{name: "etc/.wh.gone"},
		entry{name: "opq/new", body: "kept"}, // before the marker: order must not matter
		entry{name: "opq/.wh..wh..opq"},
		entry{name: "lib/libc.so", body: "libc"},  // through a relative symlinked parent
		entry{name: "var/run/app.pid", body: "1"}, // through an absolute one: lands in /run
		entry{name: "bin/tool", mode: 0o4755, uid: 1000, gid: 2000, body: "elf",
			xattrs: map[string]string{"user.vessel": "yes"}},
		entry{name: "bin/tool-link", typ: tar.TypeLink, link: "bin/tool"},
		entry{name: "bin/sh", typ: tar.TypeSymlink, link: "tool", uid: 3, gid: 4},
		entry{name: "ro/", typ: tar.TypeDir, mode: 0o555, uid: 5, gid: 6},
		entry{name: "ro/file", body: "inside read-only dir"},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		entry{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
	)
	root, err := unpackLayers(t, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }

	if exists("etc/gone") || !exists("etc/passwd") {
		t.Error("whiteout: etc/gone should be gone, etc/passwd kept")
	}
	if exists("opq/old") || exists("opq/sub") || read("opq/new") != "kept" {
		t.Error("opaque dir: lower entries should be hidden, this layer's kept")
	}
	if read("usr/lib/libc.so") != "libc" {
		t.Error("write through relative symlinked dir")
	}
	if read("run/app.pid") != "1" {
		t.Error("write through absolute symlinked dir did not land inside the root")
	}
	if l, _ := os.Readlink(filepath.Join(root, "bin/sh")); l != "tool" {
		t.Errorf("symlink bin/sh -> %q", l)
	}
	fi, err := os.Stat(filepath.Join(root, "bin/tool"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/tool mode %v, want setuid 0755", fi.Mode())
	}
	li, _ := os.Stat(filepath.Join(root, "bin/tool-link"))
	if !os.SameFile(fi, li) {
		t.Error("hard link not preserved")
	}
	if ri, _ := os.Stat(filepath.Join(root, "ro")); ri.Mode().Perm() != 0o555 || read("ro/file") == "" {
		t.Errorf("read-only dir: mode %v", ri.Mode())
	}
	if fi, _ := os.Lstat(filepath.Join(root, "dev/fifo")); fi.Mode()&os.ModeNamedPipe == 0 {
		t.Error("fifo not created")
	}

	t.Run("root-only", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("owners and device nodes need root")
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1000 || st.Gid != 2000 {
			t.Errorf("bin/tool owner %d:%d", st.Uid, st.Gid)
		}
		var ls unix.Stat_t
		unix.Lstat(filepath.Join(root, "bin/sh"), &ls)
		if ls.Uid != 3 || ls.Gid != 4 {
			t.Errorf("symlink owner %d:%d (lchown)", ls.Uid, ls.Gid)
		}
		var ds unix.Stat_t
		if err := unix.Stat(filepath.Join(root, "dev/null"), &ds); err != nil ||
			ds.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(ds.Rdev) != 1 || unix.Minor(ds.Rdev) != 3 {
			t.Errorf("device node: %+v %v", ds, err)
		}
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(root, "bin/tool"), "user.vessel", buf)
		if err != nil && !errors.Is(err, unix.ENOTSUP) {
			t.Errorf("xattr: %v", err)
		} else if err == nil && string(buf[:n]) != "yes" {
			t.Errorf("xattr = %q", buf[:n])
		}
	})
}

func TestUnpackRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	for name, layers := range map[string][]v1.Layer{
		"dot-dot name":   {tarLayer(t, entry{name: "../../" + filepath.Base(outside) + "/pwned", body: "x"})},
		"dot-dot inside": {tarLayer(t, entry{name: "a/../../pwned", body: "x"})},
		"hard link outside": {tarLayer(t,
			entry{name: "passwd", typ: tar.TypeLink, link: "../../../../etc/passwd"})},
		"hard link to missing": {tarLayer(t, entry{name: "x", typ: tar.TypeLink, link: "nope"})},
	} {
		_, err := unpackLayers(t, layers...)
		if !errors.Is(err, ErrInvalidLayer) {
			t.Errorf("%s: %v, want ErrInvalidLayer", name, err)
		}
	}

	// A symlinked parent pointing outside resolves inside the root instead (chroot semantics):
	// nothing is written outside, in one layer or across two.
	escape := tarLayer(t,
		entry{name: "evil", typ: tar.TypeSymlink, link: outside},
		entry{name: "up", typ: tar.TypeSymlink, link: "../../../../../../" + outside},
	)
	write := tarLayer(t,
		entry{name: "evil/pwned", body: "x"},
		entry{name: "up/pwned2", body: "x"},
		entry{name: "evil-link", typ: tar.TypeLink, link: "evil/pwned"},
	)
	root, err := unpackLayers(t, escape, write)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("layer wrote outside the root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, outside, "pwned")); err != nil {
		t.Errorf("write through escaping symlink should land inside the root: %v", err)
	}
}

// A symlink loop in a parent is refused rather than spun on.
func TestUnpackSymlinkLoop(t *testing.T) {
	_, err := unpackLayers(t, tarLayer(t,
		entry{name: "a", typ: tar.TypeSymlink, link: "b"},
		entry{name: "b", typ: tar.TypeSymlink, link: "a"},
		entry{name: "a/file", body: "x"},
	))
	if !errors.Is(err, ErrInvalidLayer) {
		t.Errorf("loop: %v", err)
	}
}
