package scheduler

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// setupControllers registers the five reconcilers:
//
//   - pods: places pending pods; woken by the pods themselves and, for the
//     ones waiting for room, by Hosts, Leases (a host coming alive), deleted
//     Sandboxes (freed capacity), Subnets and VesselProfiles;
//   - sandboxes: deletes Sandboxes whose pod is gone;
//   - nodes: deletes Vessel Nodes whose Sandbox is gone;
//   - subnets: keeps Subnet status (allocated, available) up to date;
//   - hosts: fails the sandboxes of hosts whose Lease expired.
func (s *Scheduler) setupControllers() error {
	opts := func(workers int) controller.Options {
		return controller.Options{MaxConcurrentReconciles: workers, SkipNameValidation: ptr.To(true)}
	}
	retryWaiting := handler.EnqueueRequestsFromMapFunc(s.waitingPods)

	err := builder.ControllerManagedBy(s.mgr).
		Named("vessel-scheduler-pods").
		For(&corev1.Pod{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			pod, ok := o.(*corev1.Pod)
			return ok && wantsScheduling(pod)
		}))).
		Watches(&vesselv1.Host{}, retryWaiting, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&coordinationv1.Lease{}, retryWaiting, builder.WithPredicates(leaseCameAlive{s})).
		Watches(&vesselv1.Sandbox{}, retryWaiting, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true },
		})).
		Watches(&vesselv1.Subnet{}, retryWaiting).
		Watches(&vesselv1.VesselProfile{}, retryWaiting).
		WithOptions(opts(4)).
		Complete(reconcile.Func(s.reconcilePod))
	if err != nil {
		return err
	}

	err = builder.ControllerManagedBy(s.mgr).
		Named("vessel-scheduler-sandboxes").
		For(&vesselv1.Sandbox{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{
				Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(o.GetUID()),
			}}}
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true },
		})).
		WithOptions(opts(2)).
		Complete(reconcile.Func(s.reconcileSandbox))
	if err != nil {
		return err
	}

	err = builder.ControllerManagedBy(s.mgr).
		Named("vessel-scheduler-nodes").
		For(&corev1.Node{}, builder.WithPredicates(predicate.Funcs{
			// Heartbeats change nothing the collector looks at.
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectOld.GetAnnotations()[vesselv1.AnnotationSandbox] != e.ObjectNew.GetAnnotations()[vesselv1.AnnotationSandbox]
			},
		})).
		Watches(&vesselv1.Sandbox{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			sb, ok := o.(*vesselv1.Sandbox)
			if !ok || nodeNameOf(sb) == "" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: nodeNameOf(sb)}}}
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true },
		})).
		WithOptions(opts(2)).
		Complete(reconcile.Func(s.reconcileNode))
	if err != nil {
		return err
	}

	err = builder.ControllerManagedBy(s.mgr).
		Named("vessel-scheduler-subnets").
		For(&vesselv1.Subnet{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&vesselv1.Sandbox{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			sb, ok := o.(*vesselv1.Sandbox)
			if !ok || sb.Spec.Network.Subnet == "" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: sb.Spec.Network.Subnet}}}
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		WithOptions(opts(1)).
		Complete(reconcile.Func(s.reconcileSubnet))
	if err != nil {
		return err
	}

	return builder.ControllerManagedBy(s.mgr).
		Named("vessel-scheduler-hosts").
		For(&vesselv1.Host{}).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
		})).
		Watches(&vesselv1.Sandbox{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			sb, ok := o.(*vesselv1.Sandbox)
			if !ok || sb.Spec.Host == "" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: sb.Spec.Host}}}
		}), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return false },
		})).
		WithOptions(opts(1)).
		Complete(reconcile.Func(s.reconcileHost))
}

// waitingPods lists the pods still to be placed, to try them again when
// something that may make room changes.
func (s *Scheduler) waitingPods(ctx context.Context, _ client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := s.client.List(ctx, &pods); err != nil {
		s.log.Error("list pods waiting for placement", "err", err)
		return nil
	}
	var out []reconcile.Request
	for i := range pods.Items {
		p := &pods.Items[i]
		if wantsScheduling(p) && p.Annotations[vesselv1.AnnotationExceedsMaxSize] == "" {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
		}
	}
	return out
}

// leaseCameAlive passes Lease events that may make a host available: a new
// Lease, or a renewal of one that had expired. Routine renewals of live
// hosts do not retry every waiting pod.
type leaseCameAlive struct{ s *Scheduler }

func (p leaseCameAlive) Create(event.CreateEvent) bool   { return true }
func (p leaseCameAlive) Delete(event.DeleteEvent) bool   { return false }
func (p leaseCameAlive) Generic(event.GenericEvent) bool { return false }
func (p leaseCameAlive) Update(e event.UpdateEvent) bool {
	old, ok := e.ObjectOld.(*coordinationv1.Lease)
	if !ok {
		return false
	}
	alive, _, _, _ := liveness(nil, old, p.s.cfg.Now())
	return !alive
}
