package hostagent

import (
	"path/filepath"
	"strings"
)

// Names the scheduler and the host agent agree on (docs/decisions/pod-lifecycle.md). They
// belong in api/v1/wellknown.go once both branches are merged.
const (
	// Finalizer is on every Sandbox; the host agent removes it after teardown.
	Finalizer = "vessel.dev/sandbox"
	// AnnotationSandbox on a Vessel Node names its Sandbox ("p-<uid>" or
	// "vessel-system/p-<uid>").
	AnnotationSandbox = "vessel.dev/sandbox"
	// Labels the scheduler puts on Sandboxes.
	LabelHost         = "vessel.dev/host"
	LabelPodNamespace = "vessel.dev/pod-namespace"
	LabelPodName      = "vessel.dev/pod-name"
	LabelPodUID       = "vessel.dev/pod-uid"

	// Component is the event source component of the host agent.
	Component = "vessel-hostagent"
	// NodeLeaseNamespace holds the per-node Leases the node-lifecycle controller reads.
	NodeLeaseNamespace = "kube-node-lease"

	// runtimeLabelSandboxUID is stored with the runtime sandbox so garbage collection can tell a
	// sandbox of a recreated object from the old one.
	runtimeLabelSandboxUID = "vessel.dev/sandbox-uid"
	runtimeLabelPodUID     = LabelPodUID
)

// SandboxName is the name of the Sandbox of a pod.
func SandboxName(podUID string) string { return "p-" + podUID }

// NodeName is the name of the Node of a sandbox with the given IPv4 address.
func NodeName(ip string) string { return "vessel-" + strings.ReplaceAll(ip, ".", "-") }

// On-disk layout under Config.DataDir, in one place:
//
//	<data>/pods/<sandbox>/volumes/<volume>/        prepared volumes (emptyDir, configMap, … ; tmpfs
//	                                               mounts for medium Memory, secret, projected)
//	<data>/pods/<sandbox>/logs/<container>/<attempt>.log   CRI logs kept for kubectl logs
type layout struct{ root string }

func (l layout) pods() string                  { return filepath.Join(l.root, "pods") }
func (l layout) pod(sandbox string) string     { return filepath.Join(l.pods(), sandbox) }
func (l layout) volumes(sandbox string) string { return filepath.Join(l.pod(sandbox), "volumes") }
func (l layout) volume(sandbox, name string) string {
	return filepath.Join(l.volumes(sandbox), name)
}
func (l layout) log(sandbox, container string, attempt uint32) string {
	return filepath.Join(l.pod(sandbox), "logs", container, itoa(int64(attempt))+".log")
}
