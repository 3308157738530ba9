package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// kubectl runs the kubectl on PATH against the stack and returns its output and exit code.
func (s *stack) kubectl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", filepath.Join(s.dir, "kubeconfig")}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kubectl %v: %v", args, err)
	}
	return string(out), code
}

func (s *stack) flag(name string) string {
	i := slices.Index(s.args, name)
	return s.args[i+1]
}

// TestKubectlDebugsVesselPods checks that debugging a pod on Vessel looks like debugging it on
// any node: kubectl logs (tail, timestamps, since, follow, previous), exec (argv, exit codes,
// RBAC), port-forward, and that the kubelet port refuses strangers.
func TestKubectlDebugsVesselPods(t *testing.T) {
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	debug := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "debug"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "ticker", Image: image, Command: []string{"/bin/sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.2; done"}},
			{Name: "web", Image: image, Command: []string{"/vessel-demo"}},
		}},
	}
	crasher := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crasher"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "c", Image: image, Command: []string{"/bin/sh", "-c", "echo started; sleep 1; exit 1"}},
		}},
	}
	for _, p := range []*corev1.Pod{debug, crasher} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, "pod debug Running", func(ctx context.Context) error {
		p, err := pods.Get(ctx, "debug", metav1.GetOptions{})
		if err == nil && p.Status.Phase != corev1.PodRunning {
			err = fmt.Errorf("phase %s", p.Status.Phase)
		}
		return err
	})
	time.Sleep(2 * time.Second) // some ticks to read

	t.Run("logs --tail", func(t *testing.T) {
		out, code := s.kubectl(t, "logs", "debug", "-c", "ticker", "--tail=2")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "tick-") {
			t.Fatalf("exit %d, output %q: want the last 2 tick lines", code, out)
		}
	})
	t.Run("logs --timestamps", func(t *testing.T) {
		out, code := s.kubectl(t, "logs", "debug", "-c", "ticker", "--tail=1", "--timestamps")
		if code != 0 || !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z tick-\d+\n$`).MatchString(out) {
			t.Fatalf("exit %d, output %q: want one RFC3339Nano-stamped line", code, out)
		}
	})
	t.Run("logs --since", func(t *testing.T) {
		all, _ := s.kubectl(t, "logs", "debug", "-c", "ticker")
		recent, code := s.kubectl(t, "logs", "debug", "-c", "ticker", "--since=1s")
		if code != 0 || strings.Contains(recent, "tick-0\n") || len(recent) == 0 || len(recent) >= len(all) {
			t.Fatalf("exit %d: --since=1s gave %d bytes of %d (must be a non-empty recent part): %q", code, len(recent), len(all), recent)
		}
	})
	t.Run("logs -f streams new lines", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "kubectl", "--kubeconfig", filepath.Join(s.dir, "kubeconfig"), "logs", "-f", "debug", "-c", "ticker", "--tail=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(out)
		var seen []int
		for len(seen) < 5 && sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "tick-"))
			if err != nil {
				t.Fatalf("unexpected line %q", sc.Text())
			}
			seen = append(seen, n)
		}
		if len(seen) < 5 || !slices.IsSorted(seen) || seen[4] <= seen[0] {
			t.Fatalf("followed lines %v: want 5 growing tick numbers", seen)
		}
	})
	t.Run("logs --previous after a restart", func(t *testing.T) {
		testenv.Eventually(t, time.Minute, "crasher restarted", func(ctx context.Context) error {
			p, err := pods.Get(ctx, "crasher", metav1.GetOptions{})
			if err == nil && (len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount < 1) {
				err = fmt.Errorf("not restarted yet")
			}
			return err
		})
		out, code := s.kubectl(t, "logs", "crasher", "--previous")
		if code != 0 || strings.TrimSpace(out) != "started" {
			t.Fatalf("exit %d, output %q: want the previous instance's \"started\"", code, out)
		}
	})
	t.Run("exec keeps argv and exit codes", func(t *testing.T) {
		out, code := s.kubectl(t, "exec", "debug", "-c", "ticker", "--", "printf", "%s|", "a b", "c")
		if code != 0 || out != "a b|c|" {
			t.Fatalf("exit %d, output %q, want \"a b|c|\"", code, out)
		}
		if _, code := s.kubectl(t, "exec", "debug", "-c", "ticker", "--", "sh", "-c", "exit 3"); code != 3 {
			t.Fatalf("exec of 'exit 3' returned %d, want 3", code)
		}
	})
	t.Run("exec needs pods/exec", func(t *testing.T) {
		if out, code := s.kubectl(t, "create", "rolebinding", "eve-view", "--clusterrole=view", "--user=eve"); code != 0 {
			t.Fatal(out)
		}
		out, code := s.kubectl(t, "--as=eve", "exec", "debug", "-c", "ticker", "--", "true")
		if code == 0 || !strings.Contains(out, "forbidden") {
			t.Fatalf("eve, who may only view, could exec: exit %d, %q", code, out)
		}
	})
	t.Run("port-forward reaches the pod", func(t *testing.T) {
		ports, _ := testenv.FreePorts(1)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cmd := exec.CommandContext(cctx, "kubectl", "--kubeconfig", filepath.Join(s.dir, "kubeconfig"), "port-forward", "pod/debug", fmt.Sprintf("%d:8080", ports[0]))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		testenv.Eventually(t, 20*time.Second, "page through port-forward", func(context.Context) error {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", ports[0]))
			if err == nil && !strings.Contains(body, "hello from debug") {
				err = fmt.Errorf("page %q", body)
			}
			return err
		})
	})
	t.Run("kubelet port refuses unauthenticated callers", func(t *testing.T) {
		c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := c.Get("https://127.0.0.1:" + s.flag("--kubelet-port") + "/containerLogs/default/debug/ticker")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated request got %d, want 401", resp.StatusCode)
		}
	})
	for _, n := range []string{"debug", "crasher"} {
		_ = pods.Delete(ctx, n, metav1.DeleteOptions{})
	}
	s.expectEmpty(t)
}
