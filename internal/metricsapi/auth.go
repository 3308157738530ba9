package metricsapi

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
)

// FrontProxyAuth returns what an aggregated API server uses: the user named in the request
// headers (X-Remote-User, X-Remote-Group, X-Remote-Extra-*) of a client presenting a
// certificate with CN front-proxy-client signed by frontProxyCAPEM (the apiserver's
// --requestheader-client-ca-file), and decisions by SubjectAccessReview, cached 10 s (allow and
// deny, as metrics-server's generic apiserver does).
func FrontProxyAuth(client kubernetes.Interface, frontProxyCAPEM []byte) (authenticator.Request, authorizer.Authorizer, error) {
	ca, err := dynamiccertificates.NewStaticCAContent("vessel-front-proxy-ca", frontProxyCAPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API front-proxy CA: %w", err)
	}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		RequestHeaderConfig: &authenticatorfactory.RequestHeaderConfig{
			UsernameHeaders:     headerrequest.StaticStringSlice{"X-Remote-User"},
			UIDHeaders:          headerrequest.StaticStringSlice{"X-Remote-Uid"},
			GroupHeaders:        headerrequest.StaticStringSlice{"X-Remote-Group"},
			ExtraHeaderPrefixes: headerrequest.StaticStringSlice{"X-Remote-Extra-"},
			CAContentProvider:   ca,
			AllowedClientNames:  headerrequest.StaticStringSlice{"front-proxy-client"},
		},
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API authenticator: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(),
		AllowCacheTTL:             10 * time.Second,
		DenyCacheTTL:              10 * time.Second,
		WebhookRetryBackoff:       &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5},
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API authorizer: %w", err)
	}
	return authn, authz, nil
}
