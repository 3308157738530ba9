package controlplane

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-helpers/auth/rbac/reconciliation"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
)

// primeHookName is the post-start hook that creates the bootstrap RBAC policy early.
const primeHookName = "vessel-prime-bootstrap-rbac"

// primeWorkers is how many objects primeBootstrapPolicy writes at once: enough for etcd to batch
// its WAL syncs, few enough to leave the apiserver's start-up work its CPU.
const primeWorkers = 4

// primeBootstrapPolicy creates Kubernetes' bootstrap roles and bindings on a fresh cluster.
//
// kube-apiserver's own post-start hook (rbac/bootstrap-roles) does the same work, but it sleeps a
// whole second before its first attempt and then writes about 150 objects one at a time; being
// the last readiness check, on a fresh data directory it held /readyz for that second plus the
// writes. Run in the background as soon as the server serves, this does the writes during that
// second, so the upstream hook finds everything in place and only confirms it, as on a restart.
// It uses the same policy and the same idempotent reconciliation as upstream, so racing the hook
// is harmless, and the upstream hook stays the one that decides readiness. On a data directory
// that already has the policy it returns after one read.
func primeBootstrapPolicy(ctx context.Context, client kubernetes.Interface) error {
	if _, err := client.RbacV1().ClusterRoles().Get(ctx, "cluster-admin", metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("look for the bootstrap RBAC policy: %w", err)
	}
	var jobs []func() error
	for _, r := range append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...) {
		opts := reconciliation.ReconcileRoleOptions{
			Role:    reconciliation.ClusterRoleRuleOwner{ClusterRole: &r},
			Client:  reconciliation.ClusterRoleModifier{Client: client.RbacV1().ClusterRoles()},
			Confirm: true,
		}
		jobs = append(jobs, func() error { _, err := opts.Run(); return wrapPrime(err, "clusterrole", "", r.Name) })
	}
	for _, b := range append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...) {
		opts := reconciliation.ReconcileRoleBindingOptions{
			RoleBinding: reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: &b},
			Client:      reconciliation.ClusterRoleBindingClientAdapter{Client: client.RbacV1().ClusterRoleBindings()},
			Confirm:     true,
		}
		jobs = append(jobs, func() error { _, err := opts.Run(); return wrapPrime(err, "clusterrolebinding", "", b.Name) })
	}
	// Namespaced roles and bindings (a handful, in kube-system and kube-public) are written in
	// order by one job: their modifiers create the namespace first, which must not race itself.
	jobs = append(jobs, func() error {
		for ns, roles := range bootstrappolicy.NamespaceRoles() {
			for _, r := range roles {
				opts := reconciliation.ReconcileRoleOptions{
					Role:    reconciliation.RoleRuleOwner{Role: &r},
					Client:  reconciliation.RoleModifier{Client: client.RbacV1(), NamespaceClient: client.CoreV1().Namespaces()},
					Confirm: true,
				}
				if _, err := opts.Run(); err != nil {
					return wrapPrime(err, "role", ns, r.Name)
				}
			}
		}
		for ns, bindings := range bootstrappolicy.NamespaceRoleBindings() {
			for _, b := range bindings {
				opts := reconciliation.ReconcileRoleBindingOptions{
					RoleBinding: reconciliation.RoleBindingAdapter{RoleBinding: &b},
					Client:      reconciliation.RoleBindingClientAdapter{Client: client.RbacV1(), NamespaceClient: client.CoreV1().Namespaces()},
					Confirm:     true,
				}
				if _, err := opts.Run(); err != nil {
					return wrapPrime(err, "rolebinding", ns, b.Name)
				}
			}
		}
		return nil
	})
	// Every job runs even when one fails (upstream's hook retries what is left); Wait returns
	// the first error. The reconciliation's requests carry no context: a stopping server ends
	// them.
	var g errgroup.Group
	g.SetLimit(primeWorkers)
	for _, job := range jobs {
		g.Go(job)
	}
	return g.Wait()
}

func wrapPrime(err error, kind, ns, name string) error {
	if err == nil {
		return nil
	}
	if ns != "" {
		name = ns + "/" + name
	}
	return fmt.Errorf("create %s %s: %w", kind, name, err)
}
