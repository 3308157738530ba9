package cli

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/hostagent"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime/oci"
)

// shimCommand is the hidden subcommand the oci runtime starts per container (oci.ShimMain).
const shimCommand = "shim"

func newShimCommand() *cobra.Command {
	return &cobra.Command{
		Use:                shimCommand,
		Short:              "Per-container shim of the oci runtime (started by the host agent)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := oci.ShimMain(args); code != 0 {
				return fmt.Errorf("shim exited with %d", code)
			}
			return nil
		},
	}
}

// HostOptions are the settings of `vessel host`.
type HostOptions struct {
	Kubeconfig  string
	Name        string
	Address     string
	KubeletPort int32
	Zone        string
	DataDir     string
	RuntimeRoot string
	NetnsDir    string
	ClusterDNS  []string
}

func newHostCommand() *cobra.Command {
	var o HostOptions
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Run this machine as a Vessel host: register it and run the sandboxes scheduled to it",
		Long: `Register this machine as a Host of the cluster the kubeconfig points at and run the Sandboxes
the scheduler assigns to it with the oci runtime (runc; one network namespace per sandbox).
Containers keep running when this command stops; the next start adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return RunHost(cmd, o)
		},
	}
	hostname, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	f.StringVar(&o.Name, "name", hostname, "name of the Host object")
	f.StringVar(&o.Address, "address", "", "this host's IP address (default: the first non-loopback IPv4 address)")
	f.Int32Var(&o.KubeletPort, "kubelet-port", 10250, "port of the kubelet API")
	f.StringVar(&o.Zone, "zone", "", "topology zone of the host")
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/vessel/host", "images, pod volumes and logs")
	f.StringVar(&o.RuntimeRoot, "runtime-root", "/run/vessel/oci", "oci runtime state (must survive agent restarts)")
	f.StringVar(&o.NetnsDir, "netns-dir", "/run/vessel/netns", "network namespaces of sandboxes")
	f.StringSliceVar(&o.ClusterDNS, "cluster-dns", nil, "nameservers for pods (cluster DNS)")
	return cmd
}

// RunHost runs the host agent with the oci runtime until the command's context ends.
func RunHost(cmd *cobra.Command, o HostOptions) error {
	ctx := cmd.Context()
	log := slog.Default()
	if o.Kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if o.Address == "" {
		if o.Address = controlplane.DefaultAdvertiseAddress(); o.Address == "" {
			return fmt.Errorf("no global IPv4 address on this machine: pass --address")
		}
	}
	var dns []netip.Addr
	for _, s := range o.ClusterDNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--cluster-dns %q: %w", s, err)
		}
		dns = append(dns, a)
	}
	nm, err := network.New(network.Config{NetnsDir: o.NetnsDir, Logger: log})
	if err != nil {
		return err
	}
	rt, err := oci.New(oci.Config{Root: o.RuntimeRoot, Network: nm, Logger: log})
	if err != nil {
		return err
	}
	store, err := image.Open(filepath.Join(o.DataDir, "images"), image.Options{Logger: log})
	if err != nil {
		return err
	}
	agent, err := hostagent.New(hostagent.Config{
		HostName: o.Name, Address: o.Address, KubeletPort: o.KubeletPort, Zone: o.Zone,
		DataDir: o.DataDir, ClusterDNS: dns, Logger: log,
	}, restCfg, rt, store, nm)
	if err != nil {
		return err
	}
	return agent.Run(ctx)
}
