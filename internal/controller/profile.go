package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// profileFinalizer keeps a deleted profile until the pods it launched are gone (REFERENCE §1:
// deleting a profile deletes its pods; their controllers recreate them elsewhere).
const profileFinalizer = "vessel.dev/profile"

// profileReconciler keeps each VesselProfile's status phase true to its subnets, and deletes
// the pods a profile launched when the profile is deleted.
type profileReconciler struct {
	client client.Client
	// pods reads pods straight from the API: only a deletion needs them, and a cluster-wide pod
	// cache would cost memory on every cluster Vessel is installed in.
	pods client.Reader
	log  *slog.Logger
}

func (r *profileReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("vesselprofile").
		For(&vesselv1.VesselProfile{}).
		// A Subnet appearing or going away changes the phase of every profile naming it.
		Watches(&vesselv1.Subnet{}, handler.EnqueueRequestsFromMapFunc(r.profilesForSubnet)).
		Complete(r)
}

func (r *profileReconciler) profilesForSubnet(ctx context.Context, o client.Object) []reconcile.Request {
	var list vesselv1.VesselProfileList
	if err := r.client.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, p := range list.Items {
		if slices.Contains(p.Spec.Subnets, o.GetName()) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
		}
	}
	return reqs
}

func (r *profileReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p vesselv1.VesselProfile
	if err := r.client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	log := r.log.With("profile", p.Name)

	if !p.DeletionTimestamp.IsZero() {
		return r.delete(ctx, log, &p)
	}
	// Finalizers are changed with a merge patch of metadata only: an Update would re-send the
	// spec as Go serializes it, which the immutability rule may see as a change.
	orig := p.DeepCopy()
	if controllerutil.AddFinalizer(&p, profileFinalizer) {
		if err := r.client.Patch(ctx, &p, client.MergeFrom(orig)); err != nil {
			return reconcile.Result{}, fmt.Errorf("add finalizer to profile %s: %w", p.Name, err)
		}
	}

	var missing []string
	for _, name := range p.Spec.Subnets {
		var s vesselv1.Subnet
		if err := r.client.Get(ctx, client.ObjectKey{Name: name}, &s); apierrors.IsNotFound(err) {
			missing = append(missing, name)
		} else if err != nil {
			return reconcile.Result{}, fmt.Errorf("get subnet %s of profile %s: %w", name, p.Name, err)
		}
	}
	phase, msg := vesselv1.ProfileActive, ""
	if len(missing) > 0 {
		phase = vesselv1.ProfileCreateFailed
		msg = fmt.Sprintf("subnet %s does not exist: create it, or replace the profile with one listing existing subnets", strings.Join(missing, ", "))
	}
	return reconcile.Result{}, r.setPhase(ctx, log, &p, phase, msg)
}

func (r *profileReconciler) delete(ctx context.Context, log *slog.Logger, p *vesselv1.VesselProfile) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(p, profileFinalizer) {
		return reconcile.Result{}, nil
	}
	if err := r.setPhase(ctx, log, p, vesselv1.ProfileDeleting, "deleting the pods this profile launched"); err != nil {
		return reconcile.Result{}, err
	}
	var pods corev1.PodList
	if err := r.pods.List(ctx, &pods, client.MatchingLabels{vesselv1.LabelProfile: p.Name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("list pods of profile %s: %w", p.Name, err)
	}
	remaining := 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.SchedulerName != vesselv1.SchedulerName {
			continue // labelled by its author, never launched through the profile
		}
		remaining++
		if pod.DeletionTimestamp.IsZero() {
			log.Info("deleting pod of deleted profile", "pod", client.ObjectKeyFromObject(pod))
			if err := r.client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
				_ = r.setPhase(ctx, log, p, vesselv1.ProfileDeleteFailed, fmt.Sprintf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err))
				return reconcile.Result{}, err
			}
		}
	}
	if remaining > 0 {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	orig := p.DeepCopy()
	controllerutil.RemoveFinalizer(p, profileFinalizer)
	return reconcile.Result{}, client.IgnoreNotFound(r.client.Patch(ctx, p, client.MergeFrom(orig)))
}

func (r *profileReconciler) setPhase(ctx context.Context, log *slog.Logger, p *vesselv1.VesselProfile, phase vesselv1.ProfilePhase, msg string) error {
	if p.Status.Phase == phase && p.Status.Message == msg && p.Status.ObservedGeneration == p.Generation {
		return nil
	}
	log.Info("profile phase", "phase", phase, "message", msg)
	p.Status.Phase, p.Status.Message, p.Status.ObservedGeneration = phase, msg, p.Generation
	if err := r.client.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("update status of profile %s: %w", p.Name, err)
	}
	return nil
}
