package hostagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// Handlers run probe and lifecycle-hook actions against one container: exec through the
// runtime, httpGet and tcpSocket from the host to the pod IP.
type handlers struct {
	rt     runtime.Runtime
	client *http.Client
}

// action is the common shape of probes and lifecycle hooks.
type action struct {
	Exec      *corev1.ExecAction
	HTTPGet   *corev1.HTTPGetAction
	TCPSocket *corev1.TCPSocketAction
	Sleep     *corev1.SleepAction
}

func probeAction(p *corev1.Probe) action {
	return action{Exec: p.Exec, HTTPGet: p.HTTPGet, TCPSocket: p.TCPSocket}
}

func hookAction(h *corev1.LifecycleHandler) action {
	return action{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket, Sleep: h.Sleep}
}

// run performs a and returns nil on success or an error describing the failure the way the
// kubelet's Unhealthy events do.
func (h *handlers) run(ctx context.Context, a action, id runtime.ContainerID, c *corev1.Container, podIP string) error {
	switch {
	case a.Exec != nil:
		var out strings.Builder
		code, err := h.rt.Exec(ctx, id, a.Exec.Command, runtime.Stdio{Stdout: &out, Stderr: &out}, false)
		if err != nil {
			return fmt.Errorf("exec failed: %w", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("command %q timed out", strings.Join(a.Exec.Command, " "))
		}
		if code != 0 {
			return fmt.Errorf("command %q exited with %d: %s", strings.Join(a.Exec.Command, " "), code, strings.TrimSpace(out.String()))
		}
		return nil
	case a.HTTPGet != nil:
		g := a.HTTPGet
		port, err := resolvePort(g.Port, c)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
		u, err = u.Parse(path)
		if err != nil {
			return fmt.Errorf("probe url: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "vessel-probe/1.0")
		for _, hd := range g.HTTPHeaders {
			if strings.EqualFold(hd.Name, "host") {
				req.Host = hd.Value
			} else {
				req.Header.Add(hd.Name, hd.Value)
			}
		}
		resp, err := h.client.Do(req)
		if err != nil {
			return fmt.Errorf("Get %q: %w", u.String(), err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case a.TCPSocket != nil:
		port, err := resolvePort(a.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := a.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("dial tcp %s:%d: %w", host, port, err)
		}
		conn.Close()
		return nil
	case a.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(a.Sleep.Seconds) * time.Second):
		}
		return nil
	}
	return fmt.Errorf("no handler")
}

// resolvePort turns a number or a named container port into a port number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("couldn't find port %q in container %s", p.StrVal, c.Name)
}

// probeKind names a probe in events ("Liveness probe failed: …").
type probeKind string

const (
	probeStartup   probeKind = "Startup"
	probeLiveness  probeKind = "Liveness"
	probeReadiness probeKind = "Readiness"
)

// probeResults is what a container's probers found; the worker reads it.
type probeResults struct {
	mu      sync.Mutex
	started bool
	ready   bool
	// livenessFailed (or a failed startup probe) asks the worker to kill the container.
	livenessFailed string
}

func (r *probeResults) get() (started, ready bool, failed string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started, r.ready, r.failed()
}

func (r *probeResults) failed() string { return r.livenessFailed }

// probeCounter applies success and failure thresholds to a stream of results.
type probeCounter struct {
	successThreshold, failureThreshold int32
	successes, failures                int32
}

// observe records one result and returns the probe's new verdict: +1 success reached, -1
// failure reached, 0 undecided.
func (p *probeCounter) observe(ok bool) int {
	if ok {
		p.failures = 0
		p.successes++
		if p.successes >= max(p.successThreshold, 1) {
			return 1
		}
		return 0
	}
	p.successes = 0
	p.failures++
	if p.failures >= max(p.failureThreshold, 1) {
		return -1
	}
	return 0
}

func probeDefaults(p *corev1.Probe) (period, timeout time.Duration, success, failure int32) {
	period, timeout, success, failure = 10*time.Second, time.Second, 1, 3
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	if p.SuccessThreshold > 0 {
		success = p.SuccessThreshold
	}
	if p.FailureThreshold > 0 {
		failure = p.FailureThreshold
	}
	return
}

// prober runs a container instance's probes until ctx ends. Startup runs first; liveness and
// readiness start once it succeeded. onChange is called after every change of results.
type prober struct {
	h        *handlers
	id       runtime.ContainerID
	c        *corev1.Container
	podIP    string
	res      *probeResults
	onChange func()
	// unhealthy reports a failed probe run (for the Unhealthy event).
	unhealthy func(kind probeKind, err error)
}

func (p *prober) start(ctx context.Context) {
	p.res.mu.Lock()
	p.res.started = p.c.StartupProbe == nil
	p.res.ready = p.c.ReadinessProbe == nil
	p.res.mu.Unlock()
	go func() {
		if p.c.StartupProbe != nil {
			if !p.loop(ctx, probeStartup, p.c.StartupProbe) {
				return
			}
			p.res.mu.Lock()
			p.res.started = true
			p.res.mu.Unlock()
			p.onChange()
		}
		if p.c.LivenessProbe != nil {
			go p.loop(ctx, probeLiveness, p.c.LivenessProbe)
		}
		if p.c.ReadinessProbe != nil {
			go p.loop(ctx, probeReadiness, p.c.ReadinessProbe)
		}
	}()
}

// loop probes until ctx ends. For startup it returns true on success; a failed startup or
// liveness probe sets livenessFailed and returns false.
func (p *prober) loop(ctx context.Context, kind probeKind, pr *corev1.Probe) bool {
	period, timeout, success, failure := probeDefaults(pr)
	if kind == probeStartup || kind == probeLiveness {
		success = 1
	}
	counter := probeCounter{successThreshold: success, failureThreshold: failure}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := p.h.run(pctx, probeAction(pr), p.id, p.c, p.podIP)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			p.unhealthy(kind, err)
		}
		switch verdict := counter.observe(err == nil); {
		case kind == probeStartup && verdict > 0:
			return true
		case kind == probeReadiness && verdict != 0:
			p.res.mu.Lock()
			changed := p.res.ready != (verdict > 0)
			p.res.ready = verdict > 0
			p.res.mu.Unlock()
			if changed {
				p.onChange()
			}
		case (kind == probeStartup || kind == probeLiveness) && verdict < 0:
			p.res.mu.Lock()
			p.res.livenessFailed = fmt.Sprintf("Container %s failed %s probe, will be restarted", p.c.Name, strings.ToLower(string(kind)))
			p.res.mu.Unlock()
			p.onChange()
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
