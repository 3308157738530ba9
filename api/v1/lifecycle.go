package v1

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Names of the pod lifecycle contract (docs/decisions/pod-lifecycle.md)
// between the scheduler and host agents.
const (
	// FinalizerSandbox keeps a Sandbox until its host agent has torn the
	// runtime sandbox down (or the scheduler has given up on a lost host).
	FinalizerSandbox = "vessel.dev/sandbox"

	// Labels on a Sandbox. Values longer than a label allows are left out;
	// spec.owner always has them.
	LabelPodNamespace = "vessel.dev/pod-namespace"
	LabelPodName      = "vessel.dev/pod-name"
	LabelPodUID       = "vessel.dev/pod-uid"
	LabelHost         = "vessel.dev/host"

	// AnnotationSandbox on a Vessel Node is the name of its Sandbox in
	// SystemNamespace.
	AnnotationSandbox = "vessel.dev/sandbox"

	// ReasonHostLost is the pod status reason (phase Failed) of a pod
	// whose host stopped renewing its Lease.
	ReasonHostLost = "HostLost"

	// NodeNamePrefix starts every Vessel node's name.
	NodeNamePrefix = "vessel-"
)

// SandboxNameForPod is the name of the Sandbox running the pod with uid.
func SandboxNameForPod(uid types.UID) string { return "p-" + string(uid) }

// NodeNameForIP is the name of the Node of the sandbox with address ip:
// vessel-10-0-1-23 for 10.0.1.23.
func NodeNameForIP(ip netip.Addr) string {
	return NodeNamePrefix + strings.ReplaceAll(ip.String(), ".", "-")
}

// ReadyNodeConditions are the conditions of a Vessel Node whose host agent is alive, as a kubelet
// posts them: Ready, and no memory, disk or PID pressure (each sandbox has its own). The
// scheduler creates Nodes with them, as it places pods only on hosts with a live Lease, and host
// agents renew them. A condition whose status is the same in old keeps its lastTransitionTime.
func ReadyNodeConditions(now metav1.Time, old []corev1.NodeCondition) []corev1.NodeCondition {
	type c = corev1.NodeCondition
	conds := []c{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "vessel host agent is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "sandbox has its own memory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "sandbox has its own disk"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "sandbox has its own process table"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		for _, o := range old {
			if o.Type == conds[i].Type && o.Status == conds[i].Status {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return conds
}
