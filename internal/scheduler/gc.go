package scheduler

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	coordinationv1 "k8s.io/api/coordination/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// reconcileSandbox deletes a Sandbox whose pod is gone or was replaced by
// another pod of the same name. The host agent tears the sandbox down and
// removes the finalizer; the Node goes once the Sandbox is gone.
func (s *Scheduler) reconcileSandbox(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return reconcile.Result{}, nil
	}
	sb := &vesselv1.Sandbox{}
	if err := s.client.Get(ctx, req.NamespacedName, sb); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if sb.DeletionTimestamp != nil || sb.Spec.Owner.Kind != vesselv1.OwnerPod {
		return reconcile.Result{}, nil
	}
	owner := types.NamespacedName{Namespace: sb.Spec.Owner.Namespace, Name: sb.Spec.Owner.Name}
	pod := &corev1.Pod{}
	err := s.client.Get(ctx, owner, pod)
	if err == nil && pod.UID == sb.Spec.Owner.UID {
		return reconcile.Result{}, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	// The cache may lag behind: only the apiserver can say a pod is gone.
	err = s.apiReader.Get(ctx, owner, pod)
	switch {
	case err == nil && pod.UID == sb.Spec.Owner.UID:
		return reconcile.Result{}, nil
	case err != nil && !apierrors.IsNotFound(err):
		return reconcile.Result{}, err
	}
	s.log.Info("deleting sandbox of a pod that is gone", "sandbox", sb.Name, "pod", owner.String(), "host", sb.Spec.Host)
	return reconcile.Result{}, s.deleteSandbox(ctx, sb)
}

func (s *Scheduler) deleteSandbox(ctx context.Context, sb *vesselv1.Sandbox) error {
	err := s.client.Delete(ctx, sb, client.Preconditions{UID: &sb.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete sandbox %s: %w", sb.Name, err)
	}
	return nil
}

// reconcileNode deletes a Vessel Node whose Sandbox is gone.
func (s *Scheduler) reconcileNode(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return reconcile.Result{}, nil
	}
	node := &corev1.Node{}
	if err := s.client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if node.DeletionTimestamp != nil || node.Labels[vesselv1.LabelComputeType] != vesselv1.ComputeTypeVessel {
		return reconcile.Result{}, nil
	}
	sbName := node.Annotations[vesselv1.AnnotationSandbox]
	gone, err := s.sandboxGone(ctx, sbName)
	if err != nil || !gone {
		return reconcile.Result{}, err
	}
	s.log.Info("deleting node whose sandbox is gone", "node", node.Name, "sandbox", sbName)
	return reconcile.Result{}, s.deleteNode(ctx, node)
}

