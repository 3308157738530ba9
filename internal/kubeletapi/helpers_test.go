package kubeletapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/vessel-dev/vessel/internal/pki"
	"github.com/vessel-dev/vessel/internal/runtime"
)

const (
	testNode   = "vessel-10-0-0-5"
	aliceToken = "alice-token" // allowed by the fake SubjectAccessReview
	bobToken   = "bob-token"   // denied
)

// fakeProvider runs a pod "ns/web" (container "app") whose "commands" are
// implemented in-process, and forwards ports to real TCP listeners.
type fakeProvider struct {
	pod      *corev1.Pod
	logDir   string
	running  atomic.Bool
	ports    map[int32]string // pod port → address of a local listener
	active   atomic.Int64     // Exec/Attach/PortForward calls in progress
	lastExec atomic.Pointer[Streams]
}

func newFakeProvider(t testing.TB) *fakeProvider {
	p := &fakeProvider{
		pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "uid-1"},
			Spec:       corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app"}}},
		},
		logDir: t.TempDir(),
		ports:  map[int32]string{},
	}
	p.running.Store(true)
	return p
}

func (p *fakeProvider) Pod(ns, name string) (*corev1.Pod, bool) {
	if ns == p.pod.Namespace && name == p.pod.Name {
		return p.pod, true
	}
	return nil, false
}

func (p *fakeProvider) Pods() []*corev1.Pod { return []*corev1.Pod{p.pod} }

func (p *fakeProvider) logPath(previous bool) string {
	if previous {
		return filepath.Join(p.logDir, "app.0.log")
	}
	return filepath.Join(p.logDir, "app.1.log")
}

func (p *fakeProvider) ContainerLog(_ context.Context, _ *corev1.Pod, _ string, previous bool) (LogFile, error) {
	if previous {
		if _, err := os.Stat(p.logPath(true)); err != nil {
			return LogFile{}, fmt.Errorf("no previous instance: %w", runtime.ErrNotFound)
		}
		return LogFile{Path: p.logPath(true)}, nil
	}
	return LogFile{Path: p.logPath(false), Running: p.running.Load}, nil
}

// Exec understands:
//
//	argv …       writes its argv, each element followed by "|"
//	exit N       exits with N
//	cat          copies stdin to stdout, then writes "done" to stderr
//	tty          writes the first two terminal sizes
//	sleep        blocks until ctx is cancelled
//	fail         cannot run
func (p *fakeProvider) Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, s Streams) (int, error) {
	p.active.Add(1)
	defer p.active.Add(-1)
	p.lastExec.Store(&s)
	switch cmd[0] {
	case "argv":
		for _, a := range cmd[1:] {
			io.WriteString(s.Stdout, a+"|")
		}
		return 0, nil
	case "exit":
		n, _ := strconv.Atoi(cmd[1])
		return n, nil
	case "cat":
		if _, err := io.Copy(s.Stdout, s.Stdin); err != nil {
			return 1, nil
		}
		io.WriteString(s.Stderr, "done")
		return 0, nil
	case "tty":
		for range 2 {
			size, ok := <-s.Resize
			if !ok {
				return 1, nil
			}
			fmt.Fprintf(s.Stdout, "%dx%d\n", size.Width, size.Height)
		}
		return 0, nil
	case "sleep":
		<-ctx.Done()
		return 137, nil
	case "fail":
		return 0, fmt.Errorf("container %s: %w", container, runtime.ErrNotFound)
	}
	return 127, nil
}

func (p *fakeProvider) Attach(ctx context.Context, _ *corev1.Pod, _ string, s Streams) error {
	p.active.Add(1)
	defer p.active.Add(-1)
	_, err := io.Copy(s.Stdout, s.Stdin)
	return err
}

func (p *fakeProvider) PortForward(ctx context.Context, _ *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	p.active.Add(1)
	defer p.active.Add(-1)
	addr, ok := p.ports[port]
	if !ok {
		return fmt.Errorf("port %d: %w", port, runtime.ErrNotFound)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return ProxyStream(ctx, stream, conn)
}

func (p *fakeProvider) Stats(context.Context) (*statsv1alpha1.Summary, error) {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	u64 := func(v uint64) *uint64 { return &v }
	return &statsv1alpha1.Summary{
		Node: statsv1alpha1.NodeStats{NodeName: "host-a",
			CPU:    &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: u64(5e9)},
			Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: u64(1 << 30)}},
		Pods: []statsv1alpha1.PodStats{{
			PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "web", UID: "uid-1"},
			CPU:    &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: u64(1500000000)},
			Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: u64(2048)},
			Containers: []statsv1alpha1.ContainerStats{{
				Name: "app", StartTime: metav1.NewTime(time.Unix(1690000000, 0)),
				CPU:    &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: u64(1500000000)},
				Memory: &statsv1alpha1.MemoryStats{Time: now, WorkingSetBytes: u64(2048)},
			}},
		}},
	}, nil
}

