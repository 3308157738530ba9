package controlplane

import (
	"fmt"
	"net"
	"os"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vessel-dev/vessel/internal/datadir"
	"github.com/vessel-dev/vessel/internal/pki"
)

// serviceIP is the first address of the service range: the ClusterIP of `kubernetes.default`.
const serviceIP = "10.43.0.1"

// ensureCertificates creates what is missing of the cluster's TLS material and kubeconfigs and
// keeps what is there, so a restart reuses the same identities. The service-account signing key
// is not among them: run makes it while etcd starts.
func ensureCertificates(p datadir.Paths, cfg Config) (*pki.CA, error) {
	ca, err := pki.LoadOrCreateCA(p.CACert, p.CAKey, "vessel-ca")
	if err != nil {
		return nil, err
	}
	frontProxyCA, err := pki.LoadOrCreateCA(p.FrontProxyCACert, p.FrontProxyCAKey, "vessel-front-proxy-ca")
	if err != nil {
		return nil, err
	}

	hostname, _ := os.Hostname()
	dnsNames := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local"}
	if hostname != "" {
		dnsNames = append(dnsNames, hostname)
	}
	ips := append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP)}, hostIPs()...)

	leaves := []struct {
		ca        *pki.CA
		cert, key string
		leaf      pki.Leaf
	}{
		{ca, p.APIServerCert, p.APIServerKey, pki.Leaf{CommonName: "kube-apiserver", DNSNames: dnsNames, IPs: ips, Server: true}},
		{ca, p.EtcdServerCert, p.EtcdServerKey, pki.Leaf{CommonName: "etcd", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Client: true}},
		{ca, p.EtcdClientCert, p.EtcdClientKey, pki.Leaf{CommonName: "kube-apiserver-etcd-client", Client: true}},
		{ca, p.AdminCert, p.AdminKey, pki.Leaf{CommonName: "vessel-admin", Organization: []string{"system:masters"}, Client: true}},
		{ca, p.ControllerManagerCert, p.ControllerManagerKey, pki.Leaf{CommonName: "system:kube-controller-manager", Client: true}},
		// kube-apiserver → host agents' kubelet API (logs, exec, port-forward).
		{ca, p.KubeletClientCert, p.KubeletClientKey, pki.Leaf{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}},
		{frontProxyCA, p.FrontProxyClientCert, p.FrontProxyClientKey, pki.Leaf{CommonName: "front-proxy-client", Client: true}},
	}
	for _, l := range leaves {
		if _, err := l.ca.EnsureLeaf(l.cert, l.key, l.leaf); err != nil {
			return nil, err
		}
	}
	server := fmt.Sprintf("https://%s", net.JoinHostPort(cfg.clientHost(), fmt.Sprint(cfg.APIPort)))
	if err := writeKubeconfig(p.Kubeconfig, server, p.CACert, p.AdminCert, p.AdminKey, "vessel-admin"); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(p.ControllerManagerKubeconfig, server, p.CACert, p.ControllerManagerCert, p.ControllerManagerKey, "kube-controller-manager"); err != nil {
		return nil, err
	}
	return ca, nil
}

// writeKubeconfig embeds the certificates so the file can be copied elsewhere and keeps working.
func writeKubeconfig(path, server, caFile, certFile, keyFile, user string) error {
	read := func(f string) ([]byte, error) {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("write kubeconfig %s: %w", path, err)
		}
		return b, nil
	}
	caPEM, err := read(caFile)
	if err != nil {
		return err
	}
	certPEM, err := read(certFile)
	if err != nil {
		return err
	}
	keyPEM, err := read(keyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["vessel"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["vessel"] = &clientcmdapi.Context{Cluster: "vessel", AuthInfo: user}
	cfg.CurrentContext = "vessel"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// DefaultAdvertiseAddress is the address published for the API when none is configured: the
// machine's first global IPv4 address, or "" when it has none.
func DefaultAdvertiseAddress() string {
	if ips := hostIPs(); len(ips) > 0 {
		return ips[0].String()
	}
	return ""
}

// hostIPs lists the machine's global unicast IPv4 addresses, for the serving certificate and to
// pick the address pods will use to reach the API. Vessel's own subnet bridges (named vsl-…) are
// left out: they come and go with sandboxes and must not change the certificate between restarts.
func hostIPs() []net.IP {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || strings.HasPrefix(iface.Name, "vsl") {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			ips = append(ips, ipn.IP.To4())
		}
	}
	return ips
}
