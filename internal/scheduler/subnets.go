package scheduler

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
)

// subnetStatusInterval is the least time between two writes of one Subnet's
// status. A burst of pods changes the counts once per Sandbox; writing each
// change cost the apiserver a write per pod for a number nobody reads that
// often. The last count is always written, at most this much later.
const subnetStatusInterval = time.Second

// reconcileSubnet keeps a Subnet's status.allocated and status.available in
// step with the Sandboxes holding its addresses (counted from the cache,
// which every Sandbox event has already reached).
func (s *Scheduler) reconcileSubnet(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return reconcile.Result{}, nil
	}
	sub := &vesselv1.Subnet{}
	if err := s.client.Get(ctx, req.NamespacedName, sub); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	parsed, err := ipam.ParseSubnet(sub.Spec.CIDR, sub.Spec.Gateway)
	if err != nil {
		return reconcile.Result{}, nil // admission refuses these; nothing to count
	}
	var list vesselv1.SandboxList
	if err := s.client.List(ctx, &list, client.InNamespace(vesselv1.SystemNamespace)); err != nil {
		return reconcile.Result{}, err
	}
	allocated := 0
	for i := range list.Items {
		if list.Items[i].Spec.Network.Subnet == sub.Name {
			allocated++
		}
	}
	available := max(parsed.Size()-allocated, 0)
	if sub.Status.Allocated == int32(allocated) && sub.Status.Available == int32(available) {
		return reconcile.Result{}, nil
	}
	if wait := subnetStatusInterval - time.Since(s.subnetWritten[sub.Name]); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	patch := client.MergeFrom(sub.DeepCopy())
	sub.Status.Allocated, sub.Status.Available = int32(allocated), int32(available)
	if err := s.client.Status().Patch(ctx, sub, patch); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	s.subnetWritten[sub.Name] = time.Now()
	return reconcile.Result{}, nil
}
