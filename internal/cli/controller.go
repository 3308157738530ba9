package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/pki"
)

func newControllerCommand() *cobra.Command {
	var kubeconfig, dataDir, listen, host, isolation string
	cmd := &cobra.Command{
		Use:   "controller --kubeconfig FILE",
		Short: "Run Vessel's controllers and admission webhook against an existing Kubernetes cluster",
		Long: `Install Vessel's CRDs into an existing cluster and run its controllers and admission webhook
there: the at-scale mode, where hosts join with ` + "`vessel host`" + `. The cluster's apiserver must be
able to reach --webhook-host on the --webhook-listen port; the webhook's certificate is signed
by a CA kept in --data-dir and registered as the webhook's caBundle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kubeconfig == "" {
				return errors.New("--kubeconfig is required: the admin kubeconfig of the cluster to run in")
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("load --kubeconfig %s: %w", kubeconfig, err)
			}
			tls := filepath.Join(dataDir, "tls")
			ca, err := pki.LoadOrCreateCA(filepath.Join(tls, "ca.crt"), filepath.Join(tls, "ca.key"), "vessel-controller-ca")
			if err != nil {
				return err
			}
			ctl, err := controller.New(controller.Config{
				REST: cfg, WebhookListen: listen, WebhookHost: host, CA: ca,
				CertFile: filepath.Join(tls, "webhook.crt"), KeyFile: filepath.Join(tls, "webhook.key"),
				Isolation: vesselv1.Isolation(isolation), Logger: slog.Default(),
			})
			if err != nil {
				return err
			}
			errs := make(chan error, 1)
			go func() { errs <- ctl.Run(cmd.Context()) }()
			select {
			case <-ctl.Ready():
				fmt.Fprintln(cmd.OutOrStdout(), "Vessel controller is ready.")
			case err := <-errs:
				return err
			}
			return <-errs
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "admin kubeconfig of the cluster")
	f.StringVar(&dataDir, "data-dir", filepath.Join(datadir.Default(), "controller"), "directory for the webhook's CA and certificate")
	f.StringVar(&listen, "webhook-listen", "0.0.0.0:9443", "address the admission webhook listens on")
	f.StringVar(&host, "webhook-host", "", "host name or IP the cluster's apiserver uses to reach the webhook (default: the listen address, or 127.0.0.1 for a wildcard)")
	f.StringVar(&isolation, "isolation", string(vesselv1.IsolationOCI), "isolation the cluster's hosts provide, recorded on admitted pods: oci or microvm")
	return cmd
}
