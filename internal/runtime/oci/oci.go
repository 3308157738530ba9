// Package oci implements runtime.Runtime without virtualization: each
// container is an OCI container run by runc (or crun where it works) inside
// the sandbox's network namespace and cgroup. A per-container shim process
// (see ShimMain) keeps logs and exit status while no agent runs.
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime"
)

// Network is the part of network.Manager the runtime uses.
type Network interface {
	// Attach returns the path of the sandbox's network namespace; it is
	// idempotent.
	Attach(ctx context.Context, sn network.SandboxNet) (string, error)
	// Detach is idempotent.
	Detach(ctx context.Context, id string) error
}

// Config configures the runtime.
type Config struct {
	// Root holds all state (see paths.go); it must survive agent restarts
	// for adoption, e.g. /run/vessel/oci.
	Root    string
	Network Network
	// Runtime is the OCI runtime binary; empty picks crun when it can work
	// on this host and runc otherwise.
	Runtime string
	// ShimArgv starts a shim: ShimMain's arguments are appended. Default:
	// DefaultShimArgv of the current executable.
	ShimArgv []string
	Logger   *slog.Logger
}

// ShimBinary is the name of the shim's own executable (cmd/vessel-shim),
// installed next to vessel.
const ShimBinary = "vessel-shim"

// DefaultShimArgv is how the executable exe starts a shim: the vessel-shim
// binary next to it when there is one, else exe's own `shim` subcommand.
// The separate binary matters for start latency: one shim starts per
// container, and vessel initialises the Kubernetes packages it links for
// ~200 ms before main runs, vessel-shim for a few ms.
func DefaultShimArgv(exe string) []string {
	sibling := filepath.Join(filepath.Dir(exe), ShimBinary)
	if st, err := os.Stat(sibling); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return []string{sibling}
	}
	return []string{exe, "shim"}
}

// Runtime is the oci implementation of runtime.Runtime.
type Runtime struct {
	root     string
	net      Network
	runc     string
	shimArgv []string
	cg       *cgroups
	log      *slog.Logger
	// nofileMax is the highest nofile hard limit runc can set here.
	nofileMax uint64
	// locks serializes operations per sandbox; containers of different
	// sandboxes proceed in parallel.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns a Runtime over cfg.Root, adopting whatever is there.
func New(cfg Config) (*Runtime, error) {
	if !filepath.IsAbs(cfg.Root) || cfg.Network == nil {
		return nil, fmt.Errorf("oci runtime: need an absolute root and a network: %w", runtime.ErrInvalidArgument)
	}
	cg, err := detectCgroups()
	if err != nil {
		return nil, fmt.Errorf("oci runtime: %w", err)
	}
	bin := cfg.Runtime
	if bin == "" {
		bin, err = pickRuntime(cg)
		if err != nil {
			return nil, fmt.Errorf("oci runtime: %w", err)
		}
	}
	argv := cfg.ShimArgv
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("oci runtime: shim executable: %w", err)
		}
		argv = DefaultShimArgv(exe)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(sandboxesDir(cfg.Root), 0o711); err != nil {
		return nil, fmt.Errorf("oci runtime: %w", err)
	}
	nofileMax := nofileCeiling()
	if nofileMax < nofileHard {
		log.Warn("cannot raise nofile hard limit without CAP_SYS_RESOURCE; containers get a lower one", "limit", nofileMax)
	}
	return &Runtime{
		root: cfg.Root, net: cfg.Network, runc: bin, shimArgv: argv, cg: cg, log: log,
		nofileMax: nofileMax, locks: map[string]*sync.Mutex{},
	}, nil
}

// nofileCeiling is how high runc (running with our credentials) can set
// RLIMIT_NOFILE: anything up to fs.nr_open with CAP_SYS_RESOURCE, otherwise
// no more than our own hard limit. Some hosts run the agent without that
// capability (containers-in-containers, restricted CI).
func nofileCeiling() uint64 {
	const capSysResource = 24
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err == nil && data[0].Effective&(1<<capSysResource) != 0 {
		return nofileHard
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nofileHard
	}
	return rl.Max
}

// pickRuntime prefers crun (faster start) but crun 1.x refuses hybrid
// cgroup hosts, so it is used only where the host is not hybrid.
func pickRuntime(cg *cgroups) (string, error) {
	if p, err := exec.LookPath("crun"); err == nil && !cg.hybrid() {
		return p, nil
	}
	p, err := exec.LookPath("runc")
	if err != nil {
		return "", fmt.Errorf("neither a usable crun nor runc found: %w", err)
	}
	return p, nil
}

