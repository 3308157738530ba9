package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-base/version"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
	"github.com/vessel-dev/vessel/internal/sizing"
)

// Pod condition reasons and event reasons, as kube-scheduler uses them.
const (
	reasonUnschedulable    = "Unschedulable"
	eventScheduled         = "Scheduled"
	eventFailedScheduling  = "FailedScheduling"
	eventHostLost          = vesselv1.ReasonHostLost
	sandboxDeletingRecheck = 5 * time.Second
)

// wantsScheduling reports whether the scheduler must place pod now.
func wantsScheduling(pod *corev1.Pod) bool {
	return pod.Spec.SchedulerName == Name &&
		pod.Spec.NodeName == "" &&
		pod.DeletionTimestamp == nil &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// reconcilePod places one pending pod: find or create its Sandbox, create
// its Node, bind. Each step checks what exists first, so a scheduler killed
// between two steps finishes the job when it sees the pod again.
func (s *Scheduler) reconcilePod(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return reconcile.Result{}, nil
	}
	pod := &corev1.Pod{}
	if err := s.client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			s.resetBackoff(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if !wantsScheduling(pod) {
		s.resetBackoff(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	log := s.log.With("pod", req.String())

	if msg, tooLarge := pod.Annotations[vesselv1.AnnotationExceedsMaxSize]; tooLarge {
		if msg == "" {
			msg = sizing.ErrExceedsMaxSize.Error()
		}
		return reconcile.Result{}, s.setPodScheduledFalse(ctx, pod, vesselv1.ReasonExceedsMaxSize, msg)
	}
	size, err := sizing.ForPod(pod)
	if errors.Is(err, sizing.ErrExceedsMaxSize) {
		return reconcile.Result{}, s.setPodScheduledFalse(ctx, pod, vesselv1.ReasonExceedsMaxSize, err.Error())
	}

	sb, err := s.sandboxFor(ctx, pod, size)
	var unschedulable *unschedulableError
	switch {
	case errors.As(err, &unschedulable):
		delay := s.backoff(req.NamespacedName)
		log.Info("pod unschedulable", "reason", unschedulable.msg, "retryIn", delay)
		s.recorder.Event(pod, corev1.EventTypeWarning, eventFailedScheduling, unschedulable.msg)
		if err := s.setPodScheduledFalse(ctx, pod, reasonUnschedulable, unschedulable.msg); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: delay}, nil
	case err != nil:
		return reconcile.Result{}, err
	case sb == nil:
		// The pod's Sandbox is being deleted (its host was lost); wait.
		return reconcile.Result{RequeueAfter: sandboxDeletingRecheck}, nil
	}
	log = log.With("sandbox", sb.Name, "host", sb.Spec.Host)

	node, err := s.ensureNode(ctx, pod, sb)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("node for pod %s: %w", req, err)
	}
	log = log.With("node", node)
	if err := s.bind(ctx, pod, node); err != nil {
		return reconcile.Result{}, fmt.Errorf("bind pod %s to %s: %w", req, node, err)
	}
	s.resetBackoff(req.NamespacedName)
	s.recorder.Eventf(pod, corev1.EventTypeNormal, eventScheduled, "Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
	log.Info("pod scheduled", "ip", sb.Spec.Network.IP, "size", size.String())
	return reconcile.Result{}, nil
}

// sandboxFor returns the pod's Sandbox, creating it if it does not exist
// yet, or nil when it exists but is being deleted. It returns an
// *unschedulableError when the pod fits nowhere.
func (s *Scheduler) sandboxFor(ctx context.Context, pod *corev1.Pod, size sizing.Size) (*vesselv1.Sandbox, error) {
	key := types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(pod.UID)}
	existing := &vesselv1.Sandbox{}
	err := s.client.Get(ctx, key, existing)
	if apierrors.IsNotFound(err) {
		if _, assumed := s.state.get(key.Name); assumed {
			// Created by this scheduler, not in the cache yet.
			err = s.apiReader.Get(ctx, key, existing)
		}
	}
	switch {
	case err == nil:
		if existing.DeletionTimestamp != nil {
			return nil, nil
		}
		return existing, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get sandbox %s: %w", key.Name, err)
	}

	sb, err := s.place(ctx, pod, size)
	if err != nil {
		return nil, err
	}
	if err := s.client.Create(ctx, sb); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Another writer got there first: adopt what it created.
			if err := s.apiReader.Get(ctx, key, existing); err != nil {
				s.state.forget(sb.Name)
				return nil, fmt.Errorf("get sandbox %s: %w", key.Name, err)
			}
			s.state.observe(existing)
			return existing, nil
		}
		s.state.forget(sb.Name)
		return nil, fmt.Errorf("create sandbox %s: %w", sb.Name, err)
	}
	s.log.Info("sandbox created", "pod", pod.Namespace+"/"+pod.Name, "sandbox", sb.Name,
		"host", sb.Spec.Host, "ip", sb.Spec.Network.IP, "subnet", sb.Spec.Network.Subnet)
	return sb, nil
}

