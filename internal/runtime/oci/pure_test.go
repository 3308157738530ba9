package oci

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vessel-dev/vessel/internal/runtime"
)

func TestProcessArgs(t *testing.T) {
	img := runtime.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"cmd-arg"}}
	tests := []struct {
		name          string
		img           runtime.ImageConfig
		command, args []string
		want          []string
	}{
		{"image only", img, nil, nil, []string{"/entry", "cmd-arg"}},
		{"args replace cmd", img, nil, []string{"a", "b"}, []string{"/entry", "a", "b"}},
		{"command drops entrypoint and cmd", img, []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"command and args", img, []string{"/bin/sh", "-c"}, []string{"echo"}, []string{"/bin/sh", "-c", "echo"}},
		{"no entrypoint", runtime.ImageConfig{Cmd: []string{"/cmd"}}, nil, nil, []string{"/cmd"}},
		{"no entrypoint, args", runtime.ImageConfig{Cmd: []string{"/cmd"}}, nil, []string{"/x"}, []string{"/x"}},
		{"expansion", img, []string{"echo", "$(GREETING)", "$$(GREETING)", "$(MISSING)", "$x", "$(UNCLOSED"}, nil,
			[]string{"echo", "hello", "$(GREETING)", "$(MISSING)", "$x", "$(UNCLOSED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := processArgs(tt.img, tt.command, tt.args, []string{"GREETING=hello"})
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/img", "A=1", "B=2"}, []runtime.EnvVar{{Name: "B", Value: "x=y"}, {Name: "C", Value: ""}})
	want := []string{"PATH=/img", "A=1", "B=x=y", "C="}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := mergeEnv(nil, nil); !slices.Equal(got, []string{defaultPath}) {
		t.Errorf("without PATH got %q", got)
	}
}

func TestWorkingDir(t *testing.T) {
	for _, tt := range [][3]string{{"/c", "/i", "/c"}, {"", "/i", "/i"}, {"", "", "/"}} {
		if got := workingDir(tt[0], tt[1]); got != tt[2] {
			t.Errorf("workingDir(%q, %q) = %q", tt[0], tt[1], got)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestResolveUser(t *testing.T) {
	fsys := fstest.MapFS{
		"etc/passwd": {Data: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n# comment\nbroken\n")},
		"etc/group":  {Data: []byte("root:x:0:\nappgrp:x:1001:\nextra:x:2000:app,other\nwheel:x:10:root\n")},
	}
	tests := []struct {
		name      string
		fs        fstest.MapFS
		imageUser string
		sc        runtime.SecurityContext
		want      user
		wantErr   bool
	}{
		{"default root", fsys, "", runtime.SecurityContext{}, user{0, 0, []uint32{10}}, false},
		{"name", fsys, "app", runtime.SecurityContext{}, user{1000, 1001, []uint32{2000}}, false},
		{"numeric known", fsys, "1000", runtime.SecurityContext{}, user{1000, 1001, []uint32{2000}}, false},
		{"numeric unknown", fsys, "4242", runtime.SecurityContext{}, user{4242, 0, nil}, false},
		{"name:group", fsys, "app:extra", runtime.SecurityContext{}, user{1000, 2000, nil}, false},
		{"uid:gid", fsys, "5:6", runtime.SecurityContext{}, user{5, 6, nil}, false},
		{"runAsUser wins", fsys, "app:extra", runtime.SecurityContext{RunAsUser: ptr[int64](3000)}, user{3000, 0, nil}, false},
		{"runAsUser+group+supplemental", fsys, "", runtime.SecurityContext{RunAsUser: ptr[int64](1000), RunAsGroup: ptr[int64](7), SupplementalGroups: []int64{8, 7}},
			user{1000, 7, []uint32{2000, 8}}, false},
		{"unknown name", fsys, "nobody", runtime.SecurityContext{}, user{}, true},
		{"unknown group", fsys, "app:nogroup", runtime.SecurityContext{}, user{}, true},
		{"no passwd file", fstest.MapFS{}, "123", runtime.SecurityContext{}, user{123, 0, nil}, false},
		{"negative", fsys, "", runtime.SecurityContext{RunAsUser: ptr[int64](-1)}, user{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveUser(tt.fs, tt.imageUser, tt.sc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (got.UID != tt.want.UID || got.GID != tt.want.GID || !slices.Equal(got.AdditionalGids, tt.want.AdditionalGids)) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCapabilities(t *testing.T) {
	caps := capabilities(runtime.SecurityContext{CapDrop: []string{"NET_RAW", "cap_kill"}, CapAdd: []string{"SYS_PTRACE", "CHOWN"}})
	if slices.Contains(caps, "CAP_NET_RAW") || slices.Contains(caps, "CAP_KILL") {
		t.Errorf("dropped caps present: %v", caps)
	}
	if !slices.Contains(caps, "CAP_SYS_PTRACE") || len(caps) != len(defaultCapabilities)-1 {
		t.Errorf("caps = %v", caps)
	}
	if caps := capabilities(runtime.SecurityContext{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}}); !slices.Equal(caps, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("drop ALL + add = %v", caps)
	}
}

func TestBuildSpec(t *testing.T) {
	in := specInput{
		Hostname: "pod-a", RootfsPath: "/r", NetnsPath: "/run/vessel/netns/sb", CgroupsPath: "/vessel/sb/c",
		Args: []string{"/bin/sh"}, Env: []string{"A=1"}, Cwd: "/w", User: user{UID: 1000, GID: 1000},
		Limits:   runtime.Resources{MilliCPU: 250, MemoryBytes: 64 << 20},
		EtcFiles: map[string]string{"/etc/resolv.conf": "/h/resolv", "/etc/hosts": "/h/hosts"},
		Mounts:   []runtime.Mount{{HostPath: "/vol", ContainerPath: "/data", ReadOnly: true}},
		Security: runtime.SecurityContext{ReadOnlyRootFilesystem: true},
	}
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Root.Readonly || s.Hostname != "pod-a" || !s.Process.NoNewPrivileges || s.Process.User.UID != 1000 {
		t.Errorf("root/hostname/nnp/user wrong: %+v %+v", s.Root, s.Process.User)
	}
	// The quota is written after start (see liftCPUQuota), never by runc.
	if c := s.Linux.Resources.CPU; c.Quota != nil || *c.Shares != 256 || *c.Period != 100000 {
		t.Errorf("cpu = %+v, want shares 256, period 100000 and no quota", c)
	}
	if m := s.Linux.Resources.Memory; *m.Limit != 64<<20 || *m.Swap != 64<<20 {
		t.Errorf("memory = %d/%d", *m.Limit, *m.Swap)
	}
	if rl := s.Process.Rlimits; len(rl) != 1 || rl[0].Type != "RLIMIT_NOFILE" || rl[0].Soft != 1024 || rl[0].Hard != 65535 {
		t.Errorf("rlimits = %+v", rl)
	}
	var netns string
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns != in.NetnsPath {
		t.Errorf("network namespace path = %q", netns)
	}
	var dsts []string
	for _, m := range s.Mounts {
		dsts = append(dsts, m.Destination)
	}
	if !slices.Contains(dsts, "/proc") || !slices.Contains(dsts, "/data") || slices.Index(dsts, "/etc/hosts") > slices.Index(dsts, "/etc/resolv.conf") {
		t.Errorf("mounts = %v", dsts)
	}
	if last := s.Mounts[len(s.Mounts)-1]; !slices.Contains(last.Options, "ro") {
		t.Errorf("read-only volume options = %v", last.Options)
	}
	if s.Linux.Seccomp == nil || !slices.Contains(s.Linux.Seccomp.Syscalls[0].Names, "mount") {
		t.Error("seccomp profile must deny mount")
	}
	if _, err := buildSpec(specInput{}); err == nil {
		t.Error("empty input must fail")
	}
	if _, err := buildSpec(specInput{RootfsPath: "/r", NetnsPath: "/n", Args: []string{"x"}, Mounts: []runtime.Mount{{HostPath: "/a", ContainerPath: "rel"}}}); err == nil {
		t.Error("relative mount destination must fail")
	}
}

func TestContainerID(t *testing.T) {
	id := containerID("sb-1", "app", 3)
	sid, name, attempt, err := parseContainerID(id)
	if err != nil || sid != "sb-1" || name != "app" || attempt != 3 {
		t.Errorf("parse(%q) = %q %q %d %v", id, sid, name, attempt, err)
	}
	for _, bad := range []runtime.ContainerID{"", "a.b", "a.b.c", "../x.app.1", "a.B.1"} {
		if _, _, _, err := parseContainerID(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestCRILogFormat(t *testing.T) {
	var buf bytes.Buffer
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	w := &criWriter{w: &buf, now: func() time.Time { return ts }}
	long := strings.Repeat("x", maxLogLine+10)
	w.copyStream("stdout", strings.NewReader("hello\n\nno newline"))
	w.copyStream("stderr", strings.NewReader(long+"\n"))
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	prefix := "2025-01-02T03:04:05.000000006Z "
	want := []string{
		prefix + "stdout F hello",
		prefix + "stdout F ",
		prefix + "stdout F no newline",
		prefix + "stderr P " + strings.Repeat("x", maxLogLine),
		prefix + "stderr F " + strings.Repeat("x", 10),
	}
	if !slices.Equal(lines, want) {
		t.Errorf("log lines differ:\n got %.200q\nwant %.200q", lines, want)
	}
}

func TestHostsAndResolv(t *testing.T) {
	spec := runtime.SandboxSpec{Hostname: "web-0"}
	if h := hostsFile(spec); !strings.HasPrefix(h, "127.0.0.1\tlocalhost\n") {
		t.Errorf("hosts = %q", h)
	}
	r := resolvConf(runtime.DNSConfig{Searches: []string{"a.svc", "svc"}, Options: []string{"ndots:5"}})
	if r != "search a.svc svc\noptions ndots:5\n" {
		t.Errorf("resolv.conf = %q", r)
	}
}

func TestDefaultShimArgv(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "vessel")
	if got := DefaultShimArgv(exe); !slices.Equal(got, []string{exe, "shim"}) {
		t.Errorf("without %s: %q, want the vessel shim subcommand", ShimBinary, got)
	}
	shim := filepath.Join(dir, ShimBinary)
	if err := os.WriteFile(shim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := DefaultShimArgv(exe); !slices.Equal(got, []string{exe, "shim"}) {
		t.Errorf("with a %s that is not executable: %q, want the vessel shim subcommand", ShimBinary, got)
	}
	if err := os.Chmod(shim, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := DefaultShimArgv(exe); !slices.Equal(got, []string{shim}) {
		t.Errorf("with %s: %q, want it", ShimBinary, got)
	}
}
