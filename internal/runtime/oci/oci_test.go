package oci

import (
	"bytes"
	"context"
	"errors"

	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime"
)

func TestMain(m *testing.M) {
	// The runtime starts shims by re-executing this test binary.
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		os.Exit(ShimMain(os.Args[2:]))
	}
	// An agent that starts one container and exits: the adoption test's
	// stand-in for a host agent process that dies.
	if len(os.Args) == 5 && os.Args[1] == "start-helper" {
		os.Exit(startHelper(os.Args[2], os.Args[3], os.Args[4]))
	}
	os.Exit(m.Run())
}

func startHelper(root, sandbox, rootfs string) int {
	nm, err := network.New(network.Config{NetnsDir: "/nonexistent"}) // unused by StartContainer
	if err != nil {
		return 1
	}
	rt, err := New(Config{Root: root, Network: nm, ShimArgv: []string{os.Args[0], "shim"}})
	if err != nil {
		return 1
	}
	_, err = rt.StartContainer(context.Background(), sandbox, runtime.ContainerSpec{
		Name: "orphan", Image: runtime.Image{RootfsDir: rootfs, Config: runtime.ImageConfig{Env: []string{"PATH=/bin"}}},
		Command: []string{"/bin/sh", "-c", "echo ready; while true; do sleep 0.05; done"},
	})
	if err != nil {
		os.Stderr.WriteString(err.Error())
		return 1
	}
	return 0
}

// fixture is a runtime over a fresh root with one subnet, torn down with
// everything it started when the test ends.
type fixture struct {
	root   string
	net    *network.Manager
	rt     *Runtime
	subnet network.SubnetConfig
	rootfs string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: run the suite as root (see README)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("needs runc: apt-get install runc (.ci/run does)")
	}
	base := t.TempDir()
	f := &fixture{root: filepath.Join(base, "oci"), rootfs: busyboxRootfs(t, filepath.Join(base, "image"))}
	nm, err := network.New(network.Config{NetnsDir: filepath.Join(base, "netns")})
	if err != nil {
		t.Fatal(err)
	}
	f.net = nm
	f.subnet = network.SubnetConfig{Name: "vessel-test-oci", CIDR: netip.MustParsePrefix("10.231.9.0/24"), Gateway: netip.MustParseAddr("10.231.9.1")}
	if err := nm.EnsureSubnet(context.Background(), f.subnet); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		rt, err := New(Config{Root: f.root, Network: nm})
		if err == nil {
			sbs, _ := rt.ListSandboxes(ctx)
			for _, sb := range sbs {
				if err := rt.RemoveSandbox(ctx, sb.ID); err != nil {
					t.Errorf("cleanup sandbox %s: %v", sb.ID, err)
				}
			}
		}
		nm.RemoveSubnet(ctx, f.subnet.Name)
		unix.Unmount(filepath.Join(base, "netns"), unix.MNT_DETACH)
	})
	f.rt = f.newRuntime(t)
	return f
}

func (f *fixture) newRuntime(t *testing.T) *Runtime {
	t.Helper()
	rt, err := New(Config{Root: f.root, Network: f.net, ShimArgv: []string{os.Args[0], "shim"}})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// busyboxRootfs builds a minimal image: static busybox plus applet links
// and a passwd with an unprivileged user.
func busyboxRootfs(t *testing.T, dir string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("needs busybox: apt-get install busybox-static (.ci/run does)")
	}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "echo", "cat", "sleep", "tail", "env", "id", "hostname", "ls", "true", "head", "wget", "nc", "stty", "tty", "ps"} {
		os.Symlink("busybox", filepath.Join(dir, "bin", applet))
	}
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\napp:x:1000:\n"), 0o644)
	return dir
}

var sandboxSeq byte = 10