// RuntimeBinary is the OCI runtime in use.
func (r *Runtime) RuntimeBinary() string { return r.runc }

func (r *Runtime) lock(sandboxID string) func() {
	r.mu.Lock()
	l, ok := r.locks[sandboxID]
	if !ok {
		l = &sync.Mutex{}
		r.locks[sandboxID] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// sandboxRecord is sandbox.json.
type sandboxRecord struct {
	Spec      runtime.SandboxSpec `json:"spec"`
	NetnsPath string              `json:"netnsPath"`
	CreatedAt time.Time           `json:"createdAt"`
}

func (r *Runtime) CreateSandbox(ctx context.Context, spec runtime.SandboxSpec) error {
	if err := validateSandboxID(spec.ID); err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	if spec.Network.ID != spec.ID {
		return fmt.Errorf("create sandbox %s: network ID %q differs: %w", spec.ID, spec.Network.ID, runtime.ErrInvalidArgument)
	}
	defer r.lock(spec.ID)()
	log := r.log.With("sandbox", spec.ID)
	rec := sandboxRecord{Spec: spec, CreatedAt: time.Now().UTC()}
	if old, err := r.readSandbox(spec.ID); err == nil {
		rec.CreatedAt = old.CreatedAt
	}
	if err := os.MkdirAll(etcDir(r.root, spec.ID), 0o755); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	if err := os.MkdirAll(containersDir(r.root, spec.ID), 0o711); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	nsPath, err := r.net.Attach(ctx, spec.Network)
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	rec.NetnsPath = nsPath
	if err := r.cg.setSandboxLimits(spec.ID, spec.Resources); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	etc := etcDir(r.root, spec.ID)
	for name, content := range map[string]string{
		"hosts": hostsFile(spec), "resolv.conf": resolvConf(spec.DNS), "hostname": spec.Hostname + "\n",
	} {
		if err := writeFileAtomic(filepath.Join(etc, name), []byte(content)); err != nil {
			return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	if err := writeFileAtomic(sandboxFile(r.root, spec.ID), b); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	log.InfoContext(ctx, "sandbox ready", "netns", nsPath)
	return nil
}

func hostsFile(spec runtime.SandboxSpec) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if spec.Network.IP.IsValid() && spec.Hostname != "" {
		fmt.Fprintf(&b, "%s\t%s\n", spec.Network.IP, spec.Hostname)
	}
	for _, a := range spec.HostAliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, " "))
	}
	return b.String()
}

func resolvConf(dns runtime.DNSConfig) string {
	var b strings.Builder
	for _, ns := range dns.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return b.String()
}

func (r *Runtime) readSandbox(id string) (sandboxRecord, error) {
	var rec sandboxRecord
	b, err := os.ReadFile(sandboxFile(r.root, id))
	if errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("sandbox %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return rec, fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("sandbox %s: corrupt sandbox.json: %w", id, err)
	}
	return rec, nil
}

func (r *Runtime) RemoveSandbox(ctx context.Context, sandboxID string) error {
	if err := validateSandboxID(sandboxID); err != nil {
		return fmt.Errorf("remove sandbox: %w", err)
	}
	defer r.lock(sandboxID)()
	entries, err := os.ReadDir(containersDir(r.root, sandboxID))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
	}
	for _, e := range entries {
		if err := r.removeContainer(ctx, runtime.ContainerID(e.Name())); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
		}
	}
	if err := r.net.Detach(ctx, sandboxID); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
	}
	if err := r.cg.removeSandbox(sandboxID); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
	}
	if err := os.RemoveAll(sandboxDir(r.root, sandboxID)); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
	}
	r.log.InfoContext(ctx, "sandbox removed", "sandbox", sandboxID)
	return nil
}

func (r *Runtime) ListSandboxes(ctx context.Context) ([]runtime.SandboxInfo, error) {
	entries, err := os.ReadDir(sandboxesDir(r.root))
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []runtime.SandboxInfo
	for _, e := range entries {
		info := runtime.SandboxInfo{ID: e.Name()}
		if rec, err := r.readSandbox(e.Name()); err == nil {
			info.Labels, info.CreatedAt, info.NetnsPath = rec.Spec.Labels, rec.CreatedAt, rec.NetnsPath
		}
		out = append(out, info)
	}
	return out, nil
}

