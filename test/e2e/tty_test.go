package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// TestKubectlTerminalAndAttach checks `kubectl exec -it` (a terminal of the client's size,
// typed input, exit codes) and `kubectl attach` (the container's output from now until it
// exits) against Vessel pods.
func TestKubectlTerminalAndAttach(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("needs script(1) from util-linux to give kubectl a terminal")
	}
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	shell := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shell"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "c", Image: image, Command: []string{"/bin/sh", "-c", "exec sleep 100000"}},
		}},
	}
	talker := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "talker"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
			{Name: "c", Image: image, Command: []string{"/bin/sh", "-c", "echo before-attach; sleep 8; for i in 1 2 3; do echo out-$i; echo err-$i >&2; sleep 0.2; done; exit 0"}},
		}},
	}
	reader := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "c", Image: image, Stdin: true, Command: []string{"/bin/sh", "-c", `while read l; do echo "got-$l"; done`}},
		}},
	}
	for _, p := range []*corev1.Pod{shell, talker, reader} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	running := func(name string) {
		testenv.Eventually(t, time.Minute, "pod "+name+" Running", func(ctx context.Context) error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err == nil && p.Status.Phase != corev1.PodRunning {
				err = fmt.Errorf("phase %s", p.Status.Phase)
			}
			return err
		})
	}
	running("talker")

	t.Run("attach streams output until the container exits", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "kubectl", "--kubeconfig", filepath.Join(s.dir, "kubeconfig"), "attach", "talker", "-c", "c")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Logf("kubectl attach: %v\nstdout %q\nstderr %q", err, stdout.String(), stderr.String())
		if err != nil {
			t.Fatalf("kubectl attach: %v", err)
		}
		if strings.Contains(stdout.String(), "before-attach") || !strings.Contains(stdout.String(), "out-1\nout-2\nout-3\n") {
			t.Errorf("stdout %q: want out-1..3 and nothing from before the attach", stdout.String())
		}
		if !strings.Contains(stderr.String(), "err-1\nerr-2\nerr-3\n") {
			t.Errorf("stderr %q: want err-1..3", stderr.String())
		}
	})

	running("reader")
	t.Run("attach -i writes to a stdin:true container, twice", func(t *testing.T) {
		for _, word := range []string{"first", "second"} {
			cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			cmd := exec.CommandContext(cctx, "kubectl", "--kubeconfig", filepath.Join(s.dir, "kubeconfig"), "attach", "-i", "reader", "-c", "c")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			io.WriteString(stdin, word+"\n")
			testenv.Eventually(t, 30*time.Second, "reply to "+word, func(context.Context) error {
				if !strings.Contains(out.String(), "got-"+word) {
					return fmt.Errorf("output so far %q", out.String())
				}
				return nil
			})
			stdin.Close() // ends the session; the container keeps running
			err = cmd.Wait()
			cancel()
			t.Logf("kubectl attach -i (%s): %v, output %q", word, err, out.String())
		}
		p, err := pods.Get(ctx, "reader", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("reader after two attaches: %v, %v", p.Status.Phase, err)
		}
	})

	running("shell")
	t.Run("exec -it has a terminal of the client's size", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		defer cancel()
		// script(1) gives kubectl a pseudo-terminal (40x120 after stty), so kubectl puts it in
		// raw mode and sends its size; what we write to script's stdin is typed into it.
		kubectl := "kubectl --kubeconfig " + filepath.Join(s.dir, "kubeconfig") +
			` exec -it shell -c c -- sh -c 'busybox stty size; busybox tty; echo "term=$TERM"; read line; echo "got-$line"; exit 4'`
		cmd := exec.CommandContext(cctx, "script", "-qec", "stty rows 40 cols 120; "+kubectl, "/dev/null")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "prompt from the exec'd shell", func(context.Context) error {
			if !strings.Contains(out.String(), "term=") {
				return fmt.Errorf("output so far %q", out.String())
			}
			return nil
		})
		io.WriteString(stdin, "hello\r")
		err = cmd.Wait()
		got := out.String()
		t.Logf("script+kubectl exec -it: %v, output %q", err, got)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != 4 {
			t.Errorf("exit code %d, want 4", code)
		}
		for _, want := range []string{"40 120", "/dev/pts/", "term=xterm", "got-hello"} {
			if !strings.Contains(got, want) {
				t.Errorf("output lacks %q: %q", want, got)
			}
		}
	})
	for _, n := range []string{"shell", "talker", "reader"} {
		_ = pods.Delete(ctx, n, metav1.DeleteOptions{})
	}
	s.expectEmpty(t)
}

// lockedBuffer is a bytes.Buffer written by a command and polled by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
