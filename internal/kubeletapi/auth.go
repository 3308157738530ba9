package kubeletapi

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"

	"github.com/vessel-dev/vessel/internal/pki"
)

// DelegatingAuth returns the kubelet's authenticator and authorizer:
// client certificates signed by clientCAPEM (the cluster CA; the apiserver
// presents its kubelet-client certificate) and bearer tokens checked with
// TokenReview; decisions by SubjectAccessReview. Answers are cached as the
// kubelet does (tokens 2 min, allowed 5 min, denied 30 s), so a session
// costs at most one review of each kind. Anonymous requests are rejected.
func DelegatingAuth(client kubernetes.Interface, clientCAPEM []byte) (authenticator.Request, authorizer.Authorizer, error) {
	ca, err := dynamiccertificates.NewStaticCAContent("vessel-cluster-ca", clientCAPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API client CA: %w", err)
	}
	certs, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		ClientCertificateCAContentProvider: ca,
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API certificate authenticator: %w", err)
	}
	tokens, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient:  client.AuthenticationV1(),
		TokenAccessReviewTimeout: 10 * time.Second,
		CacheTTL:                 2 * time.Minute,
		WebhookRetryBackoff:      webhookBackoff(),
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API token authenticator: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(),
		AllowCacheTTL:             5 * time.Minute,
		DenyCacheTTL:              30 * time.Second,
		WebhookRetryBackoff:       webhookBackoff(),
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API authorizer: %w", err)
	}
	return &certOrToken{certs: certs, tokens: tokens}, authz, nil
}

// certOrToken authenticates by client certificate when the client sent
// one, else by bearer token. Certificate checks are serialized: the
// upstream x509 authenticator records a metric through
// component-base's Histogram.WithContext, which writes a shared field
// without a lock (a data race under concurrent requests). They take
// microseconds; token reviews, which can take a round trip, are not.
type certOrToken struct {
	mu     sync.Mutex
	certs  authenticator.Request
	tokens authenticator.Request
}

func (a *certOrToken) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		a.mu.Lock()
		resp, ok, err := a.certs.AuthenticateRequest(req)
		a.mu.Unlock()
		if ok || err != nil {
			return resp, ok, err
		}
	}
	return a.tokens.AuthenticateRequest(req)
}

// webhookBackoff retries reviews as the apiserver's delegating options do.
func webhookBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
}

// NewTLSConfig is the serving TLS configuration: cert, TLS 1.2+, and client
// certificates requested but not required (token clients have none); the
// authenticator verifies them against the cluster CA.
func NewTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"}, // SPDY and WebSocket upgrades need HTTP/1.1
	}
}

// ServingCertificate makes certFile/keyFile hold a serving certificate for
// the host's kubelet API, signed by ca (the CA the apiserver trusts through
// --kubelet-certificate-authority), valid for hostName and every address in
// ips (the InternalIP its Nodes advertise), and loads it. An existing
// certificate that still covers them is reused.
func ServingCertificate(ca *pki.CA, certFile, keyFile, hostName string, ips []net.IP) (tls.Certificate, error) {
	leaf := pki.Leaf{CommonName: "vessel-host:" + hostName, DNSNames: []string{hostName}, IPs: ips, Server: true}
	if _, err := ca.EnsureLeaf(certFile, keyFile, leaf); err != nil {
		return tls.Certificate{}, fmt.Errorf("kubelet API serving certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load kubelet API serving certificate: %w", err)
	}
	return cert, nil
}
