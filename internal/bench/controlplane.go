package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ControlPlaneOptions configures the control-plane benchmark.
type ControlPlaneOptions struct {
	// Vessel is the vessel binary to start; its `up` command is what gets measured.
	Vessel string
	// Runs is the number of cold starts, each followed by one restart on the same data directory.
	Runs int
	// Idle is how long to let the process settle before reading its resident memory.
	Idle time.Duration
	// Env is added to the child's environment.
	Env []string
}

// ControlPlane starts `vessel up` Runs times on a fresh data directory and once more on the same
// directory after each stop, measuring process start → ready (the ready line is printed right
// after /readyz answers ok), idle RSS, and SIGTERM → exit.
func ControlPlane(ctx context.Context, w io.Writer, o ControlPlaneOptions) error {
	var cold, restart, coldAPI, restartAPI, stop Durations
	var rss []int64
	for i := range o.Runs {
		dir, err := os.MkdirTemp("", "vessel-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		ports, err := freePorts(4)
		if err != nil {
			return err
		}
		args := []string{"up", "--data-dir", dir, "--bind-address", "127.0.0.1",
			"--https-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
			"--etcd-peer-port", strconv.Itoa(ports[2]), "--webhook-port", strconv.Itoa(ports[3]),
			"--metrics-port", "0"}
		for pass := range 2 {
			p, took, api, err := startUntilReady(ctx, o, args, dir)
			if err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
			if pass == 0 {
				cold = append(cold, took)
				coldAPI = append(coldAPI, api)
				select {
				case <-time.After(o.Idle):
				case <-ctx.Done():
				}
				if kb, err := rssKiB(p.Process.Pid); err == nil {
					rss = append(rss, kb)
				}
			} else {
				restart = append(restart, took)
				restartAPI = append(restartAPI, api)
			}
			t0 := time.Now()
			_ = p.Process.Signal(syscall.SIGTERM)
			if err := p.Wait(); err != nil {
				return fmt.Errorf("run %d: vessel up exited with %v after SIGTERM", i, err)
			}
			stop = append(stop, time.Since(t0))
		}
	}
	fmt.Fprintf(w, "vessel bench controlplane: %d cold starts + %d restarts, idle %s before reading RSS\n", o.Runs, o.Runs, o.Idle)
	coldAPI.Report(w, "start → /readyz ok (fresh data dir)")
	restartAPI.Report(w, "start → /readyz ok (restart)")
	cold.Report(w, "start → Vessel ready (fresh data dir)")
	restart.Report(w, "start → Vessel ready (restart)")
	stop.Report(w, "SIGTERM → exit")
	if len(rss) > 0 {
		slices.Sort(rss)
		fmt.Fprintf(w, "%-34s min %6d MiB  median %6d MiB  max %6d MiB\n", "RSS when idle",
			rss[0]/1024, rss[len(rss)/2]/1024, rss[len(rss)-1]/1024)
	}
	return nil
}

// startUntilReady starts `vessel up` and returns once it printed its ready line, with the time
// to that line and the time until kube-apiserver's /readyz first answered ok.
func startUntilReady(ctx context.Context, o ControlPlaneOptions, args []string, dir string) (*exec.Cmd, time.Duration, time.Duration, error) {
	cmd := exec.CommandContext(ctx, o.Vessel, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, 0, err
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	apiReady := make(chan time.Duration, 1)
	go func() { apiReady <- pollReadyz(pollCtx, filepath.Join(dir, "kubeconfig"), start) }()

	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Vessel is ready") {
			took := time.Since(start)
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return cmd, took, <-apiReady, nil
		}
	}
	_ = cmd.Wait()
	return nil, 0, 0, fmt.Errorf("vessel up exited before ready: %s", stderr.String())
}

// pollReadyz asks /readyz every 10 ms, with the admin credentials once they exist, and returns
// the time since start at the first "ok".
func pollReadyz(ctx context.Context, kubeconfig string, start time.Time) time.Duration {
	for ctx.Err() == nil {
		if cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig); err == nil {
			cfg.Timeout = time.Second
			if rc, err := rest.UnversionedRESTClientFor(withCodec(cfg)); err == nil {
				if body, err := rc.Get().AbsPath("/readyz").DoRaw(ctx); err == nil && string(body) == "ok" {
					return time.Since(start)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

func withCodec(cfg *rest.Config) *rest.Config {
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return cfg
}

// rssKiB reads a process's resident set size.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
