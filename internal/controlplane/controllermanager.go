package controlplane

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/vessel-dev/vessel/internal/datadir"
)

type controllerManager struct {
	opts *kcmoptions.KubeControllerManagerOptions
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
	return &controllerManager{opts: s}, nil
}

func (c *controllerManager) run(ctx context.Context) error {
	if err := c.opts.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-controller-manager feature gates: %w", err)
	}
	cfg, err := c.opts.Config(ctx, kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	if err != nil {
		return fmt.Errorf("configure kube-controller-manager: %w", err)
	}
	return kcmapp.Run(ctx, cfg.Complete())
}
