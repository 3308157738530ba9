package oci

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// specInput is everything buildSpec needs, already resolved; buildSpec
// itself reads nothing from the host.
type specInput struct {
	Hostname    string
	RootfsPath  string
	NetnsPath   string
	CgroupsPath string
	Args        []string
	Env         []string
	Cwd         string
	User        user
	Limits      runtime.Resources
	// EtcFiles maps a container path (/etc/hosts, …) to the host file
	// bind-mounted there.
	EtcFiles map[string]string
	Mounts   []runtime.Mount
	Security runtime.SecurityContext
	// NofileHard caps the nofile hard limit (0 = nofileHard); see
	// nofileCeiling.
	NofileHard uint64
}

// defaultCapabilities is Docker's default set, which is what Kubernetes
// users expect from a pod without a capabilities section.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Paths under /proc and /sys that leak host information or allow host
// control; the same lists runc's and containerd's defaults use.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

const (
	nofileSoft = 1024
	nofileHard = 65535
	cfsPeriod  = 100000 // µs, the kernel default
	// minQuota is the smallest CFS quota the kernel accepts (1 ms).
	minQuota = 1000
)

// nofile is the RLIMIT_NOFILE of a container: soft 1024 / hard 65535,
// lowered to ceiling when the host cannot grant more.
func nofile(ceiling uint64) specs.POSIXRlimit {
	hard := uint64(nofileHard)
	if ceiling > 0 && ceiling < hard {
		hard = ceiling
	}
	return specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: min(nofileSoft, hard), Hard: hard}
}

// capabilities applies CapDrop then CapAdd to the default set. Names may
// carry the CAP_ prefix or not; "ALL" in CapDrop empties the set.
func capabilities(sc runtime.SecurityContext) []string {
	norm := func(c string) string {
		c = strings.ToUpper(c)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		return c
	}
	caps := slices.Clone(defaultCapabilities)
	for _, d := range sc.CapDrop {
		if strings.EqualFold(d, "ALL") {
			caps = nil
			break
		}
		caps = slices.DeleteFunc(caps, func(c string) bool { return c == norm(d) })
	}
	for _, a := range sc.CapAdd {
		if c := norm(a); !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	return caps
}

// cpuQuota converts milli-CPUs into a CFS quota per cfsPeriod.
func cpuQuota(milli int64) int64 {
	q := milli * cfsPeriod / 1000
	return max(q, minQuota)
}

// cpuShares converts milli-CPUs into cgroup v1 shares as the kubelet does.
func cpuShares(milli int64) uint64 {
	return uint64(max(milli*1024/1000, 2))
}

// buildSpec is the OCI runtime configuration of one container.
func buildSpec(in specInput) (*specs.Spec, error) {
	if in.RootfsPath == "" || in.NetnsPath == "" || len(in.Args) == 0 {
		return nil, fmt.Errorf("spec needs rootfs, netns and a command (args %q): %w", in.Args, runtime.ErrInvalidArgument)
	}
	caps := capabilities(in.Security)
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: in.Hostname,
		Root:     &specs.Root{Path: in.RootfsPath, Readonly: in.Security.ReadOnlyRootFilesystem},
		Process: &specs.Process{
			Args: in.Args,
			Env:  in.Env,
			Cwd:  in.Cwd,
			User: specs.User{UID: in.User.UID, GID: in.User.GID, AdditionalGids: in.User.AdditionalGids},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{nofile(in.NofileHard)},
			NoNewPrivileges: true,
		},
		Mounts: defaultMounts(),
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.NetworkNamespace, Path: in.NetnsPath},
			},
			Resources: &specs.LinuxResources{
				// Deny all devices; runc adds back the standard set
				// (null, zero, full, random, urandom, tty, ptmx).
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Seccomp:       defaultSeccomp(),
		},
	}
	if m := in.Limits.MemoryBytes; m > 0 {
		// Swap equal to the limit means no swap: a container at its limit
		// is OOM-killed instead of thrashing the host.
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &m, Swap: &m}
	}
	if c := in.Limits.MilliCPU; c > 0 {
		// The quota itself is written once the container runs (StartContainer), so runc's own
		// set-up inside the cgroup is not throttled by it.
		p, sh := uint64(cfsPeriod), cpuShares(c)
		s.Linux.Resources.CPU = &specs.LinuxCPU{Period: &p, Shares: &sh}
	}
	for _, dst := range slices.Sorted(mapKeys(in.EtcFiles)) {
		s.Mounts = append(s.Mounts, specs.Mount{
			Destination: dst, Type: "bind", Source: in.EtcFiles[dst],
			Options: []string{"rbind", "rprivate", "nosuid", "nodev", "noexec"},
		})
	}
	for _, m := range in.Mounts {
		if !strings.HasPrefix(m.ContainerPath, "/") || m.HostPath == "" {
			return nil, fmt.Errorf("mount %q -> %q: %w", m.HostPath, m.ContainerPath, runtime.ErrInvalidArgument)
		}
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.ContainerPath, Type: "bind", Source: m.HostPath, Options: opts})
	}
	return s, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}
