package controlplane

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/vessel-dev/vessel/internal/datadir"
)

// setupLogging sends klog (every Kubernetes component's logger, process-wide) to
// DataDir/logs/controlplane.log. Start runs once per process, so this does too.
func setupLogging(p datadir.Paths) error {
	if err := os.MkdirAll(p.Logs, 0o700); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{
		"logtostderr":     "false",
		"alsologtostderr": "false",
		"one_output":      "true",
		"stderrthreshold": "FATAL",
		"log_file":        filepath.Join(p.Logs, "controlplane.log"),
		"v":               "0",
	} {
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("configure klog %s: %w", name, err)
		}
	}
	return nil
}
