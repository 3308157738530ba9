package scheduler

import (
	"net"
	"net/netip"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
	"github.com/vessel-dev/vessel/internal/sizing"
)

// Node labels and taint; kubelet sets the same well-known labels.
const (
	labelHostname = "kubernetes.io/hostname"
	labelOS       = "kubernetes.io/os"
	labelArch     = "kubernetes.io/arch"
	labelZone     = "topology.kubernetes.io/zone"
	labelBetaOS   = "beta.kubernetes.io/os"
	labelBetaArch = "beta.kubernetes.io/arch"
	// annotationNodeTTL is how long kubelets may cache objects; the TTL controller sets it by
	// cluster size, 0 below 100 nodes, and corrects a larger cluster's nodes itself.
	annotationNodeTTL = "node.alpha.kubernetes.io/ttl"
)

// defaultLeaseDuration is how long a Host may go without a Lease after it
// registered before it counts as lost; the same 40 s the agents use.
const defaultLeaseDuration = 40 * time.Second

// liveness says whether a host is alive at now, judging by its Lease (nil
// when it has none) and, without a Lease, by how long the Host has existed
// (host may be nil when the Host object is gone). alive hosts get pods;
// lost hosts have their pods failed; a host may be neither for a moment
// after it registered. recheck is when the answer changes by itself.
func liveness(host *vesselv1.Host, lease *coordinationv1.Lease, now time.Time) (alive, lost bool, recheck time.Time, why string) {
	if lease == nil {
		if host != nil {
			deadline := host.CreationTimestamp.Add(defaultLeaseDuration)
			if now.Before(deadline) {
				return false, false, deadline, "no lease yet"
			}
		}
		return false, true, time.Time{}, "no lease"
	}
	renewed := lease.CreationTimestamp.Time
	if lease.Spec.RenewTime != nil {
		renewed = lease.Spec.RenewTime.Time
	} else if lease.Spec.AcquireTime != nil {
		renewed = lease.Spec.AcquireTime.Time
	}
	duration := defaultLeaseDuration
	if lease.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	expiry := renewed.Add(duration)
	if now.Before(expiry) {
		return true, false, expiry, ""
	}
	return false, true, time.Time{}, "lease expired at " + expiry.UTC().Format(time.RFC3339)
}

// labelValue returns v when it is a valid label value, else "".
func labelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) > 0 {
		return ""
	}
	return v
}

// setLabel sets key=v when v is a valid label value.
func setLabel(labels map[string]string, key, v string) {
	if v = labelValue(v); v != "" {
		labels[key] = v
	}
}

