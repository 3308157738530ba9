// Package datadir is the one place that knows Vessel's on-disk layout: every file and socket a
// component keeps under the data directory is computed here, so the layout can be read at once.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Default returns the data directory used when --data-dir is not given: /var/lib/vessel for root
// (the system service), otherwise $XDG_DATA_HOME/vessel (~/.local/share/vessel).
func Default() string {
	if os.Geteuid() == 0 {
		return "/var/lib/vessel"
	}
	if xdg := os.Getenv("XDG_DATA_HOME"); xdg != "" {
		return filepath.Join(xdg, "vessel")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "vessel-"+strconv.Itoa(os.Geteuid()))
	}
	return filepath.Join(home, ".local", "share", "vessel")
}

// Paths holds every path under one data directory.
type Paths struct {
	Root string

	Lock       string // held (flock) by the running `vessel up`
	Kubeconfig string // admin kubeconfig handed to users
	Logs       string // component logs (klog, etcd)

	EtcdData string
	Registry string // the local OCI registry's blobs and manifests

	// The host that `vessel up` runs in-process: images, pod volumes and logs under HostData;
	// runtime state and network namespaces under Run (gone after a reboot, like the containers).
	HostData    string
	RuntimeRoot string
	NetnsDir    string

	// TLS material. ca signs serving and client certificates and is the apiserver's client CA;
	// front-proxy-ca is kept separate, as Kubernetes requires, for aggregated API servers.
	CACert, CAKey                     string
	FrontProxyCACert, FrontProxyCAKey string
	APIServerCert, APIServerKey       string
	EtcdServerCert, EtcdServerKey     string
	EtcdClientCert, EtcdClientKey     string
	AdminCert, AdminKey               string
	ControllerManagerCert             string
	ControllerManagerKey              string
	FrontProxyClientCert              string
	FrontProxyClientKey               string
	WebhookCert, WebhookKey           string
	MetricsCert, MetricsKey           string // the metrics API's serving certificate
	KubeletClientCert                 string // the apiserver's identity towards host agents
	KubeletClientKey                  string
	KubeletServingCert                string // this machine's host agent's kubelet API
	KubeletServingKey                 string
	ServiceAccountKey                 string
	ServiceAccountPub                 string
	ControllerManagerKubeconfig       string
}

// New computes the layout under root. It creates nothing.
func New(root string) Paths {
	tls := filepath.Join(root, "tls")
	j := func(name string) string { return filepath.Join(tls, name) }
	return Paths{
		Root:                        root,
		Lock:                        filepath.Join(root, "vessel.lock"),
		Kubeconfig:                  filepath.Join(root, "kubeconfig"),
		Logs:                        filepath.Join(root, "logs"),
		EtcdData:                    filepath.Join(root, "etcd"),
		Registry:                    filepath.Join(root, "registry"),
		HostData:                    filepath.Join(root, "host"),
		RuntimeRoot:                 filepath.Join(root, "run", "oci"),
		NetnsDir:                    filepath.Join(root, "run", "netns"),
		CACert:                      j("ca.crt"),
		CAKey:                       j("ca.key"),
		FrontProxyCACert:            j("front-proxy-ca.crt"),
		FrontProxyCAKey:             j("front-proxy-ca.key"),
		APIServerCert:               j("apiserver.crt"),
		APIServerKey:                j("apiserver.key"),
		EtcdServerCert:              j("etcd-server.crt"),
		EtcdServerKey:               j("etcd-server.key"),
		EtcdClientCert:              j("etcd-client.crt"),
		EtcdClientKey:               j("etcd-client.key"),
		AdminCert:                   j("admin.crt"),
		AdminKey:                    j("admin.key"),
		ControllerManagerCert:       j("controller-manager.crt"),
		ControllerManagerKey:        j("controller-manager.key"),
		FrontProxyClientCert:        j("front-proxy-client.crt"),
		FrontProxyClientKey:         j("front-proxy-client.key"),
		WebhookCert:                 j("webhook.crt"),
		MetricsCert:                 j("metrics.crt"),
		MetricsKey:                  j("metrics.key"),
		KubeletClientCert:           j("kubelet-client.crt"),
		KubeletClientKey:            j("kubelet-client.key"),
		KubeletServingCert:          j("kubelet.crt"),
		KubeletServingKey:           j("kubelet.key"),
		WebhookKey:                  j("webhook.key"),
		ServiceAccountKey:           j("service-account.key"),
		ServiceAccountPub:           j("service-account.pub"),
		ControllerManagerKubeconfig: filepath.Join(root, "controller-manager.kubeconfig"),
	}
}

// ErrInUse is returned by Lock when another process holds the data directory.
var ErrInUse = errors.New("data directory is in use")

// Lock is an exclusive hold on a data directory, released by Unlock or by the process exiting
// (flock), so a crashed vessel never leaves a stale lock behind.
type Lock struct{ f *os.File }

// Acquire takes the lock without waiting. When another process holds it, the error wraps ErrInUse
// and names that process and how to proceed.
func (p Paths) Acquire() (*Lock, error) {
	if err := os.MkdirAll(p.Root, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", p.Root, err)
	}
	f, err := os.OpenFile(p.Lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", p.Lock, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(p.Lock)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				who = "another vessel (pid " + pid + ")"
			}
			return nil, fmt.Errorf("%w: %s is used by %s; stop it first or pass a different --data-dir", ErrInUse, p.Root, who)
		}
		return nil, fmt.Errorf("lock %s: %w", p.Lock, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock. Safe to call more than once.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}
