// Package controller runs Vessel's cluster-side components against a Kubernetes API: it installs
// Vessel's CRDs, serves and registers the admission webhook, and runs the controllers (profiles
// now; the scheduler and others plug in the same way). `vessel up` runs it against the embedded
// control plane, `vessel controller` against an existing cluster.
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/api/v1/crds"
	"github.com/vessel-dev/vessel/internal/admission"
	"github.com/vessel-dev/vessel/internal/pki"
)

// Config says how to reach the cluster and how the apiserver reaches the webhook.
type Config struct {
	// REST is the admin client configuration of the cluster.
	REST *rest.Config
	// WebhookListen is the webhook's listen address, e.g. 127.0.0.1:9443.
	WebhookListen string
	// WebhookHost is the host name or IP the apiserver dials for the webhook; empty means the
	// listen address' host. It must be in the serving certificate, which this package issues.
	WebhookHost string
	// CA signs the webhook's serving certificate and is registered as its caBundle.
	CA *pki.CA
	// CertFile and KeyFile hold the webhook's serving certificate (created or renewed on start).
	CertFile, KeyFile string
	// Isolation is what this installation's hosts provide, recorded on every admitted pod.
	Isolation vesselv1.Isolation
	// Metrics, when set, serves metrics.k8s.io (kubectl top) and registers it with the
	// aggregator. The controller closes its listener.
	Metrics *MetricsConfig
	Logger  *slog.Logger
}

// Controller is Vessel's cluster-side process. Create it with New, then Run it.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	listener net.Listener
	ready    chan struct{}
}

// New checks the configuration and opens the webhook's listener, so a busy port is reported
// before anything else starts.
func New(cfg Config) (*Controller, error) {
	if cfg.REST == nil || cfg.CA == nil || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("new controller: REST config, CA and certificate paths are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, port, err := net.SplitHostPort(cfg.WebhookListen)
	if err != nil {
		return nil, fmt.Errorf("webhook listen address %q: %w", cfg.WebhookListen, err)
	}
	if cfg.WebhookHost == "" {
		cfg.WebhookHost = host
	}
	if ip := net.ParseIP(cfg.WebhookHost); ip != nil && ip.IsUnspecified() {
		cfg.WebhookHost = "127.0.0.1"
	}
	l, err := net.Listen("tcp", cfg.WebhookListen)
	if err != nil {
		return nil, &PortInUseError{Addr: cfg.WebhookListen, Err: err}
	}
	if port == "0" { // tests: register the port actually bound
		cfg.WebhookListen = l.Addr().String()
	}
	return &Controller{cfg: cfg, log: cfg.Logger, listener: l, ready: make(chan struct{})}, nil
}

// PortInUseError reports that the webhook cannot listen where it was asked to.
type PortInUseError struct {
	Addr string
	Err  error
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("admission webhook cannot listen on %s: %v", e.Addr, e.Err)
}
func (e *PortInUseError) Unwrap() error { return e.Err }

// Ready is closed once the CRDs are installed, the webhook serves and is registered, and the
// controllers' caches are synced.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run runs everything until ctx ends or a component fails, and returns that failure.
func (c *Controller) Run(ctx context.Context) error {
	defer c.listener.Close()
	if c.cfg.Metrics != nil {
		defer c.cfg.Metrics.Listener.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctrllog.SetLogger(logr.FromSlogHandler(c.log.Handler()))

	start := time.Now()
	if err := crds.Install(ctx, c.cfg.REST); err != nil {
		return err
	}
	c.log.Debug("CRDs installed", "elapsed", time.Since(start))
	clientset, err := kubernetes.NewForConfig(c.cfg.REST)
	if err != nil {
		return fmt.Errorf("controller client: %w", err)
	}
	if err := ensureNamespace(ctx, clientset, vesselv1.SystemNamespace); err != nil {
		return err
	}

	mgr, err := ctrl.NewManager(c.cfg.REST, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 logr.FromSlogHandler(c.log.Handler()),
	})
	if err != nil {
		return fmt.Errorf("create controller manager: %w", err)
	}
	profiles := &profileReconciler{client: mgr.GetClient(), pods: mgr.GetAPIReader(), log: c.log}
	if err := profiles.setup(mgr); err != nil {
		return fmt.Errorf("set up profile controller: %w", err)
	}

	handler, err := admission.New(admission.Config{Isolation: c.cfg.Isolation, Logger: c.log},
		// Profiles from the cache: every pod CREATE lists them. Subnets straight from the API:
		// only profile and subnet writes list them, and a Subnet created a moment before its
		// profile (one kubectl apply) must already count.
		cacheLister{mgr.GetCache()}, cacheLister{mgr.GetAPIReader()},
		admission.NewSARAuthorizer(clientset.AuthorizationV1().SubjectAccessReviews()))
	if err != nil {
		return err
	}

	errs := make(chan error, 3)
	go func() { errs <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("controller caches did not sync: %w", errors.Join(ctx.Err(), drain(errs)))
	}
	c.log.Debug("manager cache synced", "elapsed", time.Since(start))
	// Listing through the cache starts an informer per type on first use; do it now so the
	// webhook's first decision does not wait for a sync.
	var pl vesselv1.VesselProfileList
	var sl vesselv1.SubnetList
	if err := errors.Join(mgr.GetCache().List(ctx, &pl), mgr.GetCache().List(ctx, &sl)); err != nil {
		return fmt.Errorf("prime caches: %w", err)
	}

	c.log.Debug("controller caches synced", "elapsed", time.Since(start))
	srv, err := c.webhookServer(handler)
	if err != nil {
		return err
	}
	go func() {
		if err := srv.ServeTLS(c.listener, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("admission webhook server: %w", err)
		}
	}()
	defer func() {
		// Admission requests take milliseconds. Past the grace, Close also ends connections
		// that have not sent a request, which Shutdown alone would wait 5 s for.
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); errors.Is(err, context.DeadlineExceeded) {
			_ = srv.Close()
		}
	}()
	if err := c.registerWebhooks(ctx); err != nil {
		return err
	}
	if c.cfg.Metrics != nil {
		stop, err := c.startMetricsAPI(ctx, clientset, mgr.GetCache(), errs)
		if err != nil {
			return err
		}
		defer stop()
	}
	close(c.ready)
	c.log.Info("vessel controller ready", "webhook", c.webhookURL())

	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// Scheme knows Kubernetes' built-in types and Vessel's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(vesselv1.AddToScheme(s))
	return s
}

