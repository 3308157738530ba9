package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
)

// shutdownTimeout bounds how long `vessel up` waits for its components after a signal.
const shutdownTimeout = 10 * time.Second

func newUpCommand() *cobra.Command {
	cfg := controlplane.Config{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a complete Vessel cluster on this machine: Kubernetes API, Vessel's controllers and a host",
		Long: `Run a complete Vessel cluster in this process: an embedded etcd, kube-apiserver and
kube-controller-manager, Vessel's controllers and this machine as a host. State lives in --data-dir
and survives restarts. Stop with Ctrl-C or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := slog.Default()
			cfg.Logger = log
			start := time.Now()
			cp, err := controlplane.Start(ctx, cfg)
			if err != nil {
				return explainStartError(err)
			}
			select {
			case <-cp.Ready():
				log.Info("control plane ready", "elapsed", time.Since(start).Round(time.Millisecond), "dataDir", cfg.DataDir)
				fmt.Fprintf(cmd.OutOrStdout(), "Vessel is ready. Use it with: export KUBECONFIG=%s; kubectl get ns\n", cp.Kubeconfig())
			case <-cp.Done():
				return fmt.Errorf("control plane failed to start: %w", cp.Err())
			}

			select {
			case <-ctx.Done():
				log.Info("shutting down")
			case <-cp.Done():
			}
			select {
			case <-cp.Done():
			case <-time.After(shutdownTimeout):
				return fmt.Errorf("components did not stop within %s", shutdownTimeout)
			}
			return cp.Err()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", datadir.Default(), "directory for cluster state, certificates and the kubeconfig")
	f.StringVar(&cfg.BindAddress, "bind-address", "0.0.0.0", "address kube-apiserver listens on")
	f.IntVar(&cfg.APIPort, "https-port", 6443, "kube-apiserver's HTTPS port")
	f.IntVar(&cfg.EtcdClientPort, "etcd-client-port", 2379, "embedded etcd's client port (loopback only)")
	f.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", 2380, "embedded etcd's peer port (loopback only)")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "address published for the kubernetes Service (default: this machine's first IPv4 address)")
	return cmd
}

// portFlags names the flag that moves each component's port, for the busy-port error.
var portFlags = map[string]string{
	"kube-apiserver": "--https-port",
	"etcd client":    "--etcd-client-port",
	"etcd peer":      "--etcd-peer-port",
}

func explainStartError(err error) error {
	var busy *controlplane.PortInUseError
	if errors.As(err, &busy) {
		return fmt.Errorf("%w: stop the process listening there or choose another port with %s", err, portFlags[busy.Component])
	}
	return err
}
