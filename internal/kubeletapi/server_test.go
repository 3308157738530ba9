package kubeletapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
)

type executorKind struct {
	name string
	new  func(cfg *rest.Config, u string) (remotecommand.Executor, error)
}

var executors = []executorKind{
	{"spdy", func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
		parsed, _ := url.Parse(u)
		return remotecommand.NewSPDYExecutor(cfg, "POST", parsed)
	}},
	{"websocket", func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(cfg, "GET", u)
	}},
}

func TestExec(t *testing.T) {
	ts := startServer(t)
	for _, ex := range executors {
		t.Run(ex.name, func(t *testing.T) {
			run := func(cmd []string, opts remotecommand.StreamOptions, tty bool) (stdout, stderr string, err error) {
				u := ts.execURL("exec", cmd, opts.Stdin != nil, true, !tty, tty)
				e, err := ex.new(ts.restConfig(), u.String())
				if err != nil {
					t.Fatal(err)
				}
				var o, eb bytes.Buffer
				opts.Stdout = &o
				if !tty {
					opts.Stderr = &eb
				}
				opts.Tty = tty
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				err = e.StreamWithContext(ctx, opts)
				return o.String(), eb.String(), err
			}

			t.Run("argv preserved", func(t *testing.T) {
				out, _, err := run([]string{"argv", "%s|", "a b", "c", "", "ü \"q\" $HOME"}, remotecommand.StreamOptions{}, false)
				if want := "%s||a b|c||ü \"q\" $HOME|"; err != nil || out != want {
					t.Errorf("got %q, %v; want %q", out, err, want)
				}
			})
			t.Run("exit code propagates", func(t *testing.T) {
				_, _, err := run([]string{"exit", "3"}, remotecommand.StreamOptions{}, false)
				var exitErr utilexec.ExitError
				if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 3 {
					t.Errorf("err = %v (%T), want exit status 3", err, err)
				}
			})
			t.Run("stdin echoed, stdin EOF delivered, stderr separate", func(t *testing.T) {
				in := strings.Repeat("hello stdin\n", 1000)
				out, errOut, err := run([]string{"cat"}, remotecommand.StreamOptions{Stdin: strings.NewReader(in)}, false)
				if err != nil || out != in || errOut != "done" {
					t.Errorf("err %v, stdout %d bytes (equal %v), stderr %q", err, len(out), out == in, errOut)
				}
			})
			t.Run("tty and resize", func(t *testing.T) {
				q := make(sizeQueue, 2)
				q <- remotecommand.TerminalSize{Width: 80, Height: 24}
				q <- remotecommand.TerminalSize{Width: 120, Height: 40}
				defer close(q)
				out, _, err := run([]string{"tty"}, remotecommand.StreamOptions{TerminalSizeQueue: q}, true)
				if want := "80x24\n120x40\n"; err != nil || strings.ReplaceAll(out, "\r", "") != want {
					t.Errorf("got %q, %v; want %q", out, err, want)
				}
				if st := ts.provider.lastExec.Load(); st == nil || !st.TTY || st.Stderr != nil {
					t.Errorf("provider streams %+v: want TTY and no stderr", st)
				}
			})
			t.Run("provider error reported", func(t *testing.T) {
				_, _, err := run([]string{"fail"}, remotecommand.StreamOptions{}, false)
				if err == nil || !strings.Contains(err.Error(), "not found") {
					t.Errorf("err = %v, want the provider's error", err)
				}
			})
		})
	}
	if sar := ts.lastSAR(); sar.Resource != "nodes" || sar.Subresource != "proxy" || sar.Name != testNode {
		t.Errorf("exec authorized as %+v, want nodes/proxy %s", sar, testNode)
	}
}

func TestAttach(t *testing.T) {
	ts := startServer(t)
	for _, ex := range executors {
		t.Run(ex.name, func(t *testing.T) {
			u := ts.execURL("attach", nil, true, true, false, false)
			e, err := ex.new(ts.restConfig(), u.String())
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = e.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: strings.NewReader("attached\n"), Stdout: &out})
			if err != nil || out.String() != "attached\n" {
				t.Errorf("attach: %q, %v", out.String(), err)
			}
		})
	}
}

func TestPortForwardTwoPorts(t *testing.T) {
	ts := startServer(t)
	ts.provider.ports[8080] = echoServer(t, "A:")
	ts.provider.ports[9090] = echoServer(t, "B:")
	local := forwardPorts(t, ts, []string{"0:8080", "0:9090"})
	var wg sync.WaitGroup
	for i, prefix := range []string{"A:", "B:"} {
		for j := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local[i]))
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				msg := fmt.Sprintf("conn %d %s\n", j, strings.Repeat("x", 100000))
				go conn.Write([]byte(msg))
				got := readLine(t, bufio.NewReader(conn))
				if got != prefix+msg {
					t.Errorf("port %d: got %.40q…, want %.40q…", i, got, prefix+msg)
				}
			}()
		}
	}
	wg.Wait()
}

