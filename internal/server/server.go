// Package server assembles everything `vessel up` runs in one process: the local registry, the
// embedded control plane, then Vessel's controller (CRDs, admission webhook, controllers), the
// default Subnet and profile, the scheduler and this machine's host agent. The end-to-end test
// harness starts the same assembly, leaving out what its tests start themselves.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/pki"
	"github.com/vessel-dev/vessel/internal/registry"
	"github.com/vessel-dev/vessel/internal/scheduler"
)

// Config is what `vessel up` is told.
type Config struct {
	ControlPlane controlplane.Config
	// WebhookPort is the admission webhook's loopback port (the apiserver is in this process).
	// 0 picks a free one.
	WebhookPort int
	// Isolation is what this machine's runtime provides.
	Isolation vesselv1.Isolation
	// DefaultProfile creates the Subnet and VesselProfile "default" for namespace default.
	DefaultProfile bool
	// DisableController runs the control plane alone, for clusters whose Vessel controller
	// runs elsewhere (`vessel controller --kubeconfig`); it implies no scheduler and no host.
	DisableController bool
	// DisableHost and DisableScheduler leave out this machine's host agent and the scheduler
	// (the test harness starts its own instances of them).
	DisableHost, DisableScheduler bool
	// RegistryPort is the local OCI registry's loopback port; 0 picks a free one, -1 disables it.
	RegistryPort int
	// MetricsPort is where the controller serves metrics.k8s.io (kubectl top) to the
	// apiserver's aggregator, on the host address (EndpointSlices refuse loopback ones); 0
	// picks a free one, -1 disables it.
	MetricsPort int
	// KubeletPort is where this machine's host serves the kubelet API (every interface); 0
	// picks a free one.
	KubeletPort int
	// HostName and HostAddress identify this machine as a Host; defaults: the host name and the
	// control plane's advertise address.
	HostName, HostAddress string
	// CPUOvercommit multiplies this machine's CPUs in its Host capacity (see hostagent.Config).
	CPUOvercommit, MemoryOvercommit, DiskOvercommit float64
	// ShimArgv starts the oci runtime's per-container shim; default: oci.DefaultShimArgv.
	ShimArgv []string
	Logger   *slog.Logger
}

// RegistryPortError reports that the local registry cannot listen.
type RegistryPortError struct{ Err error }

func (e *RegistryPortError) Error() string { return e.Err.Error() }
func (e *RegistryPortError) Unwrap() error { return e.Err }

// Server is a running `vessel up`.
type Server struct {
	cp        *controlplane.Embedded
	registry  *registry.Server
	kubeletLn net.Listener
	metricsLn net.Listener
	ready     chan struct{}
	done      chan struct{}
	err       error
}

// Start starts the local registry and the control plane and, once the API is ready, the rest in
// the background. It reports a locked data dir or a busy port at once, and later failures through
// Err. When ctx ends, Vessel's parts stop first, then the control plane.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.ControlPlane.Logger = cfg.Logger
	cfg.ControlPlane.Defaults()
	webhookListen := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.WebhookPort))
	// Check the webhook port before starting anything: failing later would leave the user with
	// a half-started cluster to diagnose.
	if cfg.WebhookPort != 0 && !cfg.DisableController {
		l, err := net.Listen("tcp", webhookListen)
		if err != nil {
			return nil, &controller.PortInUseError{Addr: webhookListen, Err: err}
		}
		l.Close()
	}
	var reg *registry.Server
	if cfg.RegistryPort >= 0 {
		var err error
		reg, err = registry.New(datadir.New(cfg.ControlPlane.DataDir).Registry, registry.Options{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.RegistryPort)), Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		if err := reg.Start(); err != nil {
			return nil, &RegistryPortError{Err: err}
		}
	}

	var kubeletLn net.Listener
	if !cfg.DisableHost && !cfg.DisableController {
		var err error
		if kubeletLn, err = listenKubelet(cfg.KubeletPort); err != nil {
			if reg != nil {
				reg.Close()
			}
			return nil, err
		}
	}

	closeAll := func() {
		if reg != nil {
			reg.Close()
		}
		if kubeletLn != nil {
			kubeletLn.Close()
		}
	}
	var metricsLn net.Listener
	if !cfg.DisableController && cfg.MetricsPort >= 0 {
		var err error
		if metricsLn, err = listenMetrics(cfg); err != nil {
			closeAll()
			return nil, err
		}
		if metricsLn == nil {
			cfg.Logger.Warn("kubectl top disabled: no non-loopback address for the metrics API (set --advertise-address)")
		}
	}

	cpCtx, cpCancel := context.WithCancel(context.Background())
	cp, err := controlplane.Start(cpCtx, cfg.ControlPlane)
	if err != nil {
		cpCancel()
		closeAll()
		if metricsLn != nil {
			metricsLn.Close()
		}
		return nil, err
	}
	s := &Server{cp: cp, registry: reg, kubeletLn: kubeletLn, metricsLn: metricsLn, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if kubeletLn != nil {
			defer kubeletLn.Close()
		}
		if metricsLn != nil {
			defer metricsLn.Close() // also closed by the controller
		}
		s.err = s.run(ctx, cfg, webhookListen)
		cpCancel()
		<-cp.Done()
		if reg != nil {
			reg.Close()
		}
		if cpErr := cp.Err(); s.err == nil {
			s.err = cpErr
		}
	}()
	return s, nil
}