// place chooses the host and subnet for pod, takes an address and records
// the Sandbox it returns as assumed; the caller creates it (or forgets it
// on failure).
func (s *Scheduler) place(ctx context.Context, pod *corev1.Pod, size sizing.Size) (*vesselv1.Sandbox, error) {
	profileName := pod.Labels[vesselv1.LabelProfile]
	if profileName == "" {
		return nil, &unschedulableError{"pod has no " + vesselv1.LabelProfile + " label: it was not admitted by Vessel"}
	}
	profile := &vesselv1.VesselProfile{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: profileName}, profile); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &unschedulableError{fmt.Sprintf("VesselProfile %q not found", profileName)}
		}
		return nil, err
	}
	subnets := make([]subnetInfo, 0, len(profile.Spec.Subnets))
	for _, name := range profile.Spec.Subnets {
		info := subnetInfo{name: name}
		sub := &vesselv1.Subnet{}
		if err := s.client.Get(ctx, client.ObjectKey{Name: name}, sub); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, err
			}
			info.problem = "not found"
		} else if parsed, err := ipam.ParseSubnet(sub.Spec.CIDR, sub.Spec.Gateway); err != nil {
			info.problem = err.Error()
		} else {
			info.subnet, info.zone = parsed, sub.Spec.Zone
		}
		subnets = append(subnets, info)
	}
	var hostList vesselv1.HostList
	if err := s.client.List(ctx, &hostList); err != nil {
		return nil, err
	}
	var leaseList coordinationv1.LeaseList
	if err := s.client.List(ctx, &leaseList, client.InNamespace(vesselv1.SystemNamespace)); err != nil {
		return nil, err
	}
	leases := map[string]*coordinationv1.Lease{}
	for i := range leaseList.Items {
		leases[leaseList.Items[i].Name] = &leaseList.Items[i]
	}
	now := s.cfg.Now()
	hostsByName := map[string]*vesselv1.Host{}
	req := request{
		size:      vesselv1.SandboxSize{MilliVCPU: size.MilliVCPU, MemoryMiB: size.MemoryMiB, DiskGiB: size.DiskGiB},
		isolation: vesselv1.Isolation(pod.Annotations[vesselv1.AnnotationIsolation]),
	}

	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	used := s.state.usageLocked()
	counts := s.state.subnetCountsLocked()
	hosts := make([]hostInfo, 0, len(hostList.Items))
	for i := range hostList.Items {
		h := &hostList.Items[i]
		hostsByName[h.Name] = h
		alive, _, _, why := liveness(h, leases[h.Name], now)
		if why != "" {
			why = "not alive (" + why + ")"
		}
		hosts = append(hosts, hostInfo{
			name: h.Name, isolation: h.Spec.Isolation, zone: h.Spec.Zone,
			alive: alive, why: why, capacity: capacityOf(h.Spec.Capacity), used: used[h.Name],
		})
	}
	for i := range subnets {
		if subnets[i].problem == "" {
			subnets[i].free = s.state.alloc.Free(subnets[i].subnet)
			subnets[i].sandboxes = counts[subnets[i].name]
		}
	}
	c, err := choose(req, subnets, hosts)
	if err != nil {
		return nil, err
	}
	ip, err := s.state.alloc.Allocate(c.subnet.subnet)
	if err != nil {
		return nil, &unschedulableError{fmt.Sprintf("allocate an address in subnet %s: %v", c.subnet.name, err)}
	}
	sb := buildSandbox(pod, size, hostsByName[c.host], c.subnet, ip)
	s.state.assumeLocked(sb.Name, placed{host: c.host, subnet: c.subnet.name, ip: ip, size: sb.Spec.Size})
	return sb, nil
}