// buildSandbox is the Sandbox that runs pod on host with address ip in sub.
func buildSandbox(pod *corev1.Pod, size sizing.Size, host *vesselv1.Host, sub subnetInfo, ip netip.Addr) *vesselv1.Sandbox {
	labels := map[string]string{}
	setLabel(labels, vesselv1.LabelPodNamespace, pod.Namespace)
	setLabel(labels, vesselv1.LabelPodName, pod.Name)
	setLabel(labels, vesselv1.LabelPodUID, string(pod.UID))
	setLabel(labels, vesselv1.LabelHost, host.Name)
	hostname := pod.Spec.Hostname
	if hostname == "" {
		hostname = pod.Name
	}
	spec := pod.Spec.DeepCopy()
	return &vesselv1.Sandbox{
		TypeMeta: metav1.TypeMeta{APIVersion: vesselv1.SchemeGroupVersion.String(), Kind: "Sandbox"},
		ObjectMeta: metav1.ObjectMeta{
			Name:       vesselv1.SandboxNameForPod(pod.UID),
			Namespace:  vesselv1.SystemNamespace,
			Labels:     labels,
			Finalizers: []string{vesselv1.FinalizerSandbox},
		},
		Spec: vesselv1.SandboxSpec{
			Owner: vesselv1.SandboxOwner{Kind: vesselv1.OwnerPod, Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
			Size:  vesselv1.SandboxSize{MilliVCPU: size.MilliVCPU, MemoryMiB: size.MemoryMiB, DiskGiB: size.DiskGiB},
			Host:  host.Name,
			Network: vesselv1.SandboxNetwork{
				Subnet:       sub.name,
				IP:           ip.String(),
				MAC:          ipam.MAC(ip).String(),
				Gateway:      sub.subnet.Gateway.String(),
				PrefixLength: int32(sub.subnet.Prefix.Bits()),
			},
			Isolation:                     host.Spec.Isolation,
			InitContainers:                spec.InitContainers,
			Containers:                    spec.Containers,
			Volumes:                       spec.Volumes,
			RestartPolicy:                 spec.RestartPolicy,
			TerminationGracePeriodSeconds: spec.TerminationGracePeriodSeconds,
			ServiceAccountName:            spec.ServiceAccountName,
			Hostname:                      hostname,
		},
	}
}

// nodeParams is what buildNode needs besides the Sandbox.
type nodeParams struct {
	host           *vesselv1.Host
	zone           string // the subnet's zone, else the host's
	profile        string
	kubeletVersion string
	now            time.Time
}

// buildNode is the Node that shows sb's pod in `kubectl get nodes`
// (REFERENCE §4). Its addresses point at the host agent's kubelet API: the
// InternalIP and the Hostname address are both the Host's address, because
// the apiserver and metrics-server try the Hostname address first by default
// and a per-pod name would not resolve. It is created Ready and with what
// kube-controller-manager would otherwise patch in at once (the beta os/arch
// labels a kubelet also sets, the TTL annotation): it then only removes the
// not-ready taint the TaintNodesByCondition admission plugin adds, one
// patch per node instead of three or four.
func buildNode(sb *vesselv1.Sandbox, p nodeParams) (*corev1.Node, error) {
	ip, err := netip.ParseAddr(sb.Spec.Network.IP)
	if err != nil {
		return nil, err
	}
	name := vesselv1.NodeNameForIP(ip)
	labels := map[string]string{
		vesselv1.LabelComputeType: vesselv1.ComputeTypeVessel,
		labelHostname:             name,
		labelOS:                   "linux",
		labelArch:                 "amd64",
		labelBetaOS:               "linux",
		labelBetaArch:             "amd64",
	}
	setLabel(labels, vesselv1.LabelProfile, p.profile)
	setLabel(labels, labelZone, p.zone)
	resources := corev1.ResourceList{
		corev1.ResourcePods:             *resource.NewQuantity(1, resource.DecimalSI),
		corev1.ResourceCPU:              *resource.NewMilliQuantity(sb.Spec.Size.MilliVCPU, resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(sb.Spec.Size.MemoryMiB<<20, resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(sb.Spec.Size.DiskGiB<<30, resource.BinarySI),
	}
	var addresses []corev1.NodeAddress
	if net.ParseIP(p.host.Spec.Address) != nil {
		addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: p.host.Spec.Address})
	}
	addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: p.host.Spec.Address})
	now := metav1.NewTime(p.now)
	isolation := sb.Spec.Isolation
	if isolation == "" {
		isolation = p.host.Spec.Isolation
	}
	return &corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      labels,
			Annotations: map[string]string{vesselv1.AnnotationSandbox: sb.Name, annotationNodeTTL: "0"},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: vesselv1.LabelComputeType, Value: vesselv1.ComputeTypeVessel, Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:        resources,
			Allocatable:     resources.DeepCopy(),
			Addresses:       addresses,
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: p.host.Spec.KubeletPort}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               sb.Name,
				SystemUUID:              string(sb.Spec.Owner.UID),
				OSImage:                 "Vessel",
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				ContainerRuntimeVersion: "vessel-" + string(isolation),
				KubeletVersion:          p.kubeletVersion,
			},
			// Ready from the start: the host's Lease is alive (see docs/decisions/scheduler.md).
			Conditions: vesselv1.ReadyNodeConditions(now, nil),
		},
	}, nil
}
