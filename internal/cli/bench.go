package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vessel-dev/vessel/internal/bench"
)

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Vessel end to end and print the results as text",
	}
	var o bench.ControlPlaneOptions
	cp := &cobra.Command{
		Use:   "controlplane",
		Short: "Time `vessel up` start → ready (fresh and restart), idle RSS and SIGTERM → exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Vessel == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the vessel binary: %w", err)
				}
				o.Vessel = exe
			}
			return bench.ControlPlane(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cp.Flags().IntVar(&o.Runs, "runs", 5, "cold starts to measure (each followed by a restart)")
	cp.Flags().DurationVar(&o.Idle, "idle", 10*time.Second, "settle time before reading RSS")
	cmd.AddCommand(cp, newBenchPodsCommand())
	return cmd
}

func newBenchPodsCommand() *cobra.Command {
	var kubeconfig string
	o := bench.PodsOptions{Namespace: "default"}
	cmd := &cobra.Command{
		Use:   "pods --kubeconfig FILE",
		Short: "Time pod create → Ready, serially and in a burst, with a per-phase breakdown",
		Long: `Create pods through the API of a running Vessel (vessel up) and time each until Ready: first
--serial pods one at a time, then --burst pods at once. The image should already be cached on the
host (run it once before), so the numbers exclude a cold pull.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kubeconfig == "" || o.Image == "" {
				return fmt.Errorf("--kubeconfig and --image are required")
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("load --kubeconfig: %w", err)
			}
			o.REST = cfg
			return bench.Pods(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	f.StringVar(&o.Namespace, "namespace", "default", "namespace to create the pods in (a profile must select it)")
	f.StringVar(&o.Image, "image", "", "image of the pods, e.g. 127.0.0.1:5000/vessel/demo:latest")
	f.StringSliceVar(&o.Command, "command", nil, "command of the pods (default: the image's)")
	f.IntVar(&o.Serial, "serial", 30, "pods started one after the other")
	f.IntVar(&o.Burst, "burst", 50, "pods started at once")
	return cmd
}
