// Package testenv gives end-to-end tests a real Vessel control plane: one embedded etcd,
// kube-apiserver and kube-controller-manager per test binary, in a temporary data directory on
// free loopback ports, plus clients and small helpers that read as the behaviour under test.
//
// A test package uses it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// The same binary doubles as the `vessel` command (see Command), so tests of process-level
// behaviour — signals, restarts, lock and port errors — do not link Kubernetes a second time.
package testenv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/cli"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/server"
)

// execCLIEnv marks a re-executed test binary that must behave as the vessel command.
const execCLIEnv = "VESSEL_TESTENV_EXEC_CLI"

// Env is the control plane shared by one test binary.
type Env struct {
	Dir        string
	Kubeconfig string
	APIPort    int
	Config     *rest.Config
	Client     kubernetes.Interface
	// Ctrl reads and writes Vessel's objects as well as Kubernetes' (controller-runtime client).
	Ctrl client.Client
	CP   *server.Server
}

var shared *Env

// Main starts the shared control plane, runs the tests and tears everything down; it never
// returns. In a re-executed child (see Command) it runs the vessel command line instead.
func Main(m *testing.M) {
	if os.Getenv(execCLIEnv) == "1" {
		os.Exit(cli.Main())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "vessel-testenv-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	env, err := start(ctx, dir)
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "testenv: start control plane:", err)
		dumpLog(dir)
		return 1
	}
	shared = env
	code := m.Run()
	cancel()
	select {
	case <-env.CP.Done():
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "testenv: control plane did not stop within 30s")
		code = 1
	}
	if code != 0 {
		dumpLog(dir)
	}
	return code
}

func start(ctx context.Context, dir string) (*Env, error) {
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	cp, err := server.Start(ctx, server.Config{
		ControlPlane: controlplane.Config{
			DataDir:        dir,
			BindAddress:    "127.0.0.1",
			APIPort:        ports[0],
			EtcdClientPort: ports[1],
			EtcdPeerPort:   ports[2],
		},
		// Tests create the profiles and subnets they need; a default one would overlap theirs.
		DefaultProfile: false,
		// Scheduler and host-agent tests start their own instances (and fake hosts); tests of
		// the whole assembly run `vessel up` as a child process.
		DisableScheduler: true,
		DisableHost:      true,
		RegistryPort:     -1,
		MetricsPort:      -1,
		Isolation:        vesselv1.IsolationOCI,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, err
	}
	select {
	case <-cp.Ready():
	case <-cp.Done():
		return nil, cp.Err()
	case <-time.After(2 * time.Minute):
		return nil, fmt.Errorf("not ready after 2 minutes")
	}
	cfg := cp.RESTConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctrl, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		return nil, err
	}
	return &Env{Dir: dir, Kubeconfig: cp.Kubeconfig(), APIPort: ports[0], Config: cfg, Client: cs, Ctrl: ctrl, CP: cp}, nil
}

// dumpLog prints the tail of the control plane's log, where a failure's cause usually is.
func dumpLog(dir string) {
	f, err := os.Open(filepath.Join(dir, "logs", "controlplane.log"))
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 16<<10 {
		_, _ = f.Seek(-16<<10, io.SeekEnd)
	}
	fmt.Fprintln(os.Stderr, "---- tail of control plane log ----")
	_, _ = io.Copy(os.Stderr, f)
}

// Get returns the shared environment; the test package's TestMain must call Main.
func Get(t testing.TB) *Env {
	t.Helper()
	if shared == nil {
		t.Fatal("testenv: no control plane; call testenv.Main from TestMain")
	}
	return shared
}

// Namespace creates a namespace with a unique name for t and deletes it when t ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns, err := e.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// Impersonate returns a client acting as user (with groups) through the admin credentials,
// the way `kubectl --as` does, to test what an ordinary user may do.
func (e *Env) Impersonate(t testing.TB, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("impersonating client: %v", err)
	}
	return c
}

// Command returns the vessel command line with args, run by re-executing the test binary.
// The caller starts it and must make sure it ends (Kill in a t.Cleanup).
func Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), execCLIEnv+"=1")
	return cmd
}

// FreePorts returns n distinct loopback TCP ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Kubectl runs the kubectl on PATH against the shared environment and returns its combined
// output. Tests use the real client users have, not a library stand-in.
func (e *Env) Kubectl(t testing.TB, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is not on PATH: install it (the README's test command expects it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}
