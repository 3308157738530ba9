package admission

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestMutatingWebhookConfiguration(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----")
	cfg, err := MutatingWebhookConfiguration(WebhookOptions{URL: "https://127.0.0.1:9443/", CABundle: ca})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "vessel" || len(cfg.Webhooks) != 1 {
		t.Fatalf("got %+v", cfg)
	}
	w := cfg.Webhooks[0]
	if *w.ClientConfig.URL != "https://127.0.0.1:9443/mutate/pods" || string(w.ClientConfig.CABundle) != string(ca) {
		t.Errorf("client config %+v", w.ClientConfig)
	}
	if *w.FailurePolicy != admissionregistrationv1.Fail || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		*w.MatchPolicy != admissionregistrationv1.Equivalent || *w.TimeoutSeconds != 10 ||
		*w.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy {
		t.Errorf("policies: %+v", w)
	}
	r := w.Rules[0]
	if len(r.Operations) != 1 || r.Operations[0] != admissionregistrationv1.Create || r.Resources[0] != "pods" || r.APIGroups[0] != "" {
		t.Errorf("rule %+v", r)
	}
	sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"default": true, "vessel-system": false, "kube-system": false} {
		if got := sel.Matches(labels.Set{"kubernetes.io/metadata.name": ns}); got != want {
			t.Errorf("namespace %s selected = %v, want %v", ns, got, want)
		}
	}

	cfg, err = MutatingWebhookConfiguration(WebhookOptions{URL: "https://x", ExcludedNamespaces: []string{}, TimeoutSeconds: 5})
	if err != nil || cfg.Webhooks[0].NamespaceSelector != nil || *cfg.Webhooks[0].TimeoutSeconds != 5 {
		t.Errorf("no exclusions: %+v, %v", cfg, err)
	}
}

func TestValidatingWebhookConfiguration(t *testing.T) {
	svc := &admissionregistrationv1.ServiceReference{Namespace: "vessel-system", Name: "vessel-webhook"}
	cfg, err := ValidatingWebhookConfiguration(WebhookOptions{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"vesselprofiles": "/validate/vesselprofiles", "subnets": "/validate/subnets"}
	if len(cfg.Webhooks) != len(want) {
		t.Fatalf("%d webhooks", len(cfg.Webhooks))
	}
	for _, w := range cfg.Webhooks {
		res := w.Rules[0].Resources[0]
		if *w.ClientConfig.Service.Path != want[res] || w.ClientConfig.Service.Name != "vessel-webhook" {
			t.Errorf("%s: service %+v", res, w.ClientConfig.Service)
		}
		if w.Rules[0].APIGroups[0] != "vessel.dev" || len(w.Rules[0].Operations) != 2 || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("%s: %+v", res, w)
		}
	}
	if svc.Path != nil {
		t.Error("caller's ServiceReference modified")
	}
	if _, err := ValidatingWebhookConfiguration(WebhookOptions{}); err == nil {
		t.Error("no URL or service accepted")
	}
	if _, err := MutatingWebhookConfiguration(WebhookOptions{URL: "https://x", Service: svc}); err == nil {
		t.Error("both URL and service accepted")
	}
}
