package image

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
)

// secretKeychain resolves registry credentials from image pull Secrets, the way the kubelet does
// for a pod's imagePullSecrets: the first Secret with an entry for the registry wins.
type secretKeychain struct {
	entries []dockerAuth
}

type dockerAuth struct {
	host string // registry host, docker.io aliases folded to "docker.io"
	cfg  authn.AuthConfig
}

// dockerConfigEntry is one value of the "auths" map in a Docker config file.
type dockerConfigEntry struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// KeychainFromSecrets builds a keychain from Secrets of type kubernetes.io/dockerconfigjson (and the
// legacy kubernetes.io/dockercfg). Secrets of other types are ignored; a malformed pull Secret is
// an error naming it, because silently pulling anonymously would hide the mistake.
func KeychainFromSecrets(secrets []corev1.Secret) (authn.Keychain, error) {
	kc := &secretKeychain{}
	for _, s := range secrets {
		var auths map[string]dockerConfigEntry
		switch s.Type {
		case corev1.SecretTypeDockerConfigJson:
			var cfg struct {
				Auths map[string]dockerConfigEntry `json:"auths"`
			}
			if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
				return nil, fmt.Errorf("read pull secret %s/%s: %w", s.Namespace, s.Name, err)
			}
			auths = cfg.Auths
		case corev1.SecretTypeDockercfg:
			if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &auths); err != nil {
				return nil, fmt.Errorf("read pull secret %s/%s: %w", s.Namespace, s.Name, err)
			}
		default:
			continue
		}
		for key, e := range auths {
			cfg := authn.AuthConfig{Username: e.Username, Password: e.Password,
				IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
			if e.Auth != "" && cfg.Username == "" {
				raw, err := base64.StdEncoding.DecodeString(e.Auth)
				if err != nil {
					return nil, fmt.Errorf("read pull secret %s/%s: auth for %s: %w", s.Namespace, s.Name, key, err)
				}
				user, pass, ok := strings.Cut(string(raw), ":")
				if !ok {
					return nil, fmt.Errorf("read pull secret %s/%s: auth for %s is not user:password", s.Namespace, s.Name, key)
				}
				cfg.Username, cfg.Password = user, pass
			}
			kc.entries = append(kc.entries, dockerAuth{host: configHost(key), cfg: cfg})
		}
	}
	return kc, nil
}

// Resolve implements authn.Keychain. It never fails: no matching entry means anonymous access.
func (kc *secretKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := configHost(r.RegistryStr())
	for _, e := range kc.entries {
		if e.host == host {
			return authn.FromConfig(e.cfg), nil
		}
	}
	return authn.Anonymous, nil
}

// configHost reduces a Docker config key ("https://index.docker.io/v1/", "quay.io", "host:5000/x")
// to the registry host it names.
func configHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	switch key {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return key
}
