package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/server"
)

// shutdownTimeout bounds how long `vessel up` waits for its components after a signal.
const shutdownTimeout = 10 * time.Second

func newUpCommand() *cobra.Command {
	cfg := server.Config{}
	var noDefaultProfile bool
	var isolation string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a complete Vessel cluster on this machine: Kubernetes API, Vessel's controllers, a local registry and this machine as a host",
		Long: `Run a complete Vessel cluster in this process: an embedded etcd, kube-apiserver and
kube-controller-manager, Vessel's controllers and this machine as a host. State lives in --data-dir
and survives restarts. Stop with Ctrl-C or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := slog.Default()
			// Start-up is CPU-bound on small machines and allocates a lot of short-lived garbage
			// (OpenAPI specs above all), so it runs at Go's default 100% heap growth; once ready,
			// Kubernetes' caches make most of the heap and barely change, so collecting at 50% and
			// handing the start-up garbage back to the OS at once keeps idle RSS low (~320 MiB,
			// against ~340 MiB at 50% throughout and ~460 MiB at 100%), and /readyz came ~0.1-0.2 s
			// sooner. GOGC in the environment still wins.
			tuneGC := os.Getenv("GOGC") == ""
			if tuneGC {
				debug.SetGCPercent(100)
			}
			cfg.Logger = log
			cfg.DefaultProfile = !noDefaultProfile
			cfg.Isolation = vesselv1.Isolation(isolation)
			if cfg.Isolation != vesselv1.IsolationOCI {
				return fmt.Errorf("--isolation %q: only %q is available in this build (the microVM runtime is not there yet)", isolation, vesselv1.IsolationOCI)
			}
			start := time.Now()
			cp, err := server.Start(ctx, cfg)
			if err != nil {
				return explainStartError(err)
			}
			select {
			case <-cp.Ready():
				if tuneGC {
					debug.SetGCPercent(50)
					go debug.FreeOSMemory()
				}
				log.Info("vessel ready", "elapsed", time.Since(start).Round(time.Millisecond), "dataDir", cfg.ControlPlane.DataDir)
				if addr := cp.RegistryAddr(); addr != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "Local registry: %s (push images there, e.g. vessel image import FILE)\n", addr)
				}
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
	f.IntVar(&cfg.WebhookPort, "webhook-port", 9443, "admission webhook's port (loopback only)")
	f.Float64Var(&cfg.CPUOvercommit, "cpu-overcommit", 8, "sandboxes' vCPUs this machine accepts per CPU (CPU is shared, never memory); 1 guarantees every sandbox its whole size")
	f.Float64Var(&cfg.MemoryOvercommit, "memory-overcommit", 1, "sandboxes' memory this machine accepts per byte; above 1 the host may OOM-kill sandboxes (dense test machines only)")
	f.Float64Var(&cfg.DiskOvercommit, "disk-overcommit", 10, "sandboxes' ephemeral storage this machine accepts per byte of its disk (scratch space is sparse)")
	f.IntVar(&cfg.MetricsPort, "metrics-port", 4443, "port of the metrics API behind kubectl top (on the host address; the apiserver dials it); -1 disables it")
	f.IntVar(&cfg.KubeletPort, "kubelet-port", 10250, "this machine's kubelet API port (logs, exec, port-forward of its pods)")
	f.IntVar(&cfg.RegistryPort, "registry-port", 5000, "local OCI registry's port (loopback only); -1 disables it")
	f.BoolVar(&cfg.DisableController, "disable-controller", false, "run only the Kubernetes control plane; Vessel's controller runs elsewhere (vessel controller --kubeconfig)")
	f.BoolVar(&noDefaultProfile, "no-default-profile", false, "do not create the Subnet and VesselProfile \"default\" for namespace default")
	f.StringVar(&isolation, "isolation", string(vesselv1.IsolationOCI), "how this machine isolates sandboxes: oci")
	f.StringVar(&cfg.ControlPlane.DataDir, "data-dir", datadir.Default(), "directory for cluster state, certificates and the kubeconfig")
	f.StringVar(&cfg.ControlPlane.BindAddress, "bind-address", "0.0.0.0", "address kube-apiserver listens on")
	f.IntVar(&cfg.ControlPlane.APIPort, "https-port", 6443, "kube-apiserver's HTTPS port")
	f.IntVar(&cfg.ControlPlane.EtcdClientPort, "etcd-client-port", 2379, "embedded etcd's client port (loopback only)")
	f.IntVar(&cfg.ControlPlane.EtcdPeerPort, "etcd-peer-port", 2380, "embedded etcd's peer port (loopback only)")
	f.StringVar(&cfg.ControlPlane.AdvertiseAddress, "advertise-address", "", "address published for the kubernetes Service (default: this machine's first IPv4 address)")
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
	var webhook *controller.PortInUseError
	if errors.As(err, &webhook) {
		return fmt.Errorf("%w: stop the process listening there or choose another port with --webhook-port", err)
	}
	var metrics *controller.MetricsPortError
	if errors.As(err, &metrics) {
		return fmt.Errorf("%w: stop the process listening there, choose another port with --metrics-port, or disable kubectl top with --metrics-port=-1", err)
	}
	var kubelet *server.KubeletPortError
	if errors.As(err, &kubelet) {
		return fmt.Errorf("%w: stop the process listening there or choose another port with --kubelet-port", err)
	}
	var reg *server.RegistryPortError
	if errors.As(err, &reg) {
		return fmt.Errorf("%w: stop the process listening there, choose another port with --registry-port, or disable the registry with --registry-port=-1", err)
	}
	return err
}
