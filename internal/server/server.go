// Package server assembles everything `vessel up` runs in one process: the embedded control
// plane, then Vessel's controller (CRDs, admission webhook, controllers) against it, then the
// default Subnet and profile. The end-to-end test harness starts the same assembly.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/pki"
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
	// runs elsewhere (`vessel controller --kubeconfig`).
	DisableController bool
	Logger            *slog.Logger
}

// Server is a running `vessel up`.
type Server struct {
	cp    *controlplane.Embedded
	ready chan struct{}
	done  chan struct{}
	err   error
}

// Start starts the control plane and, once it is ready, Vessel's controller. Like
// controlplane.Start it reports a locked data dir or a busy port at once and later failures
// through Err; it stops everything when ctx ends.
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

	ctx, cancel := context.WithCancel(ctx)
	cp, err := controlplane.Start(ctx, cfg.ControlPlane)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Server{cp: cp, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer func() { <-cp.Done() }()
		defer cancel()
		s.err = s.run(ctx, cfg, webhookListen)
		if cpErr := cp.Err(); s.err == nil || errors.Is(s.err, context.Canceled) {
			s.err = cpErr
		}
	}()
	return s, nil
}

func (s *Server) run(ctx context.Context, cfg Config, webhookListen string) error {
	select {
	case <-s.cp.Ready():
	case <-s.cp.Done():
		return s.cp.Err()
	}
	if cfg.DisableController {
		close(s.ready)
		<-s.cp.Done()
		return s.cp.Err()
	}
	p := datadir.New(cfg.ControlPlane.DataDir)
	ca, err := pki.LoadOrCreateCA(p.CACert, p.CAKey, "vessel-ca")
	if err != nil {
		return err
	}
	ctl, err := controller.New(controller.Config{
		REST: s.cp.RESTConfig(), WebhookListen: webhookListen, CA: ca,
		CertFile: p.WebhookCert, KeyFile: p.WebhookKey,
		Isolation: cfg.Isolation, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- ctl.Run(ctx) }()
	select {
	case <-ctl.Ready():
	case err := <-ctlErr:
		return fmt.Errorf("vessel controller: %w", err)
	case <-s.cp.Done():
		return s.cp.Err()
	}
	if cfg.DefaultProfile {
		c, err := client.New(s.cp.RESTConfig(), client.Options{Scheme: controller.Scheme()})
		if err != nil {
			return err
		}
		svc, err := netip.ParsePrefix(cfg.ControlPlane.ServiceCIDR)
		if err != nil {
			return fmt.Errorf("service CIDR %q: %w", cfg.ControlPlane.ServiceCIDR, err)
		}
		if err := controller.EnsureDefaults(ctx, c, svc); err != nil {
			return err
		}
	}
	close(s.ready)
	select {
	case err := <-ctlErr:
		if ctx.Err() == nil {
			return fmt.Errorf("vessel controller stopped: %w", err)
		}
		return nil
	case <-s.cp.Done():
		return s.cp.Err()
	}
}

// Ready is closed once the API and Vessel's controller serve.
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
