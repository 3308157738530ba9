package oci

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// cgroupParent is the cgroup every sandbox lives under, in each hierarchy.
const cgroupParent = "vessel"

// cgroups knows where the host's cgroup hierarchies are mounted.
type cgroups struct {
	// unified is true on a pure cgroup v2 host.
	unified bool
	// controllers maps a v1 controller (memory, cpu, …) to its mount point;
	// on a v2 host the single entry "" is the unified mount.
	controllers map[string]string
	// mounts are all cgroup mount points, where sandbox dirs must be removed.
	mounts []string
	// v2Mounted is true when any cgroup2 hierarchy is mounted.
	v2Mounted bool
}

func detectCgroups() (*cgroups, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer f.Close()
	cg := &cgroups{controllers: map[string]string{}}
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		mp := pf[4]
		switch qf[0] {
		case "cgroup2":
			cg.mounts = append(cg.mounts, mp)
			cg.v2Mounted = true
			if mp == "/sys/fs/cgroup" {
				cg.unified = true
				cg.controllers[""] = mp
			}
		case "cgroup":
			cg.mounts = append(cg.mounts, mp)
			for _, opt := range strings.Split(qf[2], ",") {
				switch opt {
				case "memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer", "blkio":
					cg.controllers[opt] = mp
				}
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	if len(cg.mounts) == 0 {
		return nil, errors.New("detect cgroups: no cgroup filesystem mounted")
	}
	return cg, nil
}

// hybrid is a v1 host that also mounts an (empty) v2 hierarchy; crun
// refuses to run there.
func (c *cgroups) hybrid() bool { return !c.unified && c.v2Mounted }

func sandboxCgroup(sandboxID string) string { return "/" + cgroupParent + "/" + sandboxID }

func containerCgroup(sandboxID string, id runtime.ContainerID) string {
	return sandboxCgroup(sandboxID) + "/" + string(id)
}

func writeCgroupFile(dir, name, value string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s/%s=%s: %w", dir, name, value, err)
	}
	return nil
}

// setSandboxLimits creates the sandbox cgroup and applies the sandbox size,
// the ceiling for all its containers together.
func (c *cgroups) setSandboxLimits(sandboxID string, r runtime.Resources) error {
	rel := sandboxCgroup(sandboxID)
	if c.unified {
		root := c.controllers[""]
		for _, dir := range []string{root, filepath.Join(root, cgroupParent)} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("sandbox %s cgroup: %w", sandboxID, err)
			}
			if err := writeCgroupFile(dir, "cgroup.subtree_control", "+cpu +memory +pids"); err != nil {
				return fmt.Errorf("sandbox %s cgroup: %w", sandboxID, err)
			}
		}
		dir := filepath.Join(root, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("sandbox %s cgroup: %w", sandboxID, err)
		}
		mem := "max"
		if r.MemoryBytes > 0 {
			mem = strconv.FormatInt(r.MemoryBytes, 10)
		}
		for _, kv := range [][2]string{{"memory.max", mem}, {"memory.swap.max", "0"}} {
			if err := writeCgroupFile(dir, kv[0], kv[1]); err != nil {
				return fmt.Errorf("sandbox %s cgroup: %w", sandboxID, err)
			}
		}
		if err := c.setCPUQuota(rel, sandboxQuota(r)); err != nil {
			return fmt.Errorf("sandbox %s cgroup: %w", sandboxID, err)
		}
		return nil
	}
	if mp, ok := c.controllers["memory"]; ok {
		dir := filepath.Join(mp, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("sandbox %s memory cgroup: %w", sandboxID, err)
		}
		limit := "-1"
		if r.MemoryBytes > 0 {
			limit = strconv.FormatInt(r.MemoryBytes, 10)
		}
		// memsw must stay >= limit at every step, so the order of the two
		// writes depends on whether the limit grows or shrinks; trying one
		// order and then the other covers both.
		files := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
		if _, err := os.Stat(filepath.Join(dir, files[1])); err != nil {
			files = files[:1] // no swap accounting on this kernel
		}
		var firstErr error
		for range 2 {
			firstErr = nil
			for _, f := range files {
				if err := writeCgroupFile(dir, f, limit); err != nil && firstErr == nil {
					firstErr = err
				}
			}
			if firstErr == nil {
				break
			}
			files = []string{files[len(files)-1], files[0]}
		}
		if firstErr != nil {
			return fmt.Errorf("sandbox %s memory limit: %w", sandboxID, firstErr)
		}
	}
	if mp, ok := c.controllers["cpu"]; ok {
		dir := filepath.Join(mp, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("sandbox %s cpu cgroup: %w", sandboxID, err)
		}
		if err := writeCgroupFile(dir, "cpu.cfs_period_us", strconv.Itoa(cfsPeriod)); err != nil {
			return fmt.Errorf("sandbox %s cpu limit: %w", sandboxID, err)
		}
		if err := c.setCPUQuota(rel, sandboxQuota(r)); err != nil {
			return fmt.Errorf("sandbox %s cpu limit: %w", sandboxID, err)
		}
	}
	return nil
}

