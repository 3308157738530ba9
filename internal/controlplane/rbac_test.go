package controlplane

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
)

// The priming only saves time if it writes the whole upstream policy; the upstream hook then has
// nothing left to create. A fake clientset stands in for the apiserver here: what is tested is
// which objects get written, not the apiserver.
func TestPrimeBootstrapPolicyWritesTheUpstreamPolicyOnce(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	if err := primeBootstrapPolicy(ctx, client); err != nil {
		t.Fatalf("prime: %v", err)
	}
	for _, r := range append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...) {
		got, err := client.RbacV1().ClusterRoles().Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("clusterrole %s: %v", r.Name, err)
			continue
		}
		if len(got.Rules) != len(r.Rules) || got.Annotations["rbac.authorization.kubernetes.io/autoupdate"] != "true" {
			t.Errorf("clusterrole %s: %d rules, annotations %v; want %d rules and autoupdate=true", r.Name, len(got.Rules), got.Annotations, len(r.Rules))
		}
	}
	for _, b := range append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...) {
		if _, err := client.RbacV1().ClusterRoleBindings().Get(ctx, b.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("clusterrolebinding %s: %v", b.Name, err)
		}
	}
	for ns, roles := range bootstrappolicy.NamespaceRoles() {
		for _, r := range roles {
			if _, err := client.RbacV1().Roles(ns).Get(ctx, r.Name, metav1.GetOptions{}); err != nil {
				t.Errorf("role %s/%s: %v", ns, r.Name, err)
			}
		}
	}
	for ns, bindings := range bootstrappolicy.NamespaceRoleBindings() {
		for _, b := range bindings {
			if _, err := client.RbacV1().RoleBindings(ns).Get(ctx, b.Name, metav1.GetOptions{}); err != nil {
				t.Errorf("rolebinding %s/%s: %v", ns, b.Name, err)
			}
		}
	}

	// A data directory that has the policy costs one read.
	client.ClearActions()
	if err := primeBootstrapPolicy(ctx, client); err != nil {
		t.Fatalf("prime again: %v", err)
	}
	if a := client.Actions(); len(a) != 1 || a[0].GetVerb() != "get" {
		t.Errorf("second prime made %d requests (%v); want a single get", len(a), a)
	}
}
