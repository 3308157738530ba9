package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

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
func primeBootstrapPolicy(ctx context.Context, client kubernetes.Interface, log *slog.Logger) error {
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
	// Namespaced roles go in kube-system and kube-public; their modifiers create the namespace
	// first, so one namespace's objects are written in order by a single job to avoid racing
	// that creation with itself.
	roles, bindings := bootstrappolicy.NamespaceRoles(), bootstrappolicy.NamespaceRoleBindings()
	namespaces := map[string]bool{}
	for ns := range roles {
		namespaces[ns] = true
	}
	for ns := range bindings {
		namespaces[ns] = true
	}
	for ns := range namespaces {
		jobs = append(jobs, func() error {
			for _, r := range roles[ns] {
				opts := reconciliation.ReconcileRoleOptions{
					Role:    reconciliation.RoleRuleOwner{Role: &r},
					Client:  reconciliation.RoleModifier{Client: client.RbacV1(), NamespaceClient: client.CoreV1().Namespaces()},
					Confirm: true,
				}
				if _, err := opts.Run(); err != nil {
					return wrapPrime(err, "role", ns, r.Name)
				}
			}
			for _, b := range bindings[ns] {
				opts := reconciliation.ReconcileRoleBindingOptions{
					RoleBinding: reconciliation.RoleBindingAdapter{RoleBinding: &b},
					Client:      reconciliation.RoleBindingClientAdapter{Client: client.RbacV1(), NamespaceClient: client.CoreV1().Namespaces()},
					Confirm:     true,
				}
				if _, err := opts.Run(); err != nil {
					return wrapPrime(err, "rolebinding", ns, b.Name)
				}
			}
			return nil
		})
	}
	return runJobs(ctx, jobs, primeWorkers, log)
}

// runJobs runs jobs on n workers until they are done or ctx ends. A failed job is logged and the
// rest go on (upstream's hook retries anything left); the first error is returned.
func runJobs(ctx context.Context, jobs []func() error, n int, log *slog.Logger) error {
	ch := make(chan func() error)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range n {
		wg.Go(func() {
			for job := range ch {
				if err := job(); err != nil {
					log.Debug("priming bootstrap RBAC policy", "err", err)
					once.Do(func() { first = err })
				}
			}
		})
	}
	var err error
feed:
	for _, job := range jobs {
		select {
		case ch <- job:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err != nil {
		return err
	}
	return first
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