// ensureNode creates the Node of sb if it does not exist and returns its
// name. A Node of the same name left over from an earlier Sandbox with the
// same address is deleted first (once that Sandbox is gone).
func (s *Scheduler) ensureNode(ctx context.Context, pod *corev1.Pod, sb *vesselv1.Sandbox) (string, error) {
	host := &vesselv1.Host{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: sb.Spec.Host}, host); err != nil {
		return "", fmt.Errorf("get host %s: %w", sb.Spec.Host, err)
	}
	zone := host.Spec.Zone
	sub := &vesselv1.Subnet{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: sb.Spec.Network.Subnet}, sub); err == nil && sub.Spec.Zone != "" {
		zone = sub.Spec.Zone
	}
	node, err := buildNode(sb, nodeParams{
		host: host, zone: zone, profile: pod.Labels[vesselv1.LabelProfile],
		kubeletVersion: version.Get().GitVersion, now: s.cfg.Now(),
	})
	if err != nil {
		return "", fmt.Errorf("sandbox %s: %w", sb.Name, err)
	}
	err = s.client.Create(ctx, node)
	if err == nil {
		s.log.Info("node created", "node", node.Name, "sandbox", sb.Name, "host", host.Name)
		return node.Name, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create node %s: %w", node.Name, err)
	}
	existing := &corev1.Node{}
	if err := s.apiReader.Get(ctx, client.ObjectKey{Name: node.Name}, existing); err != nil {
		return "", fmt.Errorf("get node %s: %w", node.Name, err)
	}
	other := existing.Annotations[vesselv1.AnnotationSandbox]
	if other == sb.Name {
		return node.Name, nil
	}
	gone, err := s.sandboxGone(ctx, other)
	if err != nil {
		return "", err
	}
	if !gone {
		return "", fmt.Errorf("node %s belongs to sandbox %s, which still holds address %s", node.Name, other, sb.Spec.Network.IP)
	}
	s.log.Info("replacing the node of an earlier sandbox with the same address", "node", node.Name, "sandbox", sb.Name, "old", other)
	if err := s.deleteNode(ctx, existing); err != nil {
		return "", err
	}
	if err := s.client.Create(ctx, node); err != nil {
		return "", fmt.Errorf("create node %s: %w", node.Name, err)
	}
	return node.Name, nil
}

// bind assigns pod to node; binding a pod that is already on node succeeds.
func (s *Scheduler) bind(ctx context.Context, pod *corev1.Pod, node string) error {
	err := s.clientset.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{FieldManager: Name})
	if apierrors.IsConflict(err) {
		current, getErr := s.clientset.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if getErr == nil && current.UID == pod.UID && current.Spec.NodeName == node {
			return nil
		}
	}
	return err
}

// setPodScheduledFalse records why the pod is not placed, unless the pod
// already says exactly that.
func (s *Scheduler) setPodScheduledFalse(ctx context.Context, pod *corev1.Pod, reason, message string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == message {
			return nil
		}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: reason, Message: message,
			LastTransitionTime: metav1.NewTime(s.cfg.Now()),
		}}},
	})
	if err != nil {
		return err
	}
	_, err = s.clientset.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: Name}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set PodScheduled=False on %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if reason == vesselv1.ReasonExceedsMaxSize {
		s.log.Info("pod too large for any Vessel size", "pod", pod.Namespace+"/"+pod.Name, "message", message)
	}
	return nil
}

// nodeNameOf is the Node name of sb, or "" when its address is invalid.
func nodeNameOf(sb *vesselv1.Sandbox) string {
	ip, err := netip.ParseAddr(sb.Spec.Network.IP)
	if err != nil {
		return ""
	}
	return vesselv1.NodeNameForIP(ip)
}
