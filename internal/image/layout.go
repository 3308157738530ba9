package image

import (
	"net/url"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layout computes every path under the store's data dir, so the on-disk format reads in one place:
//
//	blobs/sha256/<hex>          verified content: manifests, configs, compressed layers
//	images/<hex>.json           one record per image manifest; mtime = last use (LRU clock)
//	refs/<escaped reference>    normalised reference → manifest digest
//	rootfs/<hex>/               unpacked root filesystem, read-only by convention
//	leases/<hex>/<holder>       one empty file per holder using the image (survives restarts)
//	tmp/                        downloads and unpacks in progress; emptied by Open
//
// A later block-device form (ext4/erofs built from rootfs/<hex>) belongs in blockdev/<hex>.img,
// created by the same temp-then-rename rule and removed by GC with the rest of the image.
type layout struct{ root string }

func (l layout) blobs() string  { return filepath.Join(l.root, "blobs") }
func (l layout) images() string { return filepath.Join(l.root, "images") }
func (l layout) refs() string   { return filepath.Join(l.root, "refs") }
func (l layout) rootfs() string { return filepath.Join(l.root, "rootfs") }
func (l layout) leases() string { return filepath.Join(l.root, "leases") }
func (l layout) tmp() string    { return filepath.Join(l.root, "tmp") }

func (l layout) dirs() []string {
	return []string{l.blobs(), l.images(), l.refs(), l.rootfs(), l.leases(), l.tmp()}
}

func (l layout) blob(d v1.Hash) string { return filepath.Join(l.blobs(), d.Algorithm, d.Hex) }

func (l layout) record(d v1.Hash) string { return filepath.Join(l.images(), d.Hex+".json") }

func (l layout) ref(normalized string) string {
	return filepath.Join(l.refs(), url.PathEscape(normalized))
}

func (l layout) rootfsDir(d v1.Hash) string { return filepath.Join(l.rootfs(), d.Hex) }

func (l layout) blockDevice(d v1.Hash) string {
	return filepath.Join(l.root, "blockdev", d.Hex+".img")
}

func (l layout) leaseDir(d v1.Hash) string { return filepath.Join(l.leases(), d.Hex) }

func (l layout) lease(d v1.Hash, holder string) string {
	return filepath.Join(l.leaseDir(d), url.PathEscape(holder))
}

func unescape(s string) (string, error) { return url.PathUnescape(s) }
