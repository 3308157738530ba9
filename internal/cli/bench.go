package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

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
	cmd.AddCommand(cp)
	return cmd
}
