package controlplane

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/vessel-dev/vessel/internal/datadir"
)

// startEtcd starts a single-member etcd on loopback with mutual TLS (any local user could
// otherwise read every Secret) and returns once it serves.
func startEtcd(ctx context.Context, p datadir.Paths, cfg Config) (*embed.Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = "vessel"
	ec.Dir = p.EtcdData
	// A single member elects itself after one election timeout; with no peers to wait for, a
	// short one only shortens start-up.
	ec.TickMs, ec.ElectionMs = 10, 100
	client := url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(cfg.EtcdClientPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(cfg.EtcdPeerPort)}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.ClientTLSInfo.CertFile = p.EtcdServerCert
	ec.ClientTLSInfo.KeyFile = p.EtcdServerKey
	ec.ClientTLSInfo.TrustedCAFile = p.CACert
	ec.ClientTLSInfo.ClientCertAuth = true
	ec.AutoCompactionMode, ec.AutoCompactionRetention = "periodic", "1h"
	ec.LogLevel = "warn"
	ec.LogOutputs = []string{filepath.Join(p.Logs, "etcd.log")}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd in %s: %w", p.EtcdData, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd: %w", err)
	case <-time.After(time.Minute):
		e.Close()
		return nil, fmt.Errorf("start etcd: not ready after a minute; see %s", ec.LogOutputs[0])
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start etcd: %w", context.Cause(ctx))
	}
}
