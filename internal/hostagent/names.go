package hostagent

import (
	"net/netip"
	"path/filepath"
	"strings"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// Names the scheduler and the host agent agree on are in api/v1 (lifecycle.go); these are the
// host agent's own.
const (
	// Component is the event source component of the host agent.
	Component = "vessel-hostagent"
	// NodeLeaseNamespace holds the per-node Leases the node-lifecycle controller reads.
	NodeLeaseNamespace = "kube-node-lease"

	// runtimeLabelSandboxUID is stored with the runtime sandbox so garbage collection can tell a
	// sandbox of a recreated object from the old one.
	runtimeLabelSandboxUID = "vessel.dev/sandbox-uid"
	runtimeLabelPodUID     = vesselv1.LabelPodUID
)

// nodeName is the name of the Node of a sandbox with the given IPv4 address (as the Sandbox
// spec holds it, a string); see vesselv1.NodeNameForIP.
func nodeName(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil {
		return vesselv1.NodeNameForIP(a)
	}
	return vesselv1.NodeNamePrefix + strings.ReplaceAll(ip, ".", "-")
}

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
