package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/testenv"
)

func TestKubectlWorksAgainstEmbeddedControlPlane(t *testing.T) {
	env := testenv.Get(t)
	ns := env.Namespace(t)

	out, err := env.Kubectl(t, nil, "get", "ns")
	if err != nil || !strings.Contains(out, "default") || !strings.Contains(out, "kube-system") {
		t.Fatalf("kubectl get ns: err=%v, output:\n%s", err, out)
	}

	t.Run("deployment creates a ReplicaSet and pods", func(t *testing.T) {
		if out, err := env.Kubectl(t, nil, "-n", ns, "create", "deployment", "web", "--image=x", "--replicas=3"); err != nil {
			t.Fatalf("create deployment: %v\n%s", err, out)
		}
		testenv.Eventually(t, 60*time.Second, "3 pods of deployment web", func(ctx context.Context) error {
			rs, err := env.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil || len(rs.Items) != 1 {
				return fmt.Errorf("replicasets: %d, err %v", len(rs.Items), err)
			}
			pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil || len(pods.Items) != 3 {
				return fmt.Errorf("pods: %d, err %v", len(pods.Items), err)
			}
			return nil
		})
	})

	t.Run("CRD and custom object", func(t *testing.T) {
		crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.vessel.dev
spec:
  group: e2e.vessel.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`
		if out, err := env.Kubectl(t, strings.NewReader(crd), "apply", "-f", "-"); err != nil {
			t.Fatalf("apply CRD: %v\n%s", err, out)
		}
		t.Cleanup(func() { _, _ = env.Kubectl(t, nil, "delete", "crd", "widgets.e2e.vessel.dev") })
		if out, err := env.Kubectl(t, nil, "wait", "--for=condition=Established", "crd/widgets.e2e.vessel.dev", "--timeout=60s"); err != nil {
			t.Fatalf("wait for CRD: %v\n%s", err, out)
		}
		obj := "apiVersion: e2e.vessel.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
		testenv.Eventually(t, 30*time.Second, "custom object applied", func(ctx context.Context) error {
			if out, err := env.Kubectl(t, strings.NewReader(obj), "-n", ns, "apply", "-f", "-"); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		out, err := env.Kubectl(t, nil, "-n", ns, "get", "widget", "w1", "-o", "jsonpath={.spec.size}")
		if err != nil || out != "3" {
			t.Fatalf("get widget: err=%v output=%q, want 3", err, out)
		}
	})

	t.Run("default ServiceAccount appears in new namespaces", func(t *testing.T) {
		other := env.Namespace(t)
		testenv.Eventually(t, 30*time.Second, "default ServiceAccount in "+other, func(ctx context.Context) error {
			_, err := env.Client.CoreV1().ServiceAccounts(other).Get(ctx, "default", metav1.GetOptions{})
			return err
		})
	})
}

// upProcess is a `vessel up` child process.
type upProcess struct {
	cmd    *exec.Cmd
	exited chan error // receives cmd.Wait's result once
	stderr *bytes.Buffer
}

// startUp runs `vessel up` with args and returns once it has printed its ready line; the process
// is killed when t ends.
func startUp(t testing.TB, args ...string) (*upProcess, error) {
	t.Helper()
	p, err := launchUp(t, args...)
	if p != nil {
		t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	}
	return p, err
}

// launchUp is startUp leaving the process's end to the caller.
func launchUp(t testing.TB, args ...string) (*upProcess, error) {
	t.Helper()
	cmd := testenv.Command(context.Background(), append([]string{"up"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &upProcess{cmd: cmd, exited: make(chan error, 1), stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vessel up: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Vessel is ready") {
				close(ready)
			}
		}
		p.exited <- cmd.Wait()
	}()
	select {
	case <-ready:
		return p, nil
	case err := <-p.exited:
		return nil, fmt.Errorf("vessel up exited: %v\n%s", err, p.stderr)
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("vessel up not ready after 2 minutes\n%s", p.stderr)
	}
}

// stop sends SIGTERM and returns how long the process took to exit.
func (p *upProcess) stop(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case err := <-p.exited:
		t.Fatalf("vessel up had already exited (%v) before SIGTERM:\n%s", err, p.stderr)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("vessel up exited with %v after SIGTERM\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("vessel up still running 30s after SIGTERM")
	}
	return time.Since(start)
}

func upArgs(t testing.TB, dir string) []string {
	ports, err := testenv.FreePorts(7)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--data-dir", dir, "--bind-address", "127.0.0.1",
		"--https-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--webhook-port", strconv.Itoa(ports[3]),
		"--kubelet-port", strconv.Itoa(ports[4]), "--registry-port", strconv.Itoa(ports[5]),
		"--metrics-port", strconv.Itoa(ports[6])}
}

func restConfigFor(t testing.TB, dir string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	return cfg
}

func clientFor(t testing.TB, dir string) kubernetes.Interface {
	c, err := kubernetes.NewForConfig(restConfigFor(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRestartKeepsDataAndCertificates(t *testing.T) {
	dir := t.TempDir()
	args := upArgs(t, dir)
	first, err := startUp(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"}}
	if _, err := clientFor(t, dir).CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	certs := readFiles(t, dir, "tls/ca.crt", "tls/apiserver.crt", "kubeconfig")
	// Clients that hold a connection without a request held each server's graceful stop for
	// 5 s (net/http waits that long for new connections); the stop must not wait for them.
	holdIdleConnections(t, args)
	took := first.stop(t)
	t.Logf("SIGTERM to exit, with idle connections held: %s", took)
	if took > 5*time.Second {
		t.Errorf("SIGTERM took %s to stop everything, want < 5s", took)
	}

	second, err := startUp(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer second.stop(t)
	got, err := clientFor(t, dir).CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("configmap after restart: %v, data %v", err, got.Data)
	}
	for name, before := range certs {
		if after := readFiles(t, dir, name)[name]; !bytes.Equal(before, after) {
			t.Errorf("%s changed across restart", name)
		}
	}
}

// holdIdleConnections opens a TCP connection that sends nothing to every port vessel up serves
// (on loopback and on the host address, where the kubelet and metrics APIs listen), and closes
// them when the test ends.
func holdIdleConnections(t *testing.T, args []string) {
	t.Helper()
	hosts := []string{"127.0.0.1"}
	if a := controlplane.DefaultAdvertiseAddress(); a != "" {
		hosts = append(hosts, a)
	}
	held := map[string]bool{}
	for i, a := range args {
		if !strings.HasSuffix(a, "-port") || i+1 == len(args) || strings.HasPrefix(a, "--etcd") {
			continue
		}
		for _, h := range hosts {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(h, args[i+1]), time.Second)
			if err != nil {
				continue // this server does not listen on that address
			}
			t.Cleanup(func() { c.Close() })
			held[a] = true
		}
	}
	if len(held) < 5 {
		t.Fatalf("held idle connections to %v of vessel up, want all 5 (API, webhook, registry, kubelet, metrics)", held)
	}
}

func readFiles(t *testing.T, dir string, names ...string) map[string][]byte {
	m := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		m[n] = b
	}
	return m
}

// runUpExpectingFailure runs `vessel up` that must fail at once, returning its stderr.
func runUpExpectingFailure(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := testenv.Command(ctx, append([]string{"up"}, args...)...).CombinedOutput()
	if err == nil {
		t.Fatalf("vessel up %v succeeded, want a failure; output:\n%s", args, out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("vessel up took %s to fail, want at once", took)
	}
	return string(out)
}

func TestSecondUpOnSameDataDirFails(t *testing.T) {
	env := testenv.Get(t)
	// The shared control plane holds env.Dir; a second vessel on it must refuse, whatever ports.
	out := runUpExpectingFailure(t, upArgs(t, env.Dir)...)
	want := fmt.Sprintf("%s is used by another vessel (pid %d); stop it first or pass a different --data-dir", env.Dir, os.Getpid())
	if !strings.Contains(out, want) {
		t.Fatalf("output does not explain the lock:\n%s\nwant it to contain %q", out, want)
	}
}

func TestBusyPortIsReported(t *testing.T) {
	env := testenv.Get(t)
	args := upArgs(t, t.TempDir())
	args = append(args, "--https-port", strconv.Itoa(env.APIPort))
	out := runUpExpectingFailure(t, args...)
	want := fmt.Sprintf("kube-apiserver port 127.0.0.1:%d is already in use: stop the process listening there or choose another port with --https-port", env.APIPort)
	if !strings.Contains(out, want) {
		t.Fatalf("output does not explain the busy port:\n%s\nwant it to contain %q", out, want)
	}
}

// TestControllerAgainstExistingCluster runs `vessel controller --kubeconfig` against a cluster
// that has no Vessel in it (a control plane started with --disable-controller) and checks that
// it installs the CRDs and admits pods through its own webhook.
func TestControllerAgainstExistingCluster(t *testing.T) {
	dir := t.TempDir()
	cluster, err := startUp(t, append(upArgs(t, dir), "--disable-controller")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.stop(t)
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	ctl := testenv.Command(context.Background(), "controller", "--kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--data-dir", t.TempDir(), "--webhook-listen", "127.0.0.1:"+strconv.Itoa(ports[0]))
	out, err := ctl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	ctl.Stderr = &stderr
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = ctl.Process.Signal(syscall.SIGTERM)
		_ = ctl.Wait()
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "Vessel controller is ready." {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("vessel controller exited before ready:\n%s", stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("vessel controller not ready after 2 minutes:\n%s", stderr.String())
	}

	kc := filepath.Join(dir, "kubeconfig")
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", kc}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	kubectl(`apiVersion: vessel.dev/v1
kind: Subnet
metadata: {name: s1}
spec: {cidr: 10.210.0.0/24, gateway: 10.210.0.1, zone: z, vpc: v}
---
apiVersion: vessel.dev/v1
kind: VesselProfile
metadata: {name: p1}
spec:
  selectors: [{namespace: default}]
  subnets: [s1]
`, "apply", "-f", "-")
	if out := kubectl("", "wait", "--for=jsonpath={.status.phase}=Active", "vesselprofile/p1", "--timeout=60s"); !strings.Contains(out, "condition met") {
		t.Fatalf("profile not Active: %s", out)
	}
	// The webhook's cache may trail the profile's status by a moment.
	testenv.Eventually(t, 30*time.Second, "pod admitted through profile p1", func(ctx context.Context) error {
		_ = exec.Command("kubectl", "--kubeconfig", kc, "delete", "pod", "probe", "--ignore-not-found", "--wait=false").Run()
		kubectl("", "run", "probe", "--image=registry.example/x:1")
		got := kubectl("", "get", "pod", "probe", "-o", "jsonpath={.spec.schedulerName} {.metadata.labels.vessel\\.dev/profile}")
		if got != "vessel-scheduler p1" {
			return fmt.Errorf("pod has %q", got)
		}
		return nil
	})
}
