package v1

import (
	"net/netip"
	"strings"

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