// echoServer answers every line with prefix+line.
func echoServer(t testing.TB, prefix string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					io.WriteString(c, prefix+l)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// forwardPorts starts client-go's port forwarder over SPDY and returns the
// local ports, in order.
func forwardPorts(t testing.TB, ts *testServer, ports []string) []uint16 {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(ts.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ts.url + "/portForward/ns/web")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, ports, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port forward: %v", err)
	}
	t.Cleanup(func() { close(stop); <-errc })
	fp, _ := pf.GetPorts()
	var local []uint16
	for _, p := range fp {
		local = append(local, p.Local)
	}
	return local
}

func TestContainerLogs(t *testing.T) {
	ts := startServer(t)
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	os.WriteFile(ts.provider.logPath(false), []byte(criLines(start, "one", "E:two", "three")), 0o644)
	os.WriteFile(ts.provider.logPath(true), []byte(criLines(start, "previous life")), 0o644)
	ts.provider.running.Store(false)
	for _, tc := range []struct {
		query, want string
		code        int
	}{
		{"", "one\ntwo\nthree\n", 200},
		{"?tailLines=1", "three\n", 200},
		{"?sinceTime=2025-03-01T10:00:01Z", "two\nthree\n", 200},
		{"?timestamps=true&tailLines=1", "2025-03-01T10:00:02Z three\n", 200},
		{"?limitBytes=6", "one\ntw", 200},
		{"?previous=true", "previous life\n", 200},
		{"?follow=true", "one\ntwo\nthree\n", 200}, // not running: ends after the drain
		{"?sinceSeconds=1", "", 200},               // all lines are old
		{"?tailLines=-1", "", 400},
		{"?sinceSeconds=1&sinceTime=2025-03-01T10:00:01Z", "", 400},
	} {
		code, body := ts.get(t, ts.restConfig(), "/containerLogs/ns/web/app"+tc.query)
		if code != tc.code || (code == 200 && body != tc.want) {
			t.Errorf("%s: %d %q, want %d %q", tc.query, code, body, tc.code, tc.want)
		}
	}
	if code, _ := ts.get(t, ts.restConfig(), "/containerLogs/ns/web/nope"); code != 404 {
		t.Errorf("unknown container: %d, want 404", code)
	}
	if code, _ := ts.get(t, ts.restConfig(), "/containerLogs/ns/other/app"); code != 404 {
		t.Errorf("unknown pod: %d, want 404", code)
	}
	os.Remove(ts.provider.logPath(true))
	if code, _ := ts.get(t, ts.restConfig(), "/containerLogs/ns/web/app?previous=true"); code != 404 {
		t.Errorf("no previous instance: %d, want 404", code)
	}
}

func TestContainerLogsFollow(t *testing.T) {
	ts := startServer(t)
	f, _ := os.Create(ts.provider.logPath(false))
	defer f.Close()
	f.WriteString(criLines(time.Now(), "first"))
	req, _ := http.NewRequest("GET", ts.url+"/containerLogs/ns/web/app?follow=true", nil)
	resp, err := ts.httpClient(t, ts.restConfig()).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if l := readLine(t, r); l != "first\n" {
		t.Fatalf("first line %q", l)
	}
	f.WriteString(criLines(time.Now(), "second"))
	if l := readLine(t, r); l != "second\n" {
		t.Fatalf("followed line %q", l)
	}
	ts.provider.running.Store(false) // container exits: the follow ends
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after exit: %q, %v", rest, err)
	}
}

func TestAuth(t *testing.T) {
	ts := startServer(t)
	anon := &rest.Config{Host: ts.url, TLSClientConfig: rest.TLSClientConfig{CAData: ts.ca.CertPEM}}
	foreign := &rest.Config{Host: ts.url, TLSClientConfig: rest.TLSClientConfig{CAData: ts.ca.CertPEM, CertData: ts.foreignCert, KeyData: ts.foreignKey}}
	for _, tc := range []struct {
		name string
		cfg  *rest.Config
		path string
		code int
		// expected SubjectAccessReview, when one is made
		sub, node, verb string
	}{
		{"no credentials", anon, "/pods", 401, "", "", ""},
		{"certificate from another CA", foreign, "/pods", 401, "", "", ""},
		{"unknown token", ts.tokenConfig("nope"), "/pods", 401, "", "", ""},
		{"healthz needs nothing", anon, "/healthz", 200, "", "", ""},
		{"apiserver client cert", ts.restConfig(), "/pods", 200, "proxy", "", "get"},
		{"token allowed", ts.tokenConfig(aliceToken), "/stats/summary", 200, "stats", "", "get"},
		{"metrics", ts.tokenConfig(aliceToken), "/metrics/resource", 200, "metrics", "", "get"},
		{"logs of a pod: its node", ts.tokenConfig(aliceToken), "/containerLogs/ns/web/app", 200, "proxy", testNode, "get"},
		{"SAR denies", ts.tokenConfig(bobToken), "/containerLogs/ns/web/app", 403, "proxy", testNode, "get"},
		{"denied for unknown pods too (no existence leak)", ts.tokenConfig(bobToken), "/containerLogs/ns/ghost/app", 403, "proxy", "", "get"},
		{"wrong UID", ts.restConfig(), "/exec/ns/web/uid-2/app?command=x&stdout=1", 404, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.mu.Lock()
			ts.sars = nil
			ts.mu.Unlock()
			code, body := ts.get(t, tc.cfg, tc.path)
			if code != tc.code {
				t.Fatalf("%s: %d %q, want %d", tc.path, code, body, tc.code)
			}
			if tc.sub != "" {
				sar := ts.lastSAR()
				if sar.Resource != "nodes" || sar.Subresource != tc.sub || sar.Name != tc.node || sar.Verb != tc.verb {
					t.Errorf("SAR %+v, want nodes/%s name %q verb %s", sar, tc.sub, tc.node, tc.verb)
				}
			}
		})
	}
}

