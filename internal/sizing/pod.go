package sizing

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// ForPod returns the smallest size that fits the pod (REFERENCE §3).
//
// CPU and memory follow the Kubernetes scheduling rules: the larger of the
// biggest init container and the sum of the regular containers (restartable
// init containers count as regular), pod-level requests when set, plus
// spec.overhead; a limit without a request counts as the request. The pod's
// agent adds 256 MiB. The disk is the pod's ephemeral-storage request,
// computed the same way, but at least 20 GiB.
//
// When the pod asks for more than the largest size, ForPod returns the
// largest size together with an error matching ErrExceedsMaxSize whose text
// says what is too large; the pod is still admitted, but never placed.
func ForPod(pod *corev1.Pod) (Size, error) {
	reqs := resourcehelper.PodRequests(withLimitsAsRequests(pod), resourcehelper.PodResourcesOptions{})

	cpu := reqs.Cpu().MilliValue()
	memMiB := ceilDiv(reqs.Memory().Value(), mib) + agentOverheadMiB
	diskGiB := max(ceilDiv(reqs.StorageEphemeral().Value(), gib), DefaultDiskGiB)

	size, ok := roundUp(cpu, memMiB)
	if !ok {
		return Largest(), ErrExceedsMaxSize
	}
	if diskGiB > MaxDiskGiB {
		size.DiskGiB = MaxDiskGiB
		return size, exceedsError(fmt.Sprintf(
			"pod's ephemeral-storage requirement of %d GiB exceeds the largest Vessel disk (%d GiB)", diskGiB, MaxDiskGiB))
	}
	size.DiskGiB = diskGiB
	return size, nil
}

// withLimitsAsRequests returns the pod, or a copy of it in which every
// resource with a limit but no request has the limit as request, which is
// what API defaulting does. ForPod may see pods that were never defaulted.
func withLimitsAsRequests(pod *corev1.Pod) *corev1.Pod {
	if !needsDefaulting(pod) {
		return pod
	}
	pod = pod.DeepCopy()
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			defaultRequests(&list[i].Resources)
		}
	}
	if pod.Spec.Resources != nil {
		defaultRequests(pod.Spec.Resources)
	}
	return pod
}

func needsDefaulting(pod *corev1.Pod) bool {
	missing := func(r *corev1.ResourceRequirements) bool {
		for name := range r.Limits {
			if _, ok := r.Requests[name]; !ok {
				return true
			}
		}
		return false
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if missing(&list[i].Resources) {
				return true
			}
		}
	}
	return pod.Spec.Resources != nil && missing(pod.Spec.Resources)
}

func defaultRequests(r *corev1.ResourceRequirements) {
	for name, limit := range r.Limits {
		if _, ok := r.Requests[name]; ok {
			continue
		}
		if r.Requests == nil {
			r.Requests = corev1.ResourceList{}
		}
		r.Requests[name] = limit.DeepCopy()
	}
}

// ceilDiv divides rounding up; negative quantities count as zero.
func ceilDiv(n, d int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + d - 1) / d
}