// testServer is a running Server on loopback with the real delegating
// authn/authz over a fake clientset.
type testServer struct {
	url      string
	ca       *pki.CA
	provider *fakeProvider
	// certs: the apiserver's kubelet-client certificate, and one from
	// another CA.
	clientCert, foreignCert, foreignKey, clientKey []byte
	mu                                             sync.Mutex
	sars                                           []authorizationv1.ResourceAttributes
	cancel                                         context.CancelFunc
	stopOnce                                       sync.Once
	done                                           chan error
}

func startServer(t testing.TB) *testServer {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadOrCreateCA(filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key"), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{ca: ca, provider: newFakeProvider(t), done: make(chan error, 1)}
	client := func(c *pki.CA, name string) (cert, key []byte) {
		certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if _, err := c.EnsureLeaf(certFile, keyFile, pki.Leaf{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}); err != nil {
			t.Fatal(err)
		}
		cert, _ = os.ReadFile(certFile)
		key, _ = os.ReadFile(keyFile)
		return cert, key
	}
	ts.clientCert, ts.clientKey = client(ca, "apiserver-kubelet-client")
	ts.foreignCert, ts.foreignKey = client(other, "foreign")

	// A stand-in apiserver answering TokenReview and SubjectAccessReview,
	// so the real delegating authenticator/authorizer run over client-go.
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch req.URL.Path {
		case "/apis/authentication.k8s.io/v1/tokenreviews":
			var tr authenticationv1.TokenReview
			json.NewDecoder(req.Body).Decode(&tr)
			switch tr.Spec.Token {
			case aliceToken:
				tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice"}}
			case bobToken:
				tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "bob"}}
			}
			tr.Kind, tr.APIVersion = "TokenReview", "authentication.k8s.io/v1"
			json.NewEncoder(w).Encode(tr)
		case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
			var sar authorizationv1.SubjectAccessReview
			json.NewDecoder(req.Body).Decode(&sar)
			ts.mu.Lock()
			ts.sars = append(ts.sars, *sar.Spec.ResourceAttributes)
			ts.mu.Unlock()
			sar.Status.Allowed = sar.Spec.User != "bob"
			if !sar.Status.Allowed {
				sar.Status.Reason = "bob may not"
			}
			sar.Kind, sar.APIVersion = "SubjectAccessReview", "authorization.k8s.io/v1"
			json.NewEncoder(w).Encode(sar)
		default:
			http.NotFound(w, req)
		}
	}))
	// No keep-alive: pooled review connections would blur the fd counts
	// of the leak test.
	api.Config.SetKeepAlivesEnabled(false)
	api.Start()
	t.Cleanup(api.Close)
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, QPS: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	authn, authz, err := DelegatingAuth(kube, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ServingCertificate(ca, filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key"), "host-a", []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		Provider: ts.provider, TLS: NewTLSConfig(cert), Authenticator: authn, Authorizer: authz,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.url = "https://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	<-srv.Ready()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	ts.stopOnce.Do(func() {
		ts.cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after shutdown")
		}
	})
}

// restConfig authenticates like the apiserver does towards kubelets.
func (ts *testServer) restConfig() *rest.Config {
	return &rest.Config{Host: ts.url, TLSClientConfig: rest.TLSClientConfig{CAData: ts.ca.CertPEM, CertData: ts.clientCert, KeyData: ts.clientKey}}
}

func (ts *testServer) tokenConfig(token string) *rest.Config {
	return &rest.Config{Host: ts.url, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ts.ca.CertPEM}}
}

func (ts *testServer) httpClient(t testing.TB, cfg *rest.Config) *http.Client {
	t.Helper()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: rt}
}

func (ts *testServer) get(t testing.TB, cfg *rest.Config, path string) (int, string) {
	t.Helper()
	c := ts.httpClient(t, cfg)
	resp, err := c.Get(ts.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (ts *testServer) lastSAR() authorizationv1.ResourceAttributes {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.sars) == 0 {
		return authorizationv1.ResourceAttributes{}
	}
	return ts.sars[len(ts.sars)-1]
}

// execURL builds /exec/ns/web/app?command=…
func (ts *testServer) execURL(kind string, cmd []string, stdin, stdout, stderr, tty bool) *url.URL {
	q := url.Values{}
	for _, c := range cmd {
		q.Add("command", c)
	}
	for name, on := range map[string]bool{"input": stdin, "output": stdout, "error": stderr, "tty": tty} { // the apiserver's parameter names
		if on {
			q.Set(name, "1")
		}
	}
	u, _ := url.Parse(ts.url + "/" + kind + "/ns/web/app?" + q.Encode())
	return u
}

// criLines renders CRI records for the given lines, one second apart.
func criLines(start time.Time, lines ...string) string {
	var b strings.Builder
	for i, l := range lines {
		stream := "stdout"
		if strings.HasPrefix(l, "E:") {
			stream, l = "stderr", strings.TrimPrefix(l, "E:")
		}
		fmt.Fprintf(&b, "%s %s F %s\n", start.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), stream, l)
	}
	return b.String()
}

// sizeQueue feeds terminal sizes to client-go until closed.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

// readLine reads one line from r or fails after a timeout.
func readLine(t testing.TB, r *bufio.Reader) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		l, _ := r.ReadString('\n')
		ch <- l
	}()
	select {
	case l := <-ch:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line within 10s")
		return ""
	}
}
