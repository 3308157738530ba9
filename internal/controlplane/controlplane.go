// Package controlplane runs Kubernetes' control plane inside the vessel process, the way k3s does:
// an embedded etcd, kube-apiserver and kube-controller-manager, started in order through their
// Options → Config → Run functions (their cobra commands cannot share a process), with readiness
// handed from one to the next and one shutdown path for all of them.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/pki"
)

// Config says where the control plane keeps its state and where it listens.
type Config struct {
	// DataDir holds etcd's data, certificates and kubeconfigs; see package datadir.
	DataDir string
	// BindAddress is where kube-apiserver listens ("0.0.0.0": every interface, so sandboxes on
	// this machine reach it through their gateway).
	BindAddress string
	// APIPort is kube-apiserver's HTTPS port.
	APIPort int
	// EtcdClientPort and EtcdPeerPort are etcd's loopback ports.
	EtcdClientPort, EtcdPeerPort int
	// AdvertiseAddress is the address published in the `kubernetes` Service's endpoints; empty
	// picks the machine's first global IPv4 address.
	AdvertiseAddress string
	// ServiceCIDR is the ClusterIP range of Services.
	ServiceCIDR string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags (later ones win).
	ExtraAPIServerArgs []string
	// Logger receives Vessel's own messages about the control plane. Components' logs (klog,
	// etcd's zap) go to files under DataDir/logs so the terminal stays readable.
	Logger *slog.Logger
}

// Defaults fills the zero fields with the values `vessel up` uses.
func (c *Config) Defaults() {
	if c.BindAddress == "" {
		c.BindAddress = "0.0.0.0"
	}
	if c.APIPort == 0 {
		c.APIPort = 6443
	}
	if c.EtcdClientPort == 0 {
		c.EtcdClientPort = 2379
	}
	if c.EtcdPeerPort == 0 {
		c.EtcdPeerPort = 2380
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.43.0.0/16"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// clientHost is the address written into kubeconfigs: the bind address, unless that is a wildcard.
func (c Config) clientHost() string {
	if ip := net.ParseIP(c.BindAddress); ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return c.BindAddress
}

// ControlPlane is a Kubernetes API that Vessel's controllers run against: the embedded one of
// `vessel up`, or an existing cluster's for `vessel controller`.
type ControlPlane interface {
	// Ready is closed once the API serves requests (/readyz ok) and its controllers run.
	Ready() <-chan struct{}
	// Done is closed once every component has stopped; Err then says why.
	Done() <-chan struct{}
	// Err is nil while running and after a shutdown that was asked for; otherwise the first
	// component failure, which also stopped every other component.
	Err() error
	// RESTConfig returns a new admin client configuration; the caller owns it.
	RESTConfig() *rest.Config
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig() string
}

// PortInUseError reports a port another process already listens on.
type PortInUseError struct {
	Component string // "kube-apiserver", "etcd client", "etcd peer"
	Addr      string
	Err       error
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("%s port %s is already in use", e.Component, e.Addr)
}
func (e *PortInUseError) Unwrap() error { return e.Err }

var started atomic.Bool

// Embedded is the in-process control plane. Start it with Start; stop it by cancelling the
// context given to Start, then wait on Done.
type Embedded struct {
	cfg   Config
	paths datadir.Paths
	log   *slog.Logger

	ready chan struct{}
	done  chan struct{}
	err   error

	lock *datadir.Lock
}

var _ ControlPlane = (*Embedded)(nil)

// Start validates the configuration, takes the data directory's lock, creates missing
// certificates and starts etcd, kube-apiserver and kube-controller-manager in the background.
// It returns at once with an error for a locked data dir or a busy port, and otherwise leaves
// later failures to Err. Kubernetes' components keep process-wide state (feature gates, klog,
// metrics registries), so Start succeeds at most once per process.
func Start(ctx context.Context, cfg Config) (*Embedded, error) {
	cfg.Defaults()
	if cfg.DataDir == "" {
		return nil, errors.New("start control plane: no data directory given")
	}
	if !started.CompareAndSwap(false, true) {
		return nil, errors.New("start control plane: already started in this process")
	}
	p := datadir.New(cfg.DataDir)
	lock, err := p.Acquire()
	if err != nil {
		started.Store(false)
		return nil, err
	}
	e := &Embedded{cfg: cfg, paths: p, log: cfg.Logger, ready: make(chan struct{}), done: make(chan struct{}), lock: lock}
	fail := func(err error) (*Embedded, error) {
		lock.Unlock()
		started.Store(false)
		return nil, err
	}

	if cfg.AdvertiseAddress == "" {
		e.cfg.AdvertiseAddress = DefaultAdvertiseAddress()
	}
	// Check the etcd ports before anything writes; the apiserver's listener is opened here and
	// handed over, so its port cannot be taken in between.
	for _, pc := range []struct {
		name string
		port int
	}{{"etcd client", cfg.EtcdClientPort}, {"etcd peer", cfg.EtcdPeerPort}} {
		if err := checkPort("127.0.0.1", pc.port, pc.name); err != nil {
			return fail(err)
		}
	}
	apiListener, err := listen(cfg.BindAddress, cfg.APIPort, "kube-apiserver")
	if err != nil {
		return fail(err)
	}
	if err := setupLogging(p); err != nil {
		apiListener.Close()
		return fail(err)
	}
	if _, err := ensureCertificates(p, cfg); err != nil {
		apiListener.Close()
		return fail(fmt.Errorf("prepare certificates in %s: %w", p.Root, err))
	}

	go e.run(ctx, apiListener)
	return e, nil
}

func (e *Embedded) run(ctx context.Context, apiListener net.Listener) {
	defer func() {
		e.lock.Unlock()
		close(e.done)
	}()
	start := time.Now()
	// failed receives each component's unexpected exit; the first one stops everything.
	failed := make(chan error, 8)
	// stops holds one function per started component. They run in reverse start order, so
	// the controller-manager finishes its start-up calls before the apiserver goes, and the
	// apiserver drains before etcd closes.
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()

	// etcd starts while the rest is prepared: kube-apiserver's configuration needs no storage, and
	// its first storage connection waits for etcd (a blocking dial), so the two overlap safely.
	// On a fresh data directory the service-account key (RSA, the slowest to generate) is made in
	// the same window.
	var (
		etcd         *embed.Etcd
		etcdErr      error
		etcdStarted  = make(chan struct{})
		etcdStopping = make(chan struct{})
	)
	go func() {
		defer close(etcdStarted)
		etcd, etcdErr = startEtcd(ctx, e.paths, e.cfg)
	}()
	waitEtcd := func() error {
		<-etcdStarted
		return etcdErr
	}
	stops = append(stops, func() {
		if waitEtcd() == nil {
			close(etcdStopping)
			etcd.Close()
		}
	})
	saKey := make(chan error, 1)
	go func() { saKey <- pki.EnsureRSAKey(e.paths.ServiceAccountKey, e.paths.ServiceAccountPub) }()

	// The controller-manager's options must exist before the apiserver's: building them changes a
	// process-wide feature gate default that panics once the apiserver has registered it.
	kcm, err := newControllerManager(e.paths)
	if err == nil {
		err = <-saKey
	}
	var api runner
	if err == nil {
		api, err = newAPIServer(ctx, e.paths, e.cfg, apiListener, func() error {
			if err := waitEtcd(); err != nil {
				return err
			}
			e.log.Debug("etcd ready", "elapsed", time.Since(start))
			go func() {
				select {
				case err := <-etcd.Err():
					failed <- fmt.Errorf("etcd stopped: %w", orStopped(err))
				case <-etcdStopping:
				}
			}()
			return nil
		})
	}
	if err != nil {
		apiListener.Close()
		e.err = err
		return
	}
	e.log.Debug("kube-apiserver configured", "elapsed", time.Since(start))
	stops = append(stops, e.goRun("kube-apiserver", api.Run, failed))
	if err := e.waitAPIReady(ctx, failed); err != nil {
		e.err = err
		return
	}
	e.log.Debug("kube-apiserver ready", "elapsed", time.Since(start))

	stops = append(stops, e.goRun("kube-controller-manager", kcm.run, failed, kcm.started))
	select {
	case <-kcm.started:
	case err := <-failed:
		e.err = err
		return
	case <-ctx.Done():
		return
	}
	e.log.Debug("kube-controller-manager started", "elapsed", time.Since(start))
	close(e.ready)
	select {
	case <-ctx.Done():
	case err := <-failed:
		e.err = err
	}
}

// componentStopTimeout bounds the wait for one component after its context is cancelled.
const componentStopTimeout = 5 * time.Second

// goRun runs a component until the returned stop function is called, reporting an exit that
// was not asked for on failed. stop waits for each of startedFirst to close (a component that
// must not be interrupted while starting), then cancels the component and waits for it to
// return, each wait within bounds.
func (e *Embedded) goRun(name string, run func(ctx context.Context) error, failed chan<- error, startedFirst ...<-chan struct{}) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		err := run(ctx)
		if ctx.Err() == nil {
			failed <- fmt.Errorf("%s stopped: %w", name, orStopped(err))
		}
	}()
	return func() {
		for _, started := range startedFirst {
			select {
			case <-started:
			case <-exited:
			case <-time.After(componentStopTimeout):
			}
		}
		cancel()
		select {
		case <-exited:
		case <-time.After(componentStopTimeout):
			e.log.Warn("component did not stop in time; going on with shutdown", "component", name, "waited", componentStopTimeout)
		}
	}
}

