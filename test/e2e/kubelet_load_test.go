package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// openFDs counts a process's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestKubeletAPIManyStreams runs 20 `kubectl logs -f` and 10 `kubectl exec` at once against one
// host, then closes them and checks that the host (vessel up) holds no more file descriptors than
// before. Goroutine counts are checked at the kubelet-API level in internal/kubeletapi.
func TestKubeletAPIManyStreams(t *testing.T) {
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ticker"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "t", Image: image, Command: []string{"/bin/sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.2; done"}},
		}},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "ticker Running", func(ctx context.Context) error {
		_, code := s.kubectl(t, "exec", "ticker", "--", "true")
		if code != 0 {
			return os.ErrNotExist
		}
		return nil
	})
	pid := s.up.cmd.Process.Pid
	// Let connections the apiserver keeps to the kubelet port settle before counting.
	time.Sleep(2 * time.Second)
	before := openFDs(t, pid)

	kubeconfig := filepath.Join(s.dir, "kubeconfig")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	got := make(chan bool, 20)
	var followers []*exec.Cmd
	for range 20 {
		cmd := exec.CommandContext(cctx, "kubectl", "--kubeconfig", kubeconfig, "logs", "-f", "ticker", "--tail=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		followers = append(followers, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			n := 0
			for sc.Scan() && n < 3 {
				n++
			}
			got <- n == 3
		}()
	}
	execErrs := make(chan string, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.CommandContext(cctx, "kubectl", "--kubeconfig", kubeconfig, "exec", "ticker", "--",
				"sh", "-c", "sleep 2; echo exec-"+strconv.Itoa(i)).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "exec-"+strconv.Itoa(i) {
				execErrs <- string(out) + " " + errString(err)
			}
		}()
	}
	for range 20 {
		select {
		case ok := <-got:
			if !ok {
				t.Error("a kubectl logs -f did not stream 3 lines")
			}
		case <-time.After(time.Minute):
			t.Fatal("kubectl logs -f streams did not deliver within a minute")
		}
	}
	wg.Wait()
	close(execErrs)
	for e := range execErrs {
		t.Errorf("concurrent exec failed: %s", e)
	}
	cancel()
	for _, c := range followers {
		_ = c.Wait()
	}
	testenv.Eventually(t, 30*time.Second, "host file descriptors back to where they were", func(context.Context) error {
		if after := openFDs(t, pid); after > before+2 {
			return &fdError{before, after}
		}
		return nil
	})
	_ = pods.Delete(ctx, "ticker", metav1.DeleteOptions{})
	s.expectEmpty(t)
}

type fdError struct{ before, after int }

func (e *fdError) Error() string {
	return "open fds " + strconv.Itoa(e.after) + ", were " + strconv.Itoa(e.before)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
