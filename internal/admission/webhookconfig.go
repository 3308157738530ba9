package admission

import (
	"errors"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// Names of the webhook configurations and their webhooks.
const (
	ConfigurationName   = "vessel"
	webhookPods         = "pods.vessel.dev"
	webhookProfiles     = "vesselprofiles.vessel.dev"
	webhookSubnets      = "subnets.vessel.dev"
	defaultTimeoutSecs  = 10
	namespaceNameLabel  = "kubernetes.io/metadata.name"
	defaultKubeSystemNS = "kube-system"
)

// WebhookOptions say where the apiserver reaches the webhook.
type WebhookOptions struct {
	// URL is the base address, e.g. https://127.0.0.1:9443, used when the
	// webhook runs outside the cluster (vessel up). Exclusive with Service.
	URL string
	// Service is the in-cluster Service serving the webhook; its Path is
	// ignored, each webhook gets its own. Exclusive with URL.
	Service *admissionregistrationv1.ServiceReference
	// CABundle is the PEM CA that signed the serving certificate.
	CABundle []byte
	// TimeoutSeconds bounds each call; default 10, the apiserver's maximum
	// is 30. A SubjectAccessReview round trip sits inside it.
	TimeoutSeconds int32
	// ExcludedNamespaces never reach the pod webhook. nil means
	// vessel-system and kube-system; pass an empty, non-nil slice to
	// exclude nothing (e.g. to run CoreDNS on Vessel through a profile
	// selecting kube-system).
	ExcludedNamespaces []string
}

func (o WebhookOptions) clientConfig(path string) (admissionregistrationv1.WebhookClientConfig, error) {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: o.CABundle}
	switch {
	case (o.URL == "") == (o.Service == nil):
		return cc, errors.New("webhook options: set exactly one of URL and Service")
	case o.URL != "":
		u := strings.TrimSuffix(o.URL, "/") + path
		cc.URL = &u
	default:
		svc := *o.Service
		svc.Path = &path
		cc.Service = &svc
	}
	return cc, nil
}

func (o WebhookOptions) timeout() *int32 {
	t := o.TimeoutSeconds
	if t <= 0 {
		t = defaultTimeoutSecs
	}
	return &t
}

// MutatingWebhookConfiguration returns the pod webhook's configuration.
//
// Choices: failurePolicy Fail, because a pod a profile selects must never
// silently run elsewhere, unisolated and unauthorized, when the webhook is
// down; namespaces in ExcludedNamespaces are left out so Vessel's own and
// the cluster's system pods can always be created, even then. No
// objectSelector: letting a pod opt out by label would bypass profile
// authorization. reinvocationPolicy Never: the patch is not idempotent
// (sidecars), and sizing happens once.
func MutatingWebhookConfiguration(o WebhookOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	cc, err := o.clientConfig(PathMutatePods)
	if err != nil {
		return nil, fmt.Errorf("build mutating webhook configuration: %w", err)
	}
	excluded := o.ExcludedNamespaces
	if excluded == nil {
		excluded = []string{vesselv1.SystemNamespace, defaultKubeSystemNS}
	}
	var nsSelector *metav1.LabelSelector
	if len(excluded) > 0 {
		nsSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn, Values: excluded,
		}}}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    webhookPods,
			ClientConfig:            cc,
			Rules:                   []admissionregistrationv1.RuleWithOperations{rule("", "pods", admissionregistrationv1.NamespacedScope, admissionregistrationv1.Create)},
			FailurePolicy:           ptr(admissionregistrationv1.Fail),
			MatchPolicy:             ptr(admissionregistrationv1.Equivalent),
			NamespaceSelector:       nsSelector,
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          o.timeout(),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}, nil
}

// ValidatingWebhookConfiguration returns the configuration validating
// VesselProfile and Subnet creates and updates, failing closed: an
// unvalidated profile could point pods at a subnet that does not exist.
func ValidatingWebhookConfiguration(o WebhookOptions) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	var hooks []admissionregistrationv1.ValidatingWebhook
	for _, w := range []struct{ name, path, resource string }{
		{webhookProfiles, PathValidateProfiles, "vesselprofiles"},
		{webhookSubnets, PathValidateSubnets, "subnets"},
	} {
		cc, err := o.clientConfig(w.path)
		if err != nil {
			return nil, fmt.Errorf("build validating webhook configuration: %w", err)
		}
		hooks = append(hooks, admissionregistrationv1.ValidatingWebhook{
			Name:         w.name,
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{rule(vesselv1.GroupName, w.resource, admissionregistrationv1.ClusterScope,
				admissionregistrationv1.Create, admissionregistrationv1.Update)},
			FailurePolicy:           ptr(admissionregistrationv1.Fail),
			MatchPolicy:             ptr(admissionregistrationv1.Equivalent),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          o.timeout(),
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks:   hooks,
	}, nil
}

func rule(group, resource string, scope admissionregistrationv1.ScopeType, ops ...admissionregistrationv1.OperationType) admissionregistrationv1.RuleWithOperations {
	version := "v1"
	return admissionregistrationv1.RuleWithOperations{
		Operations: ops,
		Rule: admissionregistrationv1.Rule{
			APIGroups:   []string{group},
			APIVersions: []string{version},
			Resources:   []string{resource},
			Scope:       &scope,
		},
	}
}

func ptr[T any](v T) *T { return &v }
