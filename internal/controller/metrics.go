package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/metricsapi"
	"github.com/vessel-dev/vessel/internal/pki"
)

// MetricsConfig serves metrics.k8s.io (kubectl top) from the controller as an aggregated API.
type MetricsConfig struct {
	// Listener is the metrics API's listener, opened by the caller so a busy port is reported
	// before anything starts. Its address, or Host, is published in an EndpointSlice.
	Listener net.Listener
	// Host is the IP the apiserver dials (EndpointSlices refuse loopback addresses); empty means
	// the listener's.
	Host string
	// CertFile and KeyFile hold the serving certificate, issued from the cluster CA on start.
	CertFile, KeyFile string
	// FrontProxyCAPEM is the apiserver's --requestheader-client-ca-file: the CA of the client
	// certificate the aggregator presents.
	FrontProxyCAPEM []byte
	// KubeletClientCertFile and KeyFile are presented to the hosts' kubelet APIs, which accept
	// cluster-CA certificates authorized for nodes/stats.
	KubeletClientCertFile, KubeletClientKeyFile string
	// ScrapeInterval is how often hosts are scraped; default 10 s.
	ScrapeInterval time.Duration
}

// Names of what registers the metrics API.
const (
	MetricsServiceName = "vessel-metrics"
	MetricsAPIService  = "v1beta1.metrics.k8s.io"
)

// MetricsPortError reports that the metrics API cannot listen where it was asked to.
type MetricsPortError struct {
	Addr string
	Err  error
}

func (e *MetricsPortError) Error() string {
	return fmt.Sprintf("metrics API cannot listen on %s: %v", e.Addr, e.Err)
}
func (e *MetricsPortError) Unwrap() error { return e.Err }

// metricsAPI is the running metrics API: its HTTPS server and its scraper.
type metricsAPI struct {
	srv     *http.Server
	scraper *metricsapi.Scraper
	host    string
	port    int
}

func (c *Controller) newMetricsAPI(cs kubernetes.Interface, reader client.Reader) (*metricsAPI, error) {
	mc := c.cfg.Metrics
	addr := mc.Listener.Addr().(*net.TCPAddr)
	host := mc.Host
	if host == "" {
		host = addr.IP.String()
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return nil, fmt.Errorf("metrics API address %q: the apiserver must reach it at a non-loopback IP (EndpointSlices refuse loopback)", host)
	}
	leaf := pki.Leaf{CommonName: MetricsServiceName, Server: true,
		// The aggregator verifies the service's DNS name, whatever address it dials.
		DNSNames: []string{MetricsServiceName + "." + vesselv1.SystemNamespace + ".svc", "localhost"},
		IPs:      []net.IP{ip, net.ParseIP("127.0.0.1")}}
	if _, err := c.cfg.CA.EnsureLeaf(mc.CertFile, mc.KeyFile, leaf); err != nil {
		return nil, fmt.Errorf("metrics API serving certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(mc.CertFile, mc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load metrics API serving certificate: %w", err)
	}
	clientCert, err := tls.LoadX509KeyPair(mc.KubeletClientCertFile, mc.KubeletClientKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load kubelet client certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.cfg.CA.CertPEM) {
		return nil, errors.New("metrics API: cluster CA has no certificate")
	}
	authn, authz, err := metricsapi.FrontProxyAuth(cs, mc.FrontProxyCAPEM)
	if err != nil {
		return nil, err
	}
	log := c.log.With("component", "metrics-api")
	scraper := metricsapi.NewScraper(metricsapi.ScraperConfig{
		Hosts: func(ctx context.Context) ([]string, error) { return hostURLs(ctx, reader) },
		Pods:  func(ctx context.Context) ([]metricsapi.PodInfo, error) { return podInfos(ctx, reader) },
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12}}},
		Interval: mc.ScrapeInterval,
		Logger:   log,
	})
	srv := &http.Server{
		Handler: &metricsapi.Handler{Source: scraper, Authenticator: authn, Authorizer: authz, Logger: log},
		// Client certificates are requested, and verified by the request-header authenticator.
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return &metricsAPI{srv: srv, scraper: scraper, host: host, port: addr.Port}, nil
}

// hostURLs lists the kubelet API base URLs of all Hosts.
func hostURLs(ctx context.Context, r client.Reader) ([]string, error) {
	var hosts vesselv1.HostList
	if err := r.List(ctx, &hosts); err != nil {
		return nil, err
	}
	urls := make([]string, 0, len(hosts.Items))
	for _, h := range hosts.Items {
		urls = append(urls, "https://"+net.JoinHostPort(h.Spec.Address, strconv.Itoa(int(h.Spec.KubeletPort))))
	}
	return urls, nil
}