func (f *fixture) createSandbox(t *testing.T, id string, res runtime.Resources) runtime.SandboxSpec {
	t.Helper()
	sandboxSeq++
	spec := runtime.SandboxSpec{
		ID: id, Hostname: id, Resources: res,
		Network: network.SandboxNet{ID: id, Subnet: f.subnet.Name, IP: netip.AddrFrom4([4]byte{10, 231, 9, sandboxSeq}), PrefixLen: 24, Gateway: f.subnet.Gateway},
		DNS:     runtime.DNSConfig{Nameservers: []netip.Addr{f.subnet.Gateway}, Searches: []string{"default.svc.cluster.local"}},
	}
	if err := f.rt.CreateSandbox(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

func (f *fixture) image(entrypoint ...string) runtime.Image {
	return runtime.Image{RootfsDir: f.rootfs, Config: runtime.ImageConfig{
		Entrypoint: entrypoint, Env: []string{"PATH=/bin", "FROM_IMAGE=1", "OVERRIDE=image"}, WorkingDir: "/tmp",
	}}
}

func (f *fixture) start(t *testing.T, sandbox string, spec runtime.ContainerSpec) runtime.ContainerID {
	t.Helper()
	begin := time.Now()
	id, err := f.rt.StartContainer(context.Background(), sandbox, spec)
	if err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	t.Logf("started %s in %v", id, time.Since(begin))
	return id
}

// waitExit waits for the container to exit; integration tests only, where
// real processes take real time.
func (f *fixture) waitExit(t *testing.T, id runtime.ContainerID) runtime.ContainerStatus {
	t.Helper()
	done, err := f.rt.waitExited(context.Background(), id, 60*time.Second)
	if err != nil || !done {
		t.Fatalf("container %s did not exit: %v", id, err)
	}
	st, err := f.rt.ContainerStatus(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, " ", 4)
		if len(parts) != 4 {
			t.Fatalf("bad CRI log line %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("bad timestamp in %q", line)
		}
		out = append(out, parts[1]+" "+parts[3])
	}
	return strings.Join(out, "\n")
}

func TestExitCodeEnvArgsAndLogs(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-exit", runtime.Resources{MilliCPU: 500, MemoryBytes: 256 << 20})
	id := f.start(t, "sb-exit", runtime.ContainerSpec{
		Name: "app", Image: f.image("/bin/sh", "-c"),
		Args:            []string{`echo "args:$0:$1"; env | sort | grep -E '^(FROM_IMAGE|OVERRIDE|NEW)='; echo err >&2; pwd; id -u; hostname; ulimit -n; ulimit -Hn; exit 7`, "x y", "$(NEW)"},
		Env:             []runtime.EnvVar{{Name: "OVERRIDE", Value: "container"}, {Name: "NEW", Value: "v"}},
		SecurityContext: runtime.SecurityContext{RunAsUser: ptr[int64](1000)},
	})
	st := f.waitExit(t, id)
	if st.ExitCode != 7 || st.Reason != "Error" || st.OOMKilled {
		t.Errorf("status = %+v, want exit 7", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	logs := readLog(t, st.LogPath)
	for _, want := range []string{"stdout args:x y:v", "stdout FROM_IMAGE=1", "stdout NEW=v", "stdout OVERRIDE=container", "stderr err", "stdout /tmp", "stdout 1000", "stdout sb-exit", "stdout 1024", "stdout " + strconv.FormatUint(min(f.rt.nofileMax, nofileHard), 10)} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// Idempotent start: same instance, nothing new runs.
	if again, err := f.rt.StartContainer(context.Background(), "sb-exit", runtime.ContainerSpec{Name: "app", Image: f.image("/bin/true")}); err != nil || again != id {
		t.Errorf("second start = %q, %v", again, err)
	}
}

func TestMemoryLimitAndOOMKill(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-oom", runtime.Resources{MilliCPU: 1000, MemoryBytes: 128 << 20})
	sbLimit, _ := os.ReadFile(filepath.Join(f.rt.cg.memoryDir(sandboxCgroup("sb-oom")), "memory.limit_in_bytes"))
	if strings.TrimSpace(string(sbLimit)) != strconv.Itoa(128<<20) {
		t.Errorf("sandbox memory limit = %q", sbLimit)
	}
	limit := int64(32 << 20)
	id := f.start(t, "sb-oom", runtime.ContainerSpec{
		Name: "hog", Image: f.image("/bin/sh", "-c"),
		Args:   []string{"cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 0.2; tail /dev/zero"},
		Limits: runtime.Resources{MemoryBytes: limit},
	})
	st := f.waitExit(t, id)
	got, _ := os.ReadFile(filepath.Join(f.rt.cg.memoryDir(containerCgroup("sb-oom", id)), "memory.limit_in_bytes"))
	if !strings.Contains(readLog(t, st.LogPath), strconv.FormatInt(limit, 10)) {
		t.Errorf("container did not see its limit %d (host view %q): %s", limit, got, readLog(t, st.LogPath))
	}
	if !st.OOMKilled || st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("status = %+v, want OOMKilled with 137", st)
	}
}

func TestStopSendsTermThenKill(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-stop", runtime.Resources{})
	ctx := context.Background()
	stubborn := f.start(t, "sb-stop", runtime.ContainerSpec{
		Name: "stubborn", Image: f.image("/bin/sh", "-c"),
		Args: []string{`trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.05; done`},
	})
	polite := f.start(t, "sb-stop", runtime.ContainerSpec{
		Name: "polite", Image: f.image("/bin/sh", "-c"),
		Args: []string{`trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done`},
	})
	for _, id := range []runtime.ContainerID{stubborn, polite} {
		waitLog(t, f, id, "ready")
		if st, _ := f.rt.ContainerStatus(ctx, id); st.State != runtime.ContainerRunning {
			t.Fatalf("%s state = %s", id, st.State)
		}
	}
	if err := f.rt.StopContainer(ctx, stubborn, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, _ := f.rt.ContainerStatus(ctx, stubborn)
	if st.State != runtime.ContainerExited || st.ExitCode != 137 || !strings.Contains(readLog(t, st.LogPath), "got TERM") {
		t.Errorf("stubborn: %+v\n%s", st, readLog(t, st.LogPath))
	}
	if err := f.rt.StopContainer(ctx, polite, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st, _ = f.rt.ContainerStatus(ctx, polite)
	if st.ExitCode != 0 || st.Reason != "Completed" || !strings.Contains(readLog(t, st.LogPath), "bye") {
		t.Errorf("polite: %+v", st)
	}
	if err := f.rt.StopContainer(ctx, polite, time.Second); err != nil {
		t.Errorf("stopping an exited container: %v", err)
	}
}

func waitLog(t *testing.T, f *fixture, id runtime.ContainerID, want string) {
	t.Helper()
	st, _ := f.rt.ContainerStatus(context.Background(), id)
	for range 500 {
		if b, _ := os.ReadFile(st.LogPath); bytes.Contains(b, []byte(want)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never logged %q", id, want)
}

func TestAdoptionAndNetworkAndExec(t *testing.T) {
	f := newFixture(t)
	spec := f.createSandbox(t, "sb-adopt", runtime.Resources{})
	ctx := context.Background()
	id := f.start(t, "sb-adopt", runtime.ContainerSpec{
		Name: "server", Image: f.image("/bin/sh", "-c"),
		Args: []string{`echo ready; while true; do echo hello | nc -l -p 8080; done`},
	})
	waitLog(t, f, id, "ready")

	// The agent goes away: a fresh Runtime over the same root finds the
	// sandbox and the still-running container.
	f.rt = nil
	rt := f.newRuntime(t)
	f.rt = rt
	sbs, err := rt.ListSandboxes(ctx)
	if err != nil || len(sbs) != 1 || sbs[0].ID != "sb-adopt" || sbs[0].NetnsPath == "" {
		t.Fatalf("ListSandboxes = %+v, %v", sbs, err)
	}
	cs, err := rt.ListContainers(ctx, "sb-adopt")
	if err != nil || len(cs) != 1 || cs[0].ID != id || cs[0].State != runtime.ContainerRunning {
		t.Fatalf("ListContainers = %+v, %v", cs, err)
	}

	// The container serves on its sandbox IP, reachable from the host.
	var got []byte
	for range 100 {
		c, err := net.DialTimeout("tcp4", spec.Network.IP.String()+":8080", time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got, _ = io.ReadAll(c)
			c.Close()
			if len(got) > 0 {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.TrimSpace(string(got)) != "hello" {
		t.Errorf("server answered %q", got)
	}

	var out bytes.Buffer
	code, err := rt.Exec(ctx, id, []string{"/bin/sh", "-c", "cat /etc/resolv.conf; cat /etc/hostname; exit 3"}, runtime.Stdio{Stdout: &out}, false)
	if err != nil || code != 3 {
		t.Errorf("exec = %d, %v", code, err)
	}
	if !strings.Contains(out.String(), "search default.svc.cluster.local") || !strings.Contains(out.String(), "sb-adopt") {
		t.Errorf("exec output %q", out.String())
	}
}

func TestTTYExec(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-tty", runtime.Resources{})
	ctx := context.Background()
	id := f.start(t, "sb-tty", runtime.ContainerSpec{
		Name: "app", Image: f.image("/bin/sh", "-c"), Args: []string{`echo ready; exec sleep 1000`},
	})
	waitLog(t, f, id, "ready")

	// The size sent before the exec applies from the start; a later one
	// reaches the running process.
	fdsBefore := openFds(t)
	resize := make(chan runtime.TerminalSize, 1)
	resize <- runtime.TerminalSize{Width: 120, Height: 40}
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out syncBuffer
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := f.rt.Exec(ctx, id, []string{"/bin/sh", "-c", `stty size; tty; echo "term=$TERM"; read line; stty size; echo "got $line"; exit 4`},
			runtime.Stdio{Stdin: stdinR, Stdout: &out, Resize: resize}, true)
		res <- result{code, err}
	}()
	waitFor(t, "first output", func() bool { return strings.Contains(out.String(), "term=") })
	resize <- runtime.TerminalSize{Width: 100, Height: 30}
	time.Sleep(100 * time.Millisecond)
	io.WriteString(stdinW, "hello\r")
	var r result
	select {
	case r = <-res:
	case <-time.After(30 * time.Second):
		t.Fatalf("tty exec did not return; output %q", out.String())
	}
	t.Logf("tty output: %q", out.String())
	if r.err != nil || r.code != 4 {
		t.Errorf("tty exec = %d, %v; want 4", r.code, r.err)
	}
	got := out.String()
	for _, want := range []string{"40 120\r\n", "/dev/pts/", "term=xterm", "30 100\r\n", "got hello"} {
		if !strings.Contains(got, want) {
			t.Errorf("tty output lacks %q: %q", want, got)
		}
	}

	// Cancelling the context kills the process, even a shell that ignores
	// SIGTERM and SIGHUP.
	cctx, cancel := context.WithCancel(ctx)
	stdinR2, stdinW2 := io.Pipe()
	defer stdinW2.Close()
	var out2 syncBuffer
	go func() {
		code, err := f.rt.Exec(cctx, id, []string{"/bin/sh", "-c", `trap '' TERM HUP; echo started; while true; do sleep 1; done`},
			runtime.Stdio{Stdin: stdinR2, Stdout: &out2}, true)
		res <- result{code, err}
	}()
	waitFor(t, "second exec output", func() bool { return strings.Contains(out2.String(), "started") })
	cancel()
	select {
	case r = <-res:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("cancelled tty exec = %d, %v", r.code, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cancelled tty exec did not return")
	}
	var ps bytes.Buffer
	f.rt.Exec(ctx, id, []string{"/bin/sh", "-c", "ps"}, runtime.Stdio{Stdout: &ps}, false)
	if strings.Contains(ps.String(), "trap") {
		t.Errorf("cancelled process still runs:\n%s", ps.String())
	}
	if after := openFds(t); after != fdsBefore {
		t.Errorf("open fds: %d before the tty execs, %d after", fdsBefore, after)
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestContainerOutlivesAgentProcess(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-orphan", runtime.Resources{})
	out, err := exec.Command(os.Args[0], "start-helper", f.root, "sb-orphan", f.rootfs).CombinedOutput()
	if err != nil {
		t.Fatalf("agent process: %v\n%s", err, out)
	}
	id := containerID("sb-orphan", "orphan", 0)
	waitLog(t, f, id, "ready")
	st, err := f.rt.ContainerStatus(context.Background(), id)
	if err != nil || st.State != runtime.ContainerRunning {
		t.Fatalf("after the starting process exited: %+v, %v", st, err)
	}
	// The shim, not the dead agent, is the container's parent now and
	// still records the exit.
	if err := f.rt.StopContainer(context.Background(), id, 0); err != nil {
		t.Fatal(err)
	}
	if st := f.waitExit(t, id); st.ExitCode != 137 {
		t.Errorf("exit after SIGKILL = %+v", st)
	}
}

func TestRemoveSandboxLeavesNothing(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-rm", runtime.Resources{MemoryBytes: 64 << 20})
	ctx := context.Background()
	id := f.start(t, "sb-rm", runtime.ContainerSpec{Name: "sleeper", Image: f.image("/bin/sleep"), Args: []string{"1000"}})
	st, _ := f.rt.ContainerStatus(ctx, id)
	pid := st.Pid
	dir, _ := containerDir(f.root, id)
	shimPid := readPid(containerPaths(dir).shimPid)
	if !alive(pid) || !alive(shimPid) {
		t.Fatalf("container %d / shim %d not running", pid, shimPid)
	}
	for range 2 {
		if err := f.rt.RemoveSandbox(ctx, "sb-rm"); err != nil {
			t.Fatal(err)
		}
	}
	// The shim exits by itself once it recorded the exit; give it a moment.
	for i := 0; i < 250 && alive(shimPid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) || alive(shimPid) {
		t.Errorf("processes left: container %v shim %v", alive(pid), alive(shimPid))
	}
	for _, mp := range f.rt.cg.mounts {
		if _, err := os.Stat(filepath.Join(mp, sandboxCgroup("sb-rm"))); err == nil {
			t.Errorf("cgroup left in %s", mp)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), "sb-rm") {
		t.Errorf("mounts left:\n%s", grepLines(string(mounts), "sb-rm"))
	}
	if _, err := os.Stat(sandboxDir(f.root, "sb-rm")); !os.IsNotExist(err) {
		t.Errorf("sandbox dir left: %v", err)
	}
	if ids, _ := f.net.List(ctx); len(ids) != 0 {
		t.Errorf("network state left: %v", ids)
	}
	if _, err := f.rt.ContainerStatus(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("status after remove: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestStartErrorIsReported(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-bad", runtime.Resources{})
	ctx := context.Background()
	_, err := f.rt.StartContainer(ctx, "sb-bad", runtime.ContainerSpec{Name: "missing", Image: f.image("/no/such/binary")})
	if err == nil {
		t.Fatal("starting a missing binary succeeded")
	}
	st, serr := f.rt.ContainerStatus(ctx, containerID("sb-bad", "missing", 0))
	if serr != nil || st.State != runtime.ContainerExited || st.Reason != "StartError" {
		t.Errorf("status = %+v, %v (start error %v)", st, serr, err)
	}
	if _, err := f.rt.StartContainer(ctx, "nope", runtime.ContainerSpec{Name: "x", Image: f.image("/bin/true")}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("start in unknown sandbox: %v", err)
	}

}

func TestStdinForAttach(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-stdin", runtime.Resources{})
	ctx := context.Background()
	id := f.start(t, "sb-stdin", runtime.ContainerSpec{
		Name: "reader", Image: f.image("/bin/sh", "-c"), Stdin: true,
		Args: []string{`echo ready; while read l; do echo "got-$l"; done; echo eof`},
	})
	waitLog(t, f, id, "ready")
	// Two attaches one after the other: closing the first does not end the
	// process's stdin.
	for _, line := range []string{"one", "two"} {
		w, err := f.rt.OpenStdin(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, line+"\n")
		w.Close()
		waitLog(t, f, id, "got-"+line)
	}
	if st, _ := f.rt.ContainerStatus(ctx, id); st.State != runtime.ContainerRunning {
		t.Errorf("reader stopped after its attach ended: %+v", st)
	}
	other := f.start(t, "sb-stdin", runtime.ContainerSpec{Name: "nostdin", Image: f.image("/bin/sh", "-c"), Args: []string{`exec sleep 1000`}})
	if _, err := f.rt.OpenStdin(ctx, other); !errors.Is(err, runtime.ErrFailedPrecondition) {
		t.Errorf("OpenStdin without Stdin: %v, want ErrFailedPrecondition", err)
	}
}

// Quotas hold the workload, not runc: during start the sandbox's quota is lifted, and after it
// both the sandbox's and the container's quotas are in place.
func TestCPUQuotasInPlaceAfterStart(t *testing.T) {
	f := newFixture(t)
	f.createSandbox(t, "sb-cpu", runtime.Resources{MilliCPU: 250, MemoryBytes: 128 << 20})
	id := f.start(t, "sb-cpu", runtime.ContainerSpec{
		Name: "app", Image: f.image("/bin/sleep", "30"), Limits: runtime.Resources{MilliCPU: 100},
	})
	quota := func(rel string) string {
		path, _, ok := f.rt.cg.cpuQuotaFile(rel)
		if !ok {
			t.Skip("no cpu controller on this host")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(b))[0]
	}
	if got := quota(sandboxCgroup("sb-cpu")); got != "25000" {
		t.Errorf("sandbox cpu quota after start = %s, want 25000 (0.25 CPU)", got)
	}
	if got := quota(containerCgroup("sb-cpu", id)); got != "10000" {
		t.Errorf("container cpu quota after start = %s, want 10000 (0.1 CPU)", got)
	}
	st, err := f.rt.ContainerStatus(context.Background(), id)
	if err != nil || st.State != runtime.ContainerRunning {
		t.Errorf("container status = %+v, %v; want running", st, err)
	}
}