// sandboxGone reports whether the Sandbox called name no longer exists,
// asking the apiserver when the scheduler's own view says so.
func (s *Scheduler) sandboxGone(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return true, nil
	}
	key := types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: name}
	if err := s.client.Get(ctx, key, &vesselv1.Sandbox{}); err == nil {
		return false, nil
	}
	// Not in the cache: it may be too new for the cache, so ask the apiserver.
	err := s.apiReader.Get(ctx, key, &vesselv1.Sandbox{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

func (s *Scheduler) deleteNode(ctx context.Context, node *corev1.Node) error {
	err := s.client.Delete(ctx, node, client.Preconditions{UID: &node.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete node %s: %w", node.Name, err)
	}
	return nil
}

// reconcileHost fails the sandboxes of a lost host: a Host whose Lease
// expired (or that never got one). While the host is alive it looks again
// when the Lease would expire.
func (s *Scheduler) reconcileHost(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return reconcile.Result{}, nil
	}
	var host *vesselv1.Host
	h := &vesselv1.Host{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: req.Name}, h); err == nil {
		host = h
	} else if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	var lease *coordinationv1.Lease
	l := &coordinationv1.Lease{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: req.Name}, l); err == nil {
		lease = l
	} else if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	now := s.cfg.Now()
	_, lost, recheck, why := liveness(host, lease, now)
	if !lost {
		if recheck.IsZero() {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{RequeueAfter: recheck.Sub(now) + 100e6}, nil
	}
	names := s.state.onHost(req.Name)
	if len(names) == 0 {
		return reconcile.Result{}, nil
	}
	s.log.Warn("host lost: failing its pods", "host", req.Name, "reason", why, "sandboxes", len(names))
	for _, name := range names {
		if err := s.failSandbox(ctx, name, req.Name, why); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// failSandbox ends a sandbox whose host is lost: its pod becomes Failed
// (reason HostLost), the Sandbox is deleted and, since no agent will tear it
// down, its finalizer removed, and its Node deleted.
func (s *Scheduler) failSandbox(ctx context.Context, name, hostName, why string) error {
	sb := &vesselv1.Sandbox{}
	if err := s.apiReader.Get(ctx, types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: name}, sb); err != nil {
		if apierrors.IsNotFound(err) {
			s.state.forget(name)
			return nil
		}
		return err
	}
	if sb.Spec.Host != hostName {
		return nil
	}
	log := s.log.With("sandbox", name, "host", hostName, "pod", sb.Spec.Owner.Namespace+"/"+sb.Spec.Owner.Name)
	if sb.Spec.Owner.Kind == vesselv1.OwnerPod {
		if err := s.failPod(ctx, sb, hostName, why); err != nil {
			return err
		}
	}
	// No agent will tear the sandbox down: drop the finalizer, then delete.
	if i := slices.Index(sb.Finalizers, vesselv1.FinalizerSandbox); i >= 0 {
		patch := client.MergeFromWithOptions(sb.DeepCopy(), client.MergeFromWithOptimisticLock{})
		sb.Finalizers = slices.Delete(sb.Finalizers, i, i+1)
		if err := s.client.Patch(ctx, sb, patch); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer of sandbox %s: %w", name, err)
		}
	}
	if sb.DeletionTimestamp == nil {
		if err := s.deleteSandbox(ctx, sb); err != nil {
			return err
		}
	}
	if nodeName := nodeNameOf(sb); nodeName != "" {
		node := &corev1.Node{}
		err := s.apiReader.Get(ctx, client.ObjectKey{Name: nodeName}, node)
		if err == nil && node.Annotations[vesselv1.AnnotationSandbox] == name {
			if err := s.deleteNode(ctx, node); err != nil {
				return err
			}
		} else if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	log.Info("sandbox of lost host removed")
	return nil
}

// failPod sets the pod of sb Failed with reason HostLost, unless it has
// already finished or is another pod by now.
func (s *Scheduler) failPod(ctx context.Context, sb *vesselv1.Sandbox, hostName, why string) error {
	pods := s.clientset.CoreV1().Pods(sb.Spec.Owner.Namespace)
	pod, err := pods.Get(ctx, sb.Spec.Owner.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pod of sandbox %s: %w", sb.Name, err)
	}
	if pod.UID != sb.Spec.Owner.UID || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	msg := fmt.Sprintf("host %s was lost (%s); the pod's sandbox is gone", hostName, why)
	pod.Status.Phase = corev1.PodFailed
	pod.Status.Reason = vesselv1.ReasonHostLost
	pod.Status.Message = msg
	now := metav1.NewTime(s.cfg.Now())
	for i := range pod.Status.Conditions {
		c := &pod.Status.Conditions[i]
		if (c.Type == corev1.PodReady || c.Type == corev1.ContainersReady) && c.Status != corev1.ConditionFalse {
			c.Status, c.Reason, c.LastTransitionTime = corev1.ConditionFalse, "PodFailed", now
		}
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{FieldManager: Name}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("fail pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	s.recorder.Event(pod, corev1.EventTypeWarning, eventHostLost, msg)
	s.log.Warn("pod failed: host lost", "pod", pod.Namespace+"/"+pod.Name, "host", hostName, "sandbox", sb.Name)
	return nil
}