// podInfos lists scheduled pods with their Node's labels.
func podInfos(ctx context.Context, r client.Reader) ([]metricsapi.PodInfo, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods); err != nil {
		return nil, err
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return nil, err
	}
	nodeLabels := make(map[string]map[string]string, len(nodes.Items))
	for _, n := range nodes.Items {
		nodeLabels[n.Name] = n.Labels
	}
	out := make([]metricsapi.PodInfo, 0, len(pods.Items))
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" {
			continue
		}
		out = append(out, metricsapi.PodInfo{Namespace: p.Namespace, Name: p.Name, UID: p.UID,
			Node: p.Spec.NodeName, Labels: p.Labels, NodeLabels: nodeLabels[p.Spec.NodeName]})
	}
	return out, nil
}

// registerMetricsAPI points the aggregator at this process: a selector-less Service, its
// EndpointSlice with the metrics API's address, and the APIService with the cluster CA.
func registerMetricsAPI(ctx context.Context, c client.Client, host string, port int, caPEM []byte) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: MetricsServiceName, Namespace: vesselv1.SystemNamespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, svc, func() error {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.Selector = nil
		svc.Spec.Ports = []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(int32(port))}}
		return nil
	}); err != nil {
		return fmt.Errorf("register metrics API service: %w", err)
	}
	eps := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: MetricsServiceName, Namespace: vesselv1.SystemNamespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, eps, func() error {
		if eps.Labels == nil {
			eps.Labels = map[string]string{}
		}
		eps.Labels[discoveryv1.LabelServiceName] = MetricsServiceName
		eps.Labels[discoveryv1.LabelManagedBy] = "controller.vessel.dev"
		eps.AddressType = discoveryv1.AddressTypeIPv4
		eps.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}
		eps.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("https"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(port))}}
		return nil
	}); err != nil {
		return fmt.Errorf("register metrics API endpoints: %w", err)
	}
	api := &apiregistrationv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: MetricsAPIService}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, api, func() error {
		api.Spec = apiregistrationv1.APIServiceSpec{
			Service:              &apiregistrationv1.ServiceReference{Namespace: vesselv1.SystemNamespace, Name: MetricsServiceName, Port: ptr.To(int32(443))},
			Group:                metricsapi.Group,
			Version:              metricsapi.Version,
			CABundle:             caPEM,
			GroupPriorityMinimum: 100,
			VersionPriority:      100,
		}
		return nil
	}); err != nil {
		return fmt.Errorf("register metrics APIService: %w", err)
	}
	return nil
}

// registrationScheme knows what registerMetricsAPI writes.
func registrationScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(discoveryv1.AddToScheme(s))
	utilruntime.Must(apiregistrationv1.AddToScheme(s))
	return s
}

// startMetricsAPI serves the metrics API, starts its scraper and registers it. A failure of the
// server later is sent to errs; stop shuts both down.
func (c *Controller) startMetricsAPI(ctx context.Context, cs kubernetes.Interface, reader client.Reader, errs chan<- error) (stop func(), err error) {
	m, err := c.newMetricsAPI(cs, reader)
	if err != nil {
		return nil, err
	}
	// Listing through the cache starts informers; do it now so the first scrape does not wait.
	if _, err := podInfos(ctx, reader); err != nil {
		return nil, fmt.Errorf("prime metrics caches: %w", err)
	}
	if _, err := hostURLs(ctx, reader); err != nil {
		return nil, fmt.Errorf("prime metrics caches: %w", err)
	}
	go func() {
		if err := m.srv.ServeTLS(c.cfg.Metrics.Listener, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("metrics API server: %w", err)
		}
	}()
	scrapeCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.scraper.Run(scrapeCtx) }()
	stop = func() {
		cancel()
		// Close, not Shutdown: the aggregator keeps an idle HTTP/2 connection to this server
		// that it never gives up, so a graceful Shutdown always ran into its timeout (2 s of
		// every vessel up stop). A metrics read cut short at exit costs one kubectl top.
		_ = m.srv.Close()
		<-done
	}
	cl, err := client.New(c.cfg.REST, client.Options{Scheme: registrationScheme()})
	if err != nil {
		stop()
		return nil, fmt.Errorf("metrics API registration client: %w", err)
	}
	if err := registerMetricsAPI(ctx, cl, m.host, m.port, c.cfg.CA.CertPEM); err != nil {
		stop()
		return nil, err
	}
	c.log.Info("metrics API serving", "address", net.JoinHostPort(m.host, strconv.Itoa(m.port)))
	return stop, nil
}
