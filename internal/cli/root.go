// Package cli is the `vessel` command tree. It lives outside package main so tests can run the
// very same commands in a re-executed test binary instead of linking a second copy of Kubernetes.
package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vessel-dev/vessel/internal/runtime/oci"
	"github.com/vessel-dev/vessel/internal/version"
)

// NewRootCommand returns the `vessel` command with every subcommand.
func NewRootCommand() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "vessel",
		Short:         "Serverless pods and tasks: every workload in its own sandbox, no nodes to manage",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "Vessel's log level: debug, info, warn or error")
	root.AddCommand(newUpCommand(), newControllerCommand(), newHostCommand(), newVersionCommand(), newBenchCommand(), newImageCommand(), newShimCommand())
	return root
}

// Main runs the command line and returns the process exit code.
func Main() int {
	// The shim outlives the agent and must keep default signal handling: dispatch it before
	// anything else touches the process.
	if len(os.Args) > 1 && os.Args[1] == shimCommand {
		return oci.ShimMain(os.Args[2:])
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := NewRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vessel:", err)
		return 1
	}
	return 0
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Vessel's version and the embedded Kubernetes version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "vessel %s (kubernetes %s)\n", version.Version, version.Kubernetes())
		},
	}
}