func drain(errs <-chan error) error {
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func (c *Controller) webhookURL() string {
	_, port, _ := net.SplitHostPort(c.cfg.WebhookListen)
	return "https://" + net.JoinHostPort(c.cfg.WebhookHost, port)
}

func (c *Controller) webhookServer(h http.Handler) (*http.Server, error) {
	leaf := pki.Leaf{CommonName: "vessel-webhook", DNSNames: []string{"localhost", "vessel-webhook.vessel-system.svc"}, Server: true}
	if ip := net.ParseIP(c.cfg.WebhookHost); ip != nil {
		leaf.IPs = append(leaf.IPs, ip)
	} else {
		leaf.DNSNames = append(leaf.DNSNames, c.cfg.WebhookHost)
	}
	leaf.IPs = append(leaf.IPs, net.ParseIP("127.0.0.1"))
	if _, err := c.cfg.CA.EnsureLeaf(c.cfg.CertFile, c.cfg.KeyFile, leaf); err != nil {
		return nil, fmt.Errorf("webhook serving certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load webhook serving certificate: %w", err)
	}
	return &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}, nil
}

// registerWebhooks creates or replaces the webhook configurations so they point at this
// process with the current CA bundle.
func (c *Controller) registerWebhooks(ctx context.Context) error {
	opts := admission.WebhookOptions{URL: c.webhookURL(), CABundle: c.cfg.CA.CertPEM}
	mwc, err := admission.MutatingWebhookConfiguration(opts)
	if err != nil {
		return err
	}
	vwc, err := admission.ValidatingWebhookConfiguration(opts)
	if err != nil {
		return err
	}
	cl, err := client.New(c.cfg.REST, client.Options{Scheme: Scheme()})
	if err != nil {
		return fmt.Errorf("register webhooks: %w", err)
	}
	for _, o := range []client.Object{mwc, vwc} {
		if err := createOrReplace(ctx, cl, o); err != nil {
			return fmt.Errorf("register %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// createOrReplace creates o, or replaces the existing object of that name with it.
func createOrReplace(ctx context.Context, cl client.Client, o client.Object) error {
	existing := o.DeepCopyObject().(client.Object)
	switch err := cl.Get(ctx, client.ObjectKeyFromObject(o), existing); {
	case apierrors.IsNotFound(err):
		return cl.Create(ctx, o)
	case err != nil:
		return err
	}
	o.SetResourceVersion(existing.GetResourceVersion())
	return cl.Update(ctx, o)
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// cacheLister serves the webhook's profile and subnet lists from the controller cache.
type cacheLister struct{ c client.Reader }

func (l cacheLister) ListProfiles(ctx context.Context) ([]vesselv1.VesselProfile, error) {
	var list vesselv1.VesselProfileList
	if err := l.c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	return list.Items, nil
}

func (l cacheLister) ListSubnets(ctx context.Context) ([]vesselv1.Subnet, error) {
	var list vesselv1.SubnetList
	if err := l.c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	return list.Items, nil
}