func TestStatsAndMetrics(t *testing.T) {
	ts := startServer(t)
	code, body := ts.get(t, ts.restConfig(), "/stats/summary")
	if code != 200 || !strings.Contains(body, `"usageCoreNanoSeconds":1500000000`) {
		t.Errorf("summary: %d %s", code, body)
	}
	code, body = ts.get(t, ts.restConfig(), "/metrics/resource")
	for _, want := range []string{
		`container_cpu_usage_seconds_total{container="app",namespace="ns",pod="web"} 1.5 1700000000000`,
		`container_memory_working_set_bytes{container="app",namespace="ns",pod="web"} 2048 1700000000000`,
		`container_start_time_seconds{container="app",namespace="ns",pod="web"} 1.69e+09`,
		`pod_cpu_usage_seconds_total{namespace="ns",pod="web"} 1.5 1700000000000`,
		`pod_memory_working_set_bytes{namespace="ns",pod="web"} 2048 1700000000000`,
		`node_cpu_usage_seconds_total 5 1700000000000`,
		`node_memory_working_set_bytes 1.073741824e+09 1700000000000`,
		"resource_scrape_error 0",
		"# TYPE container_cpu_usage_seconds_total counter",
	} {
		if code != 200 || !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// TestNoLeaks opens 20 follows and 10 blocking execs, drops the clients and
// checks that goroutines, file descriptors and provider calls come back.
func TestNoLeaks(t *testing.T) {
	ts := startServer(t)
	f, _ := os.Create(ts.provider.logPath(false))
	f.WriteString(criLines(time.Now(), "line"))
	f.Close()
	client := ts.httpClient(t, ts.restConfig())
	// Warm up caches, pools and the authenticator before the baseline.
	ts.get(t, ts.restConfig(), "/pods")
	settle := func() (int, int) {
		client.CloseIdleConnections()
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		return runtime.NumGoroutine(), openFDs(t)
	}
	g0, fd0 := settle()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+"/containerLogs/ns/web/app?follow=true", nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			bufio.NewReader(resp.Body).ReadString('\n')
			<-ctx.Done()
		}()
	}
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := remotecommand.NewSPDYExecutor(ts.restConfig(), "POST", ts.execURL("exec", []string{"sleep"}, true, true, true, false))
			if err != nil {
				t.Error(err)
				return
			}
			e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: blockingReader{ctx}, Stdout: io.Discard, Stderr: io.Discard})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.provider.active.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.provider.active.Load(); n != 10 {
		t.Fatalf("%d execs running, want 10", n)
	}
	g1 := runtime.NumGoroutine()
	cancel()
	wg.Wait()
	for ts.provider.active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.provider.active.Load(); n != 0 {
		t.Errorf("%d provider execs still running after clients left", n)
	}
	var g2, fd2 int
	for {
		g2, fd2 = settle()
		if (g2 <= g0+2 && fd2 <= fd0) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("goroutines: %d before, %d during, %d after; fds: %d before, %d after", g0, g1, g2, fd0, fd2)
	if g2 > g0+2 || fd2 > fd0 {
		buf := make([]byte, 1<<20)
		t.Errorf("leak: goroutines %d → %d, fds %d → %d\n%s", g0, g2, fd0, fd2, buf[:runtime.Stack(buf, true)])
	}
}

type blockingReader struct{ ctx context.Context }

func (b blockingReader) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, io.EOF
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	if testing.Verbose() {
		var links []string
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			links = append(links, e.Name()+"="+l)
		}
		t.Log(links)
	}
	return len(ents)
}

// TestShutdownEndsSessions checks that Serve returns promptly with a follow
// and an exec open, and that the exec's context is cancelled.
func TestShutdownEndsSessions(t *testing.T) {
	ts := startServer(t)
	os.WriteFile(ts.provider.logPath(false), []byte(criLines(time.Now(), "x")), 0o644)
	go func() {
		resp, err := ts.httpClient(t, ts.restConfig()).Get(ts.url + "/containerLogs/ns/web/app?follow=true")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	go func() {
		e, _ := remotecommand.NewSPDYExecutor(ts.restConfig(), "POST", ts.execURL("exec", []string{"sleep"}, false, true, false, false))
		e.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ts.provider.active.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	ts.stop(t)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	if n := ts.provider.active.Load(); n != 0 {
		t.Errorf("%d execs still running after shutdown", n)
	}
}
