package oci

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// user is the identity a container process runs as.
type user struct {
	UID, GID       uint32
	AdditionalGids []uint32
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// resolveUser decides the process identity from the security context
// (which wins) and the image's USER ("name", "uid", "name:group",
// "uid:gid"), looking names up in the image's /etc/passwd and /etc/group.
// rootfs should be rooted at the image root (os.Root.FS) so symlinks in
// the image cannot point the lookup at host files.
func resolveUser(rootfs fs.FS, imageUser string, sc runtime.SecurityContext) (user, error) {
	passwd, err := readPasswd(rootfs)
	if err != nil {
		return user{}, err
	}
	groups, err := readGroup(rootfs)
	if err != nil {
		return user{}, err
	}
	userPart, groupPart, hasGroup := strings.Cut(imageUser, ":")
	var u user
	var name string
	switch {
	case sc.RunAsUser != nil:
		if *sc.RunAsUser < 0 || *sc.RunAsUser > 1<<32-1 {
			return user{}, fmt.Errorf("runAsUser %d out of range: %w", *sc.RunAsUser, runtime.ErrInvalidArgument)
		}
		u.UID = uint32(*sc.RunAsUser)
		if e, ok := findPasswd(passwd, func(e passwdEntry) bool { return e.uid == u.UID }); ok {
			u.GID, name = e.gid, e.name
		}
		hasGroup = false // the image's group belongs to the image's user
	case userPart == "":
		u.UID = 0
		if e, ok := findPasswd(passwd, func(e passwdEntry) bool { return e.uid == 0 }); ok {
			name = e.name
		}
	default:
		if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
			u.UID = uint32(n)
			if e, ok := findPasswd(passwd, func(e passwdEntry) bool { return e.uid == u.UID }); ok {
				u.GID, name = e.gid, e.name
			}
		} else {
			e, ok := findPasswd(passwd, func(e passwdEntry) bool { return e.name == userPart })
			if !ok {
				return user{}, fmt.Errorf("image user %q not found in /etc/passwd: %w", userPart, runtime.ErrInvalidArgument)
			}
			u.UID, u.GID, name = e.uid, e.gid, e.name
		}
	}
	if hasGroup && groupPart != "" {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(n)
		} else {
			i := slices.IndexFunc(groups, func(g groupEntry) bool { return g.name == groupPart })
			if i < 0 {
				return user{}, fmt.Errorf("image group %q not found in /etc/group: %w", groupPart, runtime.ErrInvalidArgument)
			}
			u.GID = groups[i].gid
		}
	}
	if sc.RunAsGroup != nil {
		if *sc.RunAsGroup < 0 || *sc.RunAsGroup > 1<<32-1 {
			return user{}, fmt.Errorf("runAsGroup %d out of range: %w", *sc.RunAsGroup, runtime.ErrInvalidArgument)
		}
		u.GID = uint32(*sc.RunAsGroup)
	}
	add := func(g uint32) {
		if g != u.GID && !slices.Contains(u.AdditionalGids, g) {
			u.AdditionalGids = append(u.AdditionalGids, g)
		}
	}
	if name != "" {
		for _, g := range groups {
			if slices.Contains(g.members, name) {
				add(g.gid)
			}
		}
	}
	for _, g := range sc.SupplementalGroups {
		if g < 0 || g > 1<<32-1 {
			return user{}, fmt.Errorf("supplemental group %d out of range: %w", g, runtime.ErrInvalidArgument)
		}
		add(uint32(g))
	}
	return u, nil
}

func findPasswd(entries []passwdEntry, match func(passwdEntry) bool) (passwdEntry, bool) {
	i := slices.IndexFunc(entries, match)
	if i < 0 {
		return passwdEntry{}, false
	}
	return entries[i], true
}

// readColonFile returns the fields of each well-formed line; a missing file
// is an empty one (images FROM scratch have none).
func readColonFile(rootfs fs.FS, name string, minFields int) ([][]string, error) {
	f, err := rootfs.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", name, err)
	}
	defer f.Close()
	var out [][]string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) >= minFields {
			out = append(out, fields)
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read image %s: %w", name, err)
	}
	return out, nil
}

func readPasswd(rootfs fs.FS) ([]passwdEntry, error) {
	lines, err := readColonFile(rootfs, "etc/passwd", 4)
	if err != nil {
		return nil, err
	}
	var out []passwdEntry
	for _, f := range lines {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 == nil && err2 == nil {
			out = append(out, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)})
		}
	}
	return out, nil
}

func readGroup(rootfs fs.FS) ([]groupEntry, error) {
	lines, err := readColonFile(rootfs, "etc/group", 3)
	if err != nil {
		return nil, err
	}
	var out []groupEntry
	for _, f := range lines {
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		g := groupEntry{name: f[0], gid: uint32(gid)}
		if len(f) > 3 && f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	}
	return out, nil
}
