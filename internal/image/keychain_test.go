package image

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
)

// pullSecret builds a kubernetes.io/dockerconfigjson Secret the way `kubectl create secret
// docker-registry` does.
func pullSecret(host, user, pass string) corev1.Secret {
	return corev1.Secret{
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"` + host + `":{"username":"` + user + `","password":"` + pass + `"}}}`)},
	}
}

func TestKeychainFromSecrets(t *testing.T) {
	legacy := corev1.Secret{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{
		corev1.DockerConfigKey: []byte(`{"quay.io":{"auth":"cXVheTpzZWNyZXQ="}}`)}} // quay:secret
	ignored := corev1.Secret{Type: corev1.SecretTypeOpaque}
	kc, err := KeychainFromSecrets([]corev1.Secret{
		ignored, pullSecret("https://index.docker.io/v1/", "hub", "pw"), legacy,
		pullSecret("127.0.0.1:5000", "loc", "pw2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"nginx":                  "hub",
		"quay.io/a/b":            "quay",
		"127.0.0.1:5000/demo":    "loc",
		"ghcr.io/unknown/secret": "",
	} {
		r, _ := name.ParseReference(ref)
		a, err := kc.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.Authorization()
		if cfg.Username != want {
			t.Errorf("%s: user %q, want %q", ref, cfg.Username, want)
		}
		if want == "" && a != authn.Anonymous {
			t.Errorf("%s: want anonymous", ref)
		}
	}
	bad := corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{
		corev1.DockerConfigJsonKey: []byte(`{not json`)}}
	if _, err := KeychainFromSecrets([]corev1.Secret{bad}); err == nil {
		t.Error("malformed secret accepted")
	}
}