// run starts Vessel's parts once the API is ready and returns when ctx ends (after they have
// stopped) or when one of them or the control plane fails.
func (s *Server) run(ctx context.Context, cfg Config, webhookListen string) error {
	select {
	case <-s.cp.Ready():
	case <-s.cp.Done():
		return s.cp.Err()
	case <-ctx.Done():
		return nil
	}
	if cfg.DisableController {
		close(s.ready)
		select {
		case <-s.cp.Done():
			return s.cp.Err()
		case <-ctx.Done():
			return nil
		}
	}

	// Deferred in this order so that, on any return, the parts are first told to stop and then
	// waited for: they stop before run returns, and so before the control plane.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 4)
	goPart := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(ctx)
			if ctx.Err() == nil {
				failed <- fmt.Errorf("%s stopped: %w", name, orStopped(err))
			}
		}()
	}
	// waitFor waits for a part to be ready, or for a failure.
	waitFor := func(ready <-chan struct{}) error {
		select {
		case <-ready:
			return nil
		case err := <-failed:
			return err
		case <-s.cp.Done():
			return s.cp.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	p := datadir.New(cfg.ControlPlane.DataDir)
	ca, err := pki.LoadOrCreateCA(p.CACert, p.CAKey, "vessel-ca")
	if err != nil {
		return err
	}
	rest := s.cp.RESTConfig()
	var metrics *controller.MetricsConfig
	if s.metricsLn != nil {
		frontProxyCA, err := os.ReadFile(p.FrontProxyCACert)
		if err != nil {
			return fmt.Errorf("metrics API: %w", err)
		}
		metrics = &controller.MetricsConfig{
			Listener: s.metricsLn, CertFile: p.MetricsCert, KeyFile: p.MetricsKey,
			FrontProxyCAPEM:       frontProxyCA,
			KubeletClientCertFile: p.KubeletClientCert, KubeletClientKeyFile: p.KubeletClientKey,
		}
	}
	ctl, err := controller.New(controller.Config{
		REST: rest, WebhookListen: webhookListen, CA: ca,
		CertFile: p.WebhookCert, KeyFile: p.WebhookKey,
		Isolation: cfg.Isolation, Metrics: metrics, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	goPart("vessel controller", ctl.Run)
	if err := waitFor(ctl.Ready()); err != nil {
		return ignoreCancel(err)
	}
	if cfg.DefaultProfile {
		if err := ensureDefaults(ctx, rest, cfg.ControlPlane.ServiceCIDR); err != nil {
			return err
		}
	}
	if !cfg.DisableScheduler {
		sched, err := scheduler.New(scheduler.Config{RESTConfig: rest, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		goPart("vessel-scheduler", sched.Run)
		if err := waitFor(sched.Ready()); err != nil {
			return ignoreCancel(err)
		}
	}
	if !cfg.DisableHost {
		h, err := newHost(cfg, p, rest, ca, s.kubeletLn)
		if err != nil {
			return err
		}
		goPart("host agent", h.agent.Run)
		if err := waitFor(h.agent.Ready()); err != nil {
			return ignoreCancel(err)
		}
		goPart("kubelet API", h.serveKubelet)
	}
	close(s.ready)
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	case <-s.cp.Done():
		return s.cp.Err()
	}
}

func ignoreCancel(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func orStopped(err error) error {
	if err == nil {
		return errors.New("exited unexpectedly")
	}
	return err
}

func ensureDefaults(ctx context.Context, cfg *rest.Config, serviceCIDR string) error {
	c, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		return err
	}
	svc, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return fmt.Errorf("service CIDR %q: %w", serviceCIDR, err)
	}
	return controller.EnsureDefaults(ctx, c, svc)
}

// Ready is closed once the API and every part of Vessel serve.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Done is closed once everything has stopped.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the first failure, or nil after a requested shutdown; valid once Done is closed.
func (s *Server) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// RESTConfig returns a new admin client configuration.
func (s *Server) RESTConfig() *rest.Config { return s.cp.RESTConfig() }

// Kubeconfig is the admin kubeconfig's path.
func (s *Server) Kubeconfig() string { return s.cp.Kubeconfig() }

// RegistryAddr is the local registry's address ("" when disabled).
func (s *Server) RegistryAddr() string {
	if s.registry == nil {
		return ""
	}
	return s.registry.Addr()
}

// hostName is the default Host name: the machine's host name.
func hostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
