package server

import (
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"

	"github.com/vessel-dev/vessel/internal/controlplane"
	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/hostagent"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime/oci"
)

// newHostAgent builds this machine's host: sandbox networking, the oci runtime and the image
// store under the data directory, and the agent that drives them.
func newHostAgent(cfg Config, p datadir.Paths, restCfg *rest.Config) (*hostagent.Agent, error) {
	name, addr := cfg.HostName, cfg.HostAddress
	if name == "" {
		name = hostName()
	}
	if addr == "" {
		addr = cfg.ControlPlane.AdvertiseAddress
	}
	if addr == "" {
		addr = controlplane.DefaultAdvertiseAddress()
	}
	if addr == "" {
		addr = "127.0.0.1"
	}
	nm, err := network.New(network.Config{NetnsDir: p.NetnsDir, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("host networking: %w", err)
	}
	rt, err := oci.New(oci.Config{Root: p.RuntimeRoot, Network: nm, ShimArgv: cfg.ShimArgv, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("oci runtime: %w", err)
	}
	store, err := image.Open(filepath.Join(p.HostData, "images"), image.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	return hostagent.New(hostagent.Config{
		HostName: name, Address: addr, DataDir: p.HostData, Isolation: cfg.Isolation,
		CPUOvercommit: cfg.CPUOvercommit, MemoryOvercommit: cfg.MemoryOvercommit,
		DiskOvercommit: cfg.DiskOvercommit, Logger: cfg.Logger,
	}, restCfg, rt, store, nm)
}
