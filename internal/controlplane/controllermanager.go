package controlplane

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	v1core "k8s.io/client-go/kubernetes/typed/core/v1"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/controller-manager/pkg/clientbuilder"
	controllerhealthz "k8s.io/controller-manager/pkg/healthz"
	"k8s.io/klog/v2"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
	"k8s.io/kubernetes/pkg/controller/serviceaccount"
	jwt "k8s.io/kubernetes/pkg/serviceaccount"

	"github.com/vessel-dev/vessel/internal/datadir"
)

type controllerManager struct {
	opts *kcmoptions.KubeControllerManagerOptions
	// started is closed once every controller has been started. Until then the component
	// must be neither cancelled nor left without an apiserver: upstream start-up code
	// dereferences nil informer handles after a cancel and exits the process when the
	// apiserver goes away.
	started chan struct{}
}

// newControllerManager builds kube-controller-manager's options. Its configuration needs a
// reachable apiserver, so that part waits for run.
func newControllerManager(p datadir.Paths) (*controllerManager, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager options: %w", err)
	}
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()).FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + p.ControllerManagerKubeconfig,
		// One member: nothing to elect, and the lease would only delay start by its wait.
		"--leader-elect=false",
		// Its default port would clash between instances and nothing scrapes it here.
		"--secure-port=0",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.ServiceAccountKey,
		"--root-ca-file=" + p.CACert,
		"--cluster-signing-cert-file=" + p.CACert,
		"--cluster-signing-key-file=" + p.CAKey,
		// Replica bursts (a 50-pod Deployment) must not queue behind client-side rate limits.
		"--kube-api-qps=100",
		"--kube-api-burst=200",
	}
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("kube-controller-manager flags: %w", err)
	}
	return &controllerManager{opts: s, started: make(chan struct{})}, nil
}

// run does what upstream's app.Run does without leader election or a serving port, but starts
// the controllers itself so it can tell when they have all started (see started).
func (c *controllerManager) run(ctx context.Context) error {
	if err := c.opts.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-controller-manager feature gates: %w", err)
	}
	cfg, err := c.opts.Config(ctx, kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	if err != nil {
		return fmt.Errorf("configure kube-controller-manager: %w", err)
	}
	cc := cfg.Complete()
	cc.EventBroadcaster.StartStructuredLogging(0)
	cc.EventBroadcaster.StartRecordingToSink(&v1core.EventSinkImpl{Interface: cc.Client.CoreV1().Events("")})
	defer cc.EventBroadcaster.Shutdown()

	rootClients := clientbuilder.SimpleControllerClientBuilder{ClientConfig: cc.Kubeconfig}
	// Each controller acts as its own service account (--use-service-account-credentials), with
	// tokens from the TokenRequest API.
	clients := clientbuilder.NewDynamicClientBuilder(restclient.AnonymousClientConfig(cc.Kubeconfig), cc.Client.CoreV1(), metav1.NamespaceSystem)

	controllerCtx, err := kcmapp.CreateControllerContext(ctx, cc, rootClients, clients)
	if err != nil {
		return fmt.Errorf("kube-controller-manager context: %w", err)
	}
	if err := startLegacyTokensController(ctx, controllerCtx, rootClients); err != nil {
		return err
	}
	// Upstream's descriptor for the tokens controller carries the root client builder it is
	// built with, which only its own Run can supply; it was started above instead.
	descriptors := kcmapp.NewControllerDescriptors()
	delete(descriptors, names.ServiceAccountTokenController)
	if err := kcmapp.StartControllers(ctx, controllerCtx, descriptors, nil, controllerhealthz.NewMutableHealthzHandler()); err != nil {
		return fmt.Errorf("start controllers: %w", err)
	}
	controllerCtx.InformerFactory.Start(ctx.Done())
	controllerCtx.ObjectOrMetadataInformerFactory.Start(ctx.Done())
	close(controllerCtx.InformersStarted)
	close(c.started)
	<-ctx.Done()
	return nil
}

// startLegacyTokensController fills Secrets of type kubernetes.io/service-account-token, as
// upstream does before any other controller (its descriptor is private to upstream's package).
func startLegacyTokensController(ctx context.Context, cc kcmapp.ControllerContext, rootClients clientbuilder.ControllerClientBuilder) error {
	sa := cc.ComponentConfig.SAController
	key, err := keyutil.PrivateKeyFromFile(sa.ServiceAccountKeyFile)
	if err != nil {
		return fmt.Errorf("read service-account key for the tokens controller: %w", err)
	}
	rootCA, err := os.ReadFile(sa.RootCAFile)
	if err != nil {
		return fmt.Errorf("read root CA for the tokens controller: %w", err)
	}
	gen, err := jwt.JWTTokenGenerator(jwt.LegacyIssuer, key)
	if err != nil {
		return fmt.Errorf("tokens controller: %w", err)
	}
	client, err := rootClients.Client("tokens-controller")
	if err != nil {
		return fmt.Errorf("tokens controller client: %w", err)
	}
	tc, err := serviceaccount.NewTokensController(klog.FromContext(ctx),
		cc.InformerFactory.Core().V1().ServiceAccounts(), cc.InformerFactory.Core().V1().Secrets(), client,
		serviceaccount.TokensControllerOptions{TokenGenerator: gen, RootCA: rootCA})
	if err != nil {
		return fmt.Errorf("create tokens controller: %w", err)
	}
	go tc.Run(ctx, int(sa.ConcurrentSATokenSyncs))
	cc.InformerFactory.Start(ctx.Done())
	return nil
}
