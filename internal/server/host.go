package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/hostagent"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/kubeletapi"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/pki"
	"github.com/vessel-dev/vessel/internal/runtime/oci"
)

// host is this machine as a Vessel host: the agent and its kubelet API server.
type host struct {
	agent   *hostagent.Agent
	kubelet *kubeletapi.Server
	ln      net.Listener
}

// newHost builds this machine's host: sandbox networking, the oci runtime and the image store
// under the data directory, the agent that drives them, and the kubelet API its nodes point
// at. kubeletLn is the kubelet API's listener, opened (and checked) by the caller.
func newHost(cfg Config, p datadir.Paths, restCfg *rest.Config, ca *pki.CA, kubeletLn net.Listener) (*host, error) {
	name, addr := cfg.HostName, hostAddress(cfg)
	if name == "" {
		name = hostName()
	}
	nm, err := network.New(network.Config{NetnsDir: p.NetnsDir, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("host networking: %w", err)
	}
	rt, err := oci.New(oci.Config{Root: p.RuntimeRoot, Network: nm, ShimArgv: cfg.ShimArgv, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("oci runtime: %w", err)
	}
	store, err := image.Open(filepath.Join(p.HostData, "images"), image.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	port := kubeletLn.Addr().(*net.TCPAddr).Port
	agent, err := hostagent.New(hostagent.Config{
		HostName: name, Address: addr, KubeletPort: int32(port), DataDir: p.HostData, Isolation: cfg.Isolation,
		CPUOvercommit: cfg.CPUOvercommit, MemoryOvercommit: cfg.MemoryOvercommit,
		DiskOvercommit: cfg.DiskOvercommit, Logger: cfg.Logger,
	}, restCfg, rt, store, nm)
	if err != nil {
		return nil, err
	}

	cert, err := kubeletapi.ServingCertificate(ca, p.KubeletServingCert, p.KubeletServingKey, name,
		[]net.IP{net.ParseIP(addr), net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	reviews := rest.CopyConfig(restCfg)
	reviews.QPS, reviews.Burst = 100, 200 // every kubectl logs/exec is reviewed once, then cached
	cs, err := kubernetes.NewForConfig(reviews)
	if err != nil {
		return nil, err
	}
	authn, authz, err := kubeletapi.DelegatingAuth(cs, ca.CertPEM)
	if err != nil {
		return nil, err
	}
	srv, err := kubeletapi.New(kubeletapi.Config{
		Provider: agent.KubeletProvider(), TLS: kubeletapi.NewTLSConfig(cert), Metrics: agent.MetricsHandler(),
		Authenticator: authn, Authorizer: authz, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &host{agent: agent, kubelet: srv, ln: kubeletLn}, nil
}

// serveKubelet serves the kubelet API until ctx ends.
func (h *host) serveKubelet(ctx context.Context) error { return h.kubelet.Serve(ctx, h.ln) }

// listenKubelet opens the kubelet API's port on every interface (the apiserver dials the host's
// address), reporting a busy port with the flag that moves it.
func listenKubelet(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		return nil, &KubeletPortError{Port: port, Err: err}
	}
	return ln, nil
}

// KubeletPortError reports that the host's kubelet API cannot listen.
type KubeletPortError struct {
	Port int
	Err  error
}

func (e *KubeletPortError) Error() string {
	return fmt.Sprintf("kubelet API port %d: %v", e.Port, e.Err)
}
func (e *KubeletPortError) Unwrap() error { return e.Err }

// hostAddress is this machine's address as a Host: --host-address, the advertise address, the
// first global IPv4 address, or 127.0.0.1.
func hostAddress(cfg Config) string {
	for _, a := range []string{cfg.HostAddress, cfg.ControlPlane.AdvertiseAddress, controlplane.DefaultAdvertiseAddress()} {
		if a != "" {
			return a
		}
	}
	return "127.0.0.1"
}

// listenMetrics opens the metrics API's port on the host address, which the apiserver's
// aggregator dials through an EndpointSlice; it returns nil when that address is a loopback
// one, which EndpointSlices refuse.
func listenMetrics(cfg Config) (net.Listener, error) {
	addr := hostAddress(cfg)
	if ip := net.ParseIP(addr); ip == nil || ip.IsLoopback() {
		return nil, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(cfg.MetricsPort)))
	if err != nil {
		return nil, &controller.MetricsPortError{Addr: net.JoinHostPort(addr, strconv.Itoa(cfg.MetricsPort)), Err: err}
	}
	return ln, nil
}
