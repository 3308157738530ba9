package metricsapi

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/vessel-dev/vessel/internal/pki"
)

// TestFrontProxyAuth checks that the identity in the request headers is believed only from a
// client presenting front-proxy-client's certificate from the front-proxy CA.
func TestFrontProxyAuth(t *testing.T) {
	dir := t.TempDir()
	f := func(n string) string { return filepath.Join(dir, n) }
	frontProxy, err := pki.LoadOrCreateCA(f("fp.crt"), f("fp.key"), "front-proxy-ca")
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := pki.LoadOrCreateCA(f("ca.crt"), f("ca.key"), "cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(ca *pki.CA, name, cn string) *x509.Certificate {
		if _, err := ca.EnsureLeaf(f(name+".crt"), f(name+".key"), pki.Leaf{CommonName: cn, Client: true}); err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(f(name+".crt"), f(name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	authn, _, err := FrontProxyAuth(fake.NewClientset(), frontProxy.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want bool
	}{
		{"front proxy", leaf(frontProxy, "proxy", "front-proxy-client"), true},
		{"other name from the front-proxy CA", leaf(frontProxy, "other", "someone"), false},
		{"front-proxy-client from another CA", leaf(cluster, "forged", "front-proxy-client"), false},
		{"no certificate", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/apis/metrics.k8s.io/v1beta1/pods", nil)
			req.Header.Set("X-Remote-User", "alice")
			req.Header.Add("X-Remote-Group", "devs")
			req.TLS = &tls.ConnectionState{}
			if tc.cert != nil {
				req.TLS.PeerCertificates = []*x509.Certificate{tc.cert}
			}
			resp, ok, _ := authn.AuthenticateRequest(req)
			if ok != tc.want {
				t.Fatalf("authenticated = %v, want %v", ok, tc.want)
			}
			if ok && (resp.User.GetName() != "alice" || len(resp.User.GetGroups()) == 0 || resp.User.GetGroups()[0] != "devs") {
				t.Errorf("user = %+v", resp.User)
			}
		})
	}
}