func orStopped(err error) error {
	if err == nil {
		return errors.New("exited unexpectedly")
	}
	return err
}

// waitAPIReady polls /readyz until it answers ok, giving up when ctx ends or a component fails.
func (e *Embedded) waitAPIReady(ctx context.Context, failed <-chan error) error {
	client, err := kubernetes.NewForConfig(e.RESTConfig())
	if err != nil {
		return fmt.Errorf("wait for kube-apiserver: %w", err)
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for kube-apiserver /readyz: %w", ctx.Err())
		case err := <-failed:
			return err
		case <-tick.C:
		}
	}
}

func (e *Embedded) Ready() <-chan struct{} { return e.ready }
func (e *Embedded) Done() <-chan struct{}  { return e.done }
func (e *Embedded) Kubeconfig() string     { return e.paths.Kubeconfig }

func (e *Embedded) Err() error {
	select {
	case <-e.done:
		return e.err // written only by run, before done is closed
	default:
		return nil
	}
}

func (e *Embedded) RESTConfig() *rest.Config {
	cfg, err := clientcmd.BuildConfigFromFlags("", e.paths.Kubeconfig)
	if err != nil {
		// Start wrote this file before returning; failing to read it back is a broken disk.
		panic(fmt.Sprintf("read admin kubeconfig %s: %v", e.paths.Kubeconfig, err))
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

func listen(host string, port int, component string) (net.Listener, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, &PortInUseError{Component: component, Addr: addr, Err: err}
		}
		return nil, fmt.Errorf("listen on %s for %s: %w", addr, component, err)
	}
	return l, nil
}

func checkPort(host string, port int, component string) error {
	l, err := listen(host, port, component)
	if err != nil {
		return err
	}
	return l.Close()
}
