package controlplane

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/vessel-dev/vessel/internal/datadir"
)

// runner is a prepared component that serves until ctx ends.
type runner interface {
	Run(ctx context.Context) error
}

// newAPIServer configures kube-apiserver from the same flags an operator would pass to the
// upstream binary, so its behaviour and its documentation stay the upstream ones. waitStorage is
// called once, before the first step that connects to etcd; its error ends the construction.
func newAPIServer(ctx context.Context, p datadir.Paths, cfg Config, l net.Listener, waitStorage func() error) (runner, error) {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	issuer := "https://kubernetes.default.svc.cluster.local"
	args := []string{
		"--etcd-servers=https://127.0.0.1:" + strconv.Itoa(cfg.EtcdClientPort),
		"--etcd-cafile=" + p.CACert,
		"--etcd-certfile=" + p.EtcdClientCert,
		"--etcd-keyfile=" + p.EtcdClientKey,
		"--bind-address=" + cfg.BindAddress,
		"--secure-port=" + strconv.Itoa(cfg.APIPort),
		"--tls-cert-file=" + p.APIServerCert,
		"--tls-private-key-file=" + p.APIServerKey,
		"--client-ca-file=" + p.CACert,
		"--service-account-key-file=" + p.ServiceAccountPub,
		"--service-account-signing-key-file=" + p.ServiceAccountKey,
		"--service-account-issuer=" + issuer,
		"--api-audiences=" + issuer,
		"--service-cluster-ip-range=" + cfg.ServiceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		// Aggregated APIs (metrics.k8s.io) are reached without kube-proxy.
		"--enable-aggregator-routing=true",
		"--requestheader-client-ca-file=" + p.FrontProxyCACert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.FrontProxyClientCert,
		"--proxy-client-key-file=" + p.FrontProxyClientKey,
		// Vessel nodes point at their host agent's kubelet API, served with a certificate from
		// the cluster CA, at the host's address.
		"--kubelet-client-certificate=" + p.KubeletClientCert,
		"--kubelet-client-key=" + p.KubeletClientKey,
		"--kubelet-certificate-authority=" + p.CACert,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		// On stop, drain requests in flight, then give connections 2 s instead of the default
		// 60 s: a client that holds a connection open without a request (a watch reconnecting,
		// a half-open dial) otherwise held every stop for 5 s, net/http's wait for new
		// connections.
		"--shutdown-send-retry-after=true",
	}
	if cfg.AdvertiseAddress != "" {
		args = append(args, "--advertise-address="+cfg.AdvertiseAddress)
	} else {
		// No routable address: publish none rather than a loopback one the reconciler rejects.
		args = append(args, "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none")
	}
	args = append(args, cfg.ExtraAPIServerArgs...)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("kube-apiserver flags: %w", err)
	}
	s.SecureServing.Listener = l
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, fmt.Errorf("kube-apiserver feature gates: %w", err)
	}
	// The loopback client would log a warning for every deprecated API the server itself uses.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	completed, err := s.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	config, err := apiserverapp.NewConfig(completed)
	if err != nil {
		return nil, fmt.Errorf("configure kube-apiserver: %w", err)
	}
	completedConfig, err := config.Complete()
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver config: %w", err)
	}
	if err := waitStorage(); err != nil {
		return nil, err
	}
	server, err := apiserverapp.CreateServerChain(completedConfig)
	if err != nil {
		return nil, fmt.Errorf("create kube-apiserver: %w", err)
	}
	// The hook only starts the priming and returns, so it never holds readiness itself.
	err = server.GenericAPIServer.AddPostStartHook(primeHookName, func(hc genericapiserver.PostStartHookContext) error {
		client, err := kubernetes.NewForConfig(hc.LoopbackClientConfig)
		if err != nil {
			return fmt.Errorf("client for priming the RBAC policy: %w", err)
		}
		go func() {
			start := time.Now()
			defer func() { cfg.Logger.Debug("primed the bootstrap RBAC policy", "elapsed", time.Since(start)) }()
			if err := primeBootstrapPolicy(hc, client); err != nil {
				cfg.Logger.Debug("priming the bootstrap RBAC policy did not finish; kube-apiserver's own hook completes it", "err", err)
			}
		}()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("add kube-apiserver post-start hook: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		return nil, fmt.Errorf("prepare kube-apiserver: %w", err)
	}
	return prepared, nil
}