// cpuQuotaFile is where the CFS quota of a cgroup lives, and what "no quota" is written as.
func (c *cgroups) cpuQuotaFile(rel string) (path, unlimited string, ok bool) {
	if c.unified {
		return filepath.Join(c.controllers[""], rel, "cpu.max"), "max " + strconv.Itoa(cfsPeriod), true
	}
	mp, ok := c.controllers["cpu"]
	return filepath.Join(mp, rel, "cpu.cfs_quota_us"), "-1", ok
}

// sandboxQuota is the CFS quota of a sandbox of size r; 0 for none.
func sandboxQuota(r runtime.Resources) int64 {
	if r.MilliCPU <= 0 {
		return 0
	}
	return cpuQuota(r.MilliCPU)
}

// setCPUQuota sets the CFS quota (µs per cfsPeriod) of the cgroup at rel; 0 removes it.
func (c *cgroups) setCPUQuota(rel string, quota int64) error {
	path, v, ok := c.cpuQuotaFile(rel)
	if !ok {
		return nil
	}
	if quota > 0 {
		v = strconv.FormatInt(quota, 10)
		if c.unified {
			v += " " + strconv.Itoa(cfsPeriod)
		}
	}
	return writeCgroupFile(filepath.Dir(path), filepath.Base(path), v)
}

// liftCPUQuota removes the CPU quota of the cgroup at rel until the returned function puts
// the old one back. Container start runs runc's init inside the sandbox's cgroup, and a
// quarter-CPU quota throttled that set-up work (two Go runtimes, mounts, the seccomp filter)
// from ~80 ms to 160–250 ms; the workload itself only runs under the quota. Should the process
// die in between, CreateSandbox writes the limits again when the sandbox is adopted.
func (c *cgroups) liftCPUQuota(rel string) (restore func() error) {
	path, unlimited, ok := c.cpuQuotaFile(rel)
	if !ok {
		return func() error { return nil }
	}
	old, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(old)) == unlimited {
		return func() error { return nil }
	}
	if err := os.WriteFile(path, []byte(unlimited), 0o644); err != nil {
		return func() error { return nil }
	}
	return func() error {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			return fmt.Errorf("restore cpu quota of %s: %w", rel, err)
		}
		return nil
	}
}

// removeSandbox deletes the sandbox's cgroup directories in every
// hierarchy, deepest first. Fails with EBUSY while processes remain.
func (c *cgroups) removeSandbox(sandboxID string) error {
	for _, mp := range c.mounts {
		root := filepath.Join(mp, sandboxCgroup(sandboxID))
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove cgroup of sandbox %s: %w", sandboxID, err)
			}
		}
	}
	return nil
}

// memoryDir is the memory cgroup directory of a cgroups path.
func (c *cgroups) memoryDir(cgroupPath string) string {
	if c.unified {
		return filepath.Join(c.controllers[""], cgroupPath)
	}
	return filepath.Join(c.controllers["memory"], cgroupPath)
}

// readOOMKills returns how many processes the kernel OOM-killed in the
// memory cgroup dir (v1 memory.oom_control, v2 memory.events).
func readOOMKills(dir string, unified bool) (int, error) {
	name := "memory.oom_control"
	if unified {
		name = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, nil
}