// containerMeta is meta.json: what the instance was started with.
type containerMeta struct {
	ID        runtime.ContainerID `json:"id"`
	SandboxID string              `json:"sandboxID"`
	Name      string              `json:"name"`
	Attempt   uint32              `json:"attempt"`
	CreatedAt time.Time           `json:"createdAt"`
	LogPath   string              `json:"logPath"`
	// OwnLog is true when LogPath is the default file in the state dir.
	OwnLog bool `json:"ownLog"`
}

func (r *Runtime) StartContainer(ctx context.Context, sandboxID string, spec runtime.ContainerSpec) (runtime.ContainerID, error) {
	if err := validateSandboxID(sandboxID); err != nil {
		return "", fmt.Errorf("start container: %w", err)
	}
	if !containerNamePattern.MatchString(spec.Name) {
		return "", fmt.Errorf("start container %q in sandbox %s: bad name: %w", spec.Name, sandboxID, runtime.ErrInvalidArgument)
	}
	id := containerID(sandboxID, spec.Name, spec.Attempt)
	defer r.lock(sandboxID)()
	log := r.log.With("sandbox", sandboxID, "container", string(id))
	sb, err := r.readSandbox(sandboxID)
	if err != nil {
		return "", fmt.Errorf("start container %s: %w", id, err)
	}
	dir, _ := containerDir(r.root, id)
	p := containerPaths(dir)
	if fileExists(p.started) || fileExists(p.exit) {
		return id, nil // already started (or already ran): same instance
	}
	if fileExists(p.dir) {
		// An earlier attempt died before the shim reported: start over.
		if err := r.removeContainer(ctx, id); err != nil {
			return "", fmt.Errorf("start container %s: clean partial state: %w", id, err)
		}
	}
	begin := time.Now()
	if err := r.prepareContainer(ctx, sb, id, p, spec); err != nil {
		r.removeContainer(context.WithoutCancel(ctx), id)
		return "", fmt.Errorf("start container %s: %w", id, err)
	}
	// CPU quotas apply to the workload, not to runc setting it up: see liftCPUQuota.
	restore := r.cg.liftCPUQuota(sandboxCgroup(sandboxID))
	pid, err := r.startShim(ctx, sandboxID, id, p)
	if err == nil && spec.Limits.MilliCPU > 0 {
		err = r.cg.setCPUQuota(containerCgroup(sandboxID, id), cpuQuota(spec.Limits.MilliCPU))
	}
	if rerr := restore(); err == nil {
		err = rerr
	}
	if err != nil {
		// The exit record keeps the StartError for ContainerStatus.
		return "", fmt.Errorf("start container %s: %w", id, err)
	}
	log.InfoContext(ctx, "container started", "pid", pid, "duration", time.Since(begin))
	return id, nil
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (r *Runtime) prepareContainer(ctx context.Context, sb sandboxRecord, id runtime.ContainerID, p paths, spec runtime.ContainerSpec) error {
	if spec.Image.RootfsDir == "" {
		return fmt.Errorf("no image rootfs: %w", runtime.ErrInvalidArgument)
	}
	for _, d := range []string{p.bundle, p.rootfs, p.upper, p.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	imageRoot, err := os.OpenRoot(spec.Image.RootfsDir)
	if err != nil {
		return fmt.Errorf("open image rootfs: %w", err)
	}
	u, err := resolveUser(imageRoot.FS(), spec.Image.Config.User, spec.SecurityContext)
	imageRoot.Close()
	if err != nil {
		return err
	}
	env := mergeEnv(spec.Image.Config.Env, spec.Env)
	args := processArgs(spec.Image.Config, spec.Command, spec.Args, env)
	if len(args) == 0 {
		return fmt.Errorf("no command: image has no entrypoint/cmd and none given: %w", runtime.ErrInvalidArgument)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", spec.Image.RootfsDir, p.upper, p.work)
	if err := unix.Mount("overlay", p.rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay rootfs: %w", err)
	}
	etc := etcDir(r.root, sb.Spec.ID)
	s, err := buildSpec(specInput{
		Hostname:    sb.Spec.Hostname,
		RootfsPath:  p.rootfs,
		NetnsPath:   sb.NetnsPath,
		CgroupsPath: containerCgroup(sb.Spec.ID, id),
		Args:        args,
		Env:         env,
		Cwd:         workingDir(spec.WorkingDir, spec.Image.Config.WorkingDir),
		User:        u,
		Limits:      spec.Limits,
		EtcFiles: map[string]string{
			"/etc/hosts": filepath.Join(etc, "hosts"), "/etc/resolv.conf": filepath.Join(etc, "resolv.conf"),
			"/etc/hostname": filepath.Join(etc, "hostname"),
		},
		Mounts:     spec.Mounts,
		Security:   spec.SecurityContext,
		NofileHard: r.nofileMax,
	})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.config, b, 0o600); err != nil {
		return err
	}
	if spec.Stdin {
		if err := unix.Mkfifo(p.stdin, 0o600); err != nil {
			return fmt.Errorf("stdin fifo: %w", err)
		}
	}
	meta := containerMeta{ID: id, SandboxID: sb.Spec.ID, Name: spec.Name, Attempt: spec.Attempt, CreatedAt: time.Now().UTC(), LogPath: spec.LogPath}
	if meta.LogPath == "" {
		meta.LogPath, meta.OwnLog = p.log, true
	} else if err := os.MkdirAll(filepath.Dir(meta.LogPath), 0o755); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	return writeFileAtomic(p.meta, mb)
}

// startShim launches the detached shim and waits for it to report the
// container running.
func (r *Runtime) startShim(ctx context.Context, sandboxID string, id runtime.ContainerID, p paths) (int, error) {
	meta, err := readMeta(p)
	if err != nil {
		return 0, err
	}
	args := shimArgs{
		runc: r.runc, runcRoot: filepath.Join(r.root, "runc"), id: string(id), dir: p.dir, logPath: meta.LogPath,
		memoryCgroup: r.cg.memoryDir(containerCgroup(sandboxID, id)), unified: r.cg.unified,
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer syncR.Close()
	shimLog, err := os.OpenFile(filepath.Join(p.dir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		syncW.Close()
		return 0, err
	}
	defer shimLog.Close()
	cmd := exec.Command(r.shimArgv[0], append(slices.Clone(r.shimArgv[1:]), args.argv()...)...)
	cmd.Stdout, cmd.Stderr = shimLog, shimLog
	cmd.ExtraFiles = []*os.File{syncW}
	cmd.Dir = p.dir
	// Own session: signals to the agent's process group (Ctrl-C, systemd
	// stop) must not reach the shim, which outlives the agent by design.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		syncW.Close()
		return 0, fmt.Errorf("start shim: %w", err)
	}
	syncW.Close()
	// Reap the shim if it exits while this agent still runs; after an agent
	// restart init reaps it instead.
	go cmd.Wait()
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		var buf bytes.Buffer
		_, err := buf.ReadFrom(syncR)
		ch <- answer{strings.TrimSpace(buf.String()), err}
	}()
	select {
	case <-ctx.Done():
		// The shim keeps going; a later StartContainer or status call finds
		// the outcome on disk.
		return 0, ctx.Err()
	case a := <-ch:
		if msg, ok := strings.CutPrefix(a.line, "ok "); ok {
			return strconv.Atoi(msg)
		}
		if msg, ok := strings.CutPrefix(a.line, "error "); ok {
			return 0, errors.New(msg)
		}
		return 0, fmt.Errorf("shim gave no answer (%q, %v); see %s/shim.log", a.line, a.err, p.dir)
	}
}

func readMeta(p paths) (containerMeta, error) {
	var m containerMeta
	b, err := os.ReadFile(p.meta)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

func readExit(p paths) (exitRecord, bool) {
	var rec exitRecord
	b, err := os.ReadFile(p.exit)
	if err != nil || json.Unmarshal(b, &rec) != nil {
		return rec, false
	}
	return rec, true
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func alive(pid int) bool {
	return pid > 0 && unix.Kill(pid, 0) == nil
}

func (r *Runtime) ContainerStatus(ctx context.Context, id runtime.ContainerID) (runtime.ContainerStatus, error) {
	dir, err := containerDir(r.root, id)
	if err != nil {
		return runtime.ContainerStatus{}, fmt.Errorf("container status: %w", err)
	}
	p := containerPaths(dir)
	meta, err := readMeta(p)
	if errors.Is(err, os.ErrNotExist) {
		return runtime.ContainerStatus{}, fmt.Errorf("container %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return runtime.ContainerStatus{}, fmt.Errorf("container %s: meta: %w", id, err)
	}
	st := runtime.ContainerStatus{
		ID: id, SandboxID: meta.SandboxID, Name: meta.Name, Attempt: meta.Attempt,
		CreatedAt: meta.CreatedAt, LogPath: meta.LogPath, State: runtime.ContainerCreated,
		Pid: readPid(p.pid),
	}
	if b, err := os.ReadFile(p.started); err == nil {
		st.StartedAt, _ = time.Parse(time.RFC3339Nano, string(b))
	}
	if rec, ok := readExit(p); ok {
		st.State, st.ExitCode, st.OOMKilled, st.FinishedAt = runtime.ContainerExited, rec.ExitCode, rec.OOMKilled, rec.FinishedAt
		switch {
		case rec.StartError != "":
			st.Reason, st.Message = "StartError", rec.StartError
		case rec.OOMKilled:
			st.Reason = "OOMKilled"
		case rec.ExitCode == 0:
			st.Reason = "Completed"
		default:
			st.Reason = "Error"
		}
		return st, nil
	}
	switch {
	case !st.StartedAt.IsZero() && alive(st.Pid):
		st.State = runtime.ContainerRunning
	case !alive(readPid(p.shimPid)) && !st.StartedAt.IsZero():
		// Process and shim gone without an exit record (host crash, shim
		// killed): nobody will ever report the exit.
		st.State, st.Reason, st.Message = runtime.ContainerUnknown, "Unknown", "container exited without an exit record"
	}
	return st, nil
}

func (r *Runtime) ListContainers(ctx context.Context, sandboxID string) ([]runtime.ContainerStatus, error) {
	if err := validateSandboxID(sandboxID); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	entries, err := os.ReadDir(containersDir(r.root, sandboxID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list containers of sandbox %s: %w", sandboxID, runtime.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("list containers of sandbox %s: %w", sandboxID, err)
	}
	var out []runtime.ContainerStatus
	for _, e := range entries {
		st, err := r.ContainerStatus(ctx, runtime.ContainerID(e.Name()))
		if err != nil {
			continue // half-created: not a container yet
		}
		out = append(out, st)
	}
	return out, nil
}

// runcCmd runs the OCI runtime against this Runtime's state root.
func (r *Runtime) runcCmd(ctx context.Context, args ...string) error {
	full := append([]string{"--root", filepath.Join(r.root, "runc")}, args...)
	out, err := exec.CommandContext(ctx, r.runc, full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(r.runc), args[0], err, bytes.TrimSpace(out))
	}
	return nil
}

// pollInterval bounds how late StopContainer notices an exit; the exit
// record is a file, so there is nothing to block on.
const pollInterval = 20 * time.Millisecond

// waitExited polls until the container has an exit record (or its process
// and shim are both gone), up to timeout. It reports whether it exited.
func (r *Runtime) waitExited(ctx context.Context, id runtime.ContainerID, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.ContainerStatus(ctx, id)
		if err != nil {
			return false, err
		}
		if st.State == runtime.ContainerExited || st.State == runtime.ContainerUnknown || st.StartedAt.IsZero() && !alive(st.Pid) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// killWait is how long StopContainer waits after SIGKILL; only a process
// stuck in the kernel (D state) takes longer.
const killWait = 30 * time.Second

func (r *Runtime) StopContainer(ctx context.Context, id runtime.ContainerID, grace time.Duration) error {
	st, err := r.ContainerStatus(ctx, id)
	if err != nil {
		return fmt.Errorf("stop container: %w", err)
	}
	if st.State == runtime.ContainerExited || st.State == runtime.ContainerUnknown {
		return nil
	}
	log := r.log.With("sandbox", st.SandboxID, "container", string(id))
	if grace > 0 {
		if err := r.runcCmd(ctx, "kill", string(id), "TERM"); err != nil {
			log.DebugContext(ctx, "SIGTERM not delivered", "err", err)
		}
		done, err := r.waitExited(ctx, id, grace)
		if err != nil {
			return fmt.Errorf("stop container %s: %w", id, err)
		}
		if done {
			return nil
		}
		log.InfoContext(ctx, "grace period over, killing", "grace", grace)
	}
	if err := r.runcCmd(ctx, "kill", string(id), "KILL"); err != nil {
		log.DebugContext(ctx, "SIGKILL not delivered", "err", err)
	}
	done, err := r.waitExited(ctx, id, killWait)
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if !done {
		return fmt.Errorf("stop container %s: still running %s after SIGKILL: %w", id, killWait, runtime.ErrFailedPrecondition)
	}
	return nil
}

func (r *Runtime) RemoveContainer(ctx context.Context, id runtime.ContainerID) error {
	sid, _, _, err := parseContainerID(id)
	if err != nil {
		return fmt.Errorf("remove container: %w", err)
	}
	defer r.lock(sid)()
	return r.removeContainer(ctx, id)
}

// removeContainer expects the sandbox lock held.
func (r *Runtime) removeContainer(ctx context.Context, id runtime.ContainerID) error {
	dir, err := containerDir(r.root, id)
	if err != nil {
		return fmt.Errorf("remove container: %w", err)
	}
	p := containerPaths(dir)
	if !fileExists(dir) {
		return nil
	}
	if err := r.StopContainer(ctx, id, 0); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	// delete --force also copes with a container left in "created" state
	// by an interrupted start.
	if err := r.runcCmd(ctx, "delete", "--force", string(id)); err != nil && !strings.Contains(err.Error(), "does not exist") {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if err := unix.Unmount(p.rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove container %s: unmount rootfs: %w", id, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	r.log.InfoContext(ctx, "container removed", "container", string(id))
	return nil
}

func (r *Runtime) Exec(ctx context.Context, id runtime.ContainerID, argv []string, stdio runtime.Stdio, tty bool) (int, error) {
	if len(argv) == 0 {
		return -1, fmt.Errorf("exec in %s: empty command: %w", id, runtime.ErrInvalidArgument)
	}
	dir, err := containerDir(r.root, id)
	if err != nil {
		return -1, fmt.Errorf("exec: %w", err)
	}
	p := containerPaths(dir)
	b, err := os.ReadFile(p.config)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, runtime.ErrNotFound)
	}
	// The exec'd process gets the container's own process settings (user,
	// env, cwd, caps, rlimits, no-new-privs) with only the command changed.
	var spec struct {
		Process json.RawMessage `json:"process"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	var proc map[string]any
	if err := json.Unmarshal(spec.Process, &proc); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	proc["args"] = argv
	proc["terminal"] = tty
	var initial runtime.TerminalSize
	if tty {
		// TERM as kubelet runtimes set it; the image or container may override.
		env, _ := proc["env"].([]any)
		hasTerm := false
		for _, e := range env {
			if s, ok := e.(string); ok && strings.HasPrefix(s, "TERM=") {
				hasTerm = true
			}
		}
		if !hasTerm {
			proc["env"] = append(env, "TERM=xterm")
		}
		// A size already waiting is set before the process starts, so its
		// first look at the terminal sees it.
		select {
		case size, ok := <-stdio.Resize:
			if ok {
				initial = size
				proc["consoleSize"] = map[string]uint16{"height": size.Height, "width": size.Width}
			}
		default:
		}
	}
	pb, _ := json.Marshal(proc)
	f, err := os.CreateTemp(dir, "exec-*.json")
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(pb); err != nil {
		f.Close()
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	f.Close()
	if tty {
		return r.execTTY(ctx, id, f.Name(), stdio, initial)
	}
	cmd := exec.CommandContext(ctx, r.runc, "--root", filepath.Join(r.root, "runc"), "exec", "--process", f.Name(), string(id))
	// runc exec forwards signals to the process, so SIGTERM ends both,
	// where killing runc alone would leave the process running.
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	return 0, nil
}

func (r *Runtime) OpenStdin(ctx context.Context, id runtime.ContainerID) (io.WriteCloser, error) {
	st, err := r.ContainerStatus(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("open stdin of %s: %w", id, err)
	}
	if st.State != runtime.ContainerRunning {
		return nil, fmt.Errorf("open stdin of %s: container is %s: %w", id, st.State, runtime.ErrFailedPrecondition)
	}
	dir, _ := containerDir(r.root, id)
	p := containerPaths(dir)
	if !fileExists(p.stdin) {
		return nil, fmt.Errorf("open stdin of %s: container has no stdin: %w", id, runtime.ErrFailedPrecondition)
	}
	// Non-blocking: the shim holds the fifo open for reading, so this
	// succeeds at once while it runs and fails with ENXIO once it is gone.
	f, err := os.OpenFile(p.stdin, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENXIO) {
		return nil, fmt.Errorf("open stdin of %s: shim gone: %w", id, runtime.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, fmt.Errorf("open stdin of %s: %w", id, err)
	}
	return f, nil
}
