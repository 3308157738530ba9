package scheduler

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
	"github.com/vessel-dev/vessel/internal/sizing"
)

var small = request{size: vesselv1.SandboxSize{MilliVCPU: 250, MemoryMiB: 512, DiskGiB: 20}, isolation: vesselv1.IsolationMicroVM}

func host(name string, mods ...func(*hostInfo)) hostInfo {
	h := hostInfo{name: name, isolation: vesselv1.IsolationMicroVM, alive: true,
		capacity: usage{milliCPU: 4000, memoryMiB: 8192, diskGiB: 200, pods: 10}}
	for _, m := range mods {
		m(&h)
	}
	return h
}

func subnet(name, cidr, zone string, free, sandboxes int) subnetInfo {
	p := netip.MustParsePrefix(cidr)
	return subnetInfo{name: name, zone: zone, subnet: ipam.Subnet{Prefix: p, Gateway: p.Addr().Next()}, free: free, sandboxes: sandboxes}
}

func TestChoose(t *testing.T) {
	a := subnet("a", "10.0.1.0/24", "zone-a", 253, 0)
	for _, tc := range []struct {
		name       string
		req        request
		subnets    []subnetInfo
		hosts      []hostInfo
		wantHost   string
		wantSubnet string
		wantErr    string // substring of the unschedulable message
	}{
		{name: "one host one subnet", req: small, subnets: []subnetInfo{a}, hosts: []hostInfo{host("h1")}, wantHost: "h1", wantSubnet: "a"},
		{name: "emptiest host wins", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{
				host("h1", func(h *hostInfo) { h.used = usage{milliCPU: 2000, memoryMiB: 4096, pods: 3} }),
				host("h2", func(h *hostInfo) { h.used = usage{milliCPU: 250, memoryMiB: 512, pods: 1} }),
			}, wantHost: "h2", wantSubnet: "a"},
		{name: "ties go to the first name", req: small, subnets: []subnetInfo{a}, hosts: []hostInfo{host("h2"), host("h1")}, wantHost: "h1", wantSubnet: "a"},
		{name: "isolation must match", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{host("h1", func(h *hostInfo) { h.isolation = vesselv1.IsolationOCI }), host("h2")}, wantHost: "h2", wantSubnet: "a"},
		{name: "no isolation asked takes any", req: request{size: small.size}, subnets: []subnetInfo{a},
			hosts: []hostInfo{host("h1", func(h *hostInfo) { h.isolation = vesselv1.IsolationOCI })}, wantHost: "h1", wantSubnet: "a"},
		{name: "dead hosts are skipped", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{host("h1", func(h *hostInfo) { h.alive, h.why = false, "not alive (lease expired)" }), host("h2")}, wantHost: "h2", wantSubnet: "a"},
		{name: "unlimited capacity", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{host("h1", func(h *hostInfo) { h.capacity = usage{-1, -1, -1, -1}; h.used = usage{1e6, 1e6, 1e6, 1e6} })}, wantHost: "h1", wantSubnet: "a"},
		{name: "spread: subnet with fewest sandboxes", req: small,
			subnets: []subnetInfo{subnet("a", "10.0.1.0/24", "", 250, 3), subnet("b", "10.0.2.0/24", "", 252, 1)},
			hosts:   []hostInfo{host("h1")}, wantHost: "h1", wantSubnet: "b"},
		{name: "spread: full subnet is skipped", req: small,
			subnets: []subnetInfo{subnet("a", "10.0.1.0/30", "", 0, 1), subnet("b", "10.0.2.0/24", "", 252, 5)},
			hosts:   []hostInfo{host("h1")}, wantHost: "h1", wantSubnet: "b"},
		{name: "zone: host must be in the subnet's zone", req: small,
			subnets: []subnetInfo{subnet("a", "10.0.1.0/24", "zone-a", 253, 0), subnet("b", "10.0.2.0/24", "zone-b", 253, 1)},
			hosts:   []hostInfo{host("h1", func(h *hostInfo) { h.zone = "zone-b" })}, wantHost: "h1", wantSubnet: "b"},
		{name: "no hosts", req: small, subnets: []subnetInfo{a}, wantErr: "0/0 hosts are available"},
		{name: "insufficient memory", req: request{size: vesselv1.SandboxSize{MilliVCPU: 1000, MemoryMiB: 16384, DiskGiB: 20}},
			subnets: []subnetInfo{a}, hosts: []hostInfo{host("h1"), host("h2")}, wantErr: "0/2 hosts are available: 2 insufficient memory"},
		{name: "mixed reasons", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{
				host("h1", func(h *hostInfo) { h.used.pods = 10 }),
				host("h2", func(h *hostInfo) { h.used.milliCPU = 4000 }),
				host("h3", func(h *hostInfo) { h.isolation = vesselv1.IsolationOCI }),
			}, wantErr: "0/3 hosts are available: 1 insufficient cpu, 1 isolation oci (pod needs microvm), 1 too many sandboxes"},
		{name: "all subnets full", req: small, subnets: []subnetInfo{subnet("a", "10.0.1.0/30", "", 0, 1)}, hosts: []hostInfo{host("h1")},
			wantErr: "no free IP address in the profile's subnets: a (10.0.1.0/30, no free address)"},
		{name: "subnet missing", req: small, subnets: []subnetInfo{{name: "x", problem: "not found"}}, hosts: []hostInfo{host("h1")},
			wantErr: "x (not found)"},
		{name: "fitting host in the wrong zone", req: small, subnets: []subnetInfo{a},
			hosts: []hostInfo{host("h1", func(h *hostInfo) { h.zone = "zone-b" })}, wantErr: "none is in the zone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := choose(tc.req, tc.subnets, tc.hosts)
			if tc.wantErr != "" {
				var u *unschedulableError
				if !errors.As(err, &u) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("choose() = %+v, %v; want unschedulable %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.host != tc.wantHost || got.subnet.name != tc.wantSubnet {
				t.Fatalf("choose() = host %q subnet %q, %v; want %q, %q", got.host, got.subnet.name, err, tc.wantHost, tc.wantSubnet)
			}
		})
	}
}

func TestCapacityOf(t *testing.T) {
	got := capacityOf(corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("3500m"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("500Gi"),
	})
	want := usage{milliCPU: 3500, memoryMiB: 16384, diskGiB: 500, pods: -1}
	if got != want {
		t.Fatalf("capacityOf = %+v, want %+v", got, want)
	}
}

func TestLiveness(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.MicroTime { return ptr.To(metav1.NewMicroTime(now.Add(d))) }
	lease := func(renew *metav1.MicroTime, seconds int32) *coordinationv1.Lease {
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{RenewTime: renew, LeaseDurationSeconds: ptr.To(seconds)}}
	}
	hostCreated := func(d time.Duration) *vesselv1.Host {
		return &vesselv1.Host{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(now.Add(d))}}
	}
	for _, tc := range []struct {
		name        string
		host        *vesselv1.Host
		lease       *coordinationv1.Lease
		alive, lost bool
		recheck     time.Time
	}{
		{"fresh lease", hostCreated(-time.Hour), lease(at(-10*time.Second), 40), true, false, now.Add(30 * time.Second)},
		{"expired lease", hostCreated(-time.Hour), lease(at(-41*time.Second), 40), false, true, time.Time{}},
		{"new host without lease", hostCreated(-5 * time.Second), nil, false, false, now.Add(35 * time.Second)},
		{"old host without lease", hostCreated(-time.Hour), nil, false, true, time.Time{}},
		{"host gone, lease gone", nil, nil, false, true, time.Time{}},
		{"host gone, lease fresh", nil, lease(at(0), 40), true, false, now.Add(40 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alive, lost, recheck, _ := liveness(tc.host, tc.lease, now)
			if alive != tc.alive || lost != tc.lost || !recheck.Equal(tc.recheck) {
				t.Fatalf("liveness = alive %v lost %v recheck %v; want %v %v %v", alive, lost, recheck, tc.alive, tc.lost, tc.recheck)
			}
		})
	}
}

func TestBuildSandboxAndNode(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "1234", Labels: map[string]string{vesselv1.LabelProfile: "default"}},
		Spec: corev1.PodSpec{
			Containers:         []corev1.Container{{Name: "app", Image: "nginx"}},
			RestartPolicy:      corev1.RestartPolicyAlways,
			ServiceAccountName: "default",
		},
	}
	h := &vesselv1.Host{
		ObjectMeta: metav1.ObjectMeta{Name: "h1"},
		Spec:       vesselv1.HostSpec{Address: "192.168.1.10", KubeletPort: 10250, Isolation: vesselv1.IsolationOCI},
	}
	sub := subnet("a", "10.0.1.0/24", "zone-a", 253, 0)
	sb := buildSandbox(pod, sizing.Size{MilliVCPU: 250, MemoryMiB: 512, DiskGiB: 20}, h, sub, netip.MustParseAddr("10.0.1.23"))
	if sb.Name != "p-1234" || sb.Namespace != vesselv1.SystemNamespace || sb.Finalizers[0] != vesselv1.FinalizerSandbox {
		t.Errorf("sandbox meta = %s/%s %v", sb.Namespace, sb.Name, sb.Finalizers)
	}
	if sb.Labels[vesselv1.LabelPodName] != "web-1" || sb.Labels[vesselv1.LabelHost] != "h1" || sb.Labels[vesselv1.LabelPodUID] != "1234" {
		t.Errorf("sandbox labels = %v", sb.Labels)
	}
	net := sb.Spec.Network
	if net.IP != "10.0.1.23" || net.Gateway != "10.0.1.1" || net.PrefixLength != 24 || net.MAC != "02:56:0a:00:01:17" || net.Subnet != "a" {
		t.Errorf("sandbox network = %+v", net)
	}
	if sb.Spec.Hostname != "web-1" || sb.Spec.Isolation != vesselv1.IsolationOCI || sb.Spec.Owner.UID != "1234" {
		t.Errorf("sandbox spec = %+v", sb.Spec)
	}

	node, err := buildNode(sb, nodeParams{host: h, zone: "zone-a", profile: "default", kubeletVersion: "v1.34.4", now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if node.Name != "vessel-10-0-1-23" || node.Labels[labelHostname] != node.Name || node.Labels[labelZone] != "zone-a" ||
		node.Labels[vesselv1.LabelProfile] != "default" || node.Labels[vesselv1.LabelComputeType] != "vessel" {
		t.Errorf("node = %s %v", node.Name, node.Labels)
	}
	if len(node.Spec.Taints) != 1 || node.Spec.Taints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("taints = %v", node.Spec.Taints)
	}
	if got := node.Status.Capacity[corev1.ResourcePods]; got.Value() != 1 {
		t.Errorf("pods capacity = %v", got.String())
	}
	if got := node.Status.Capacity[corev1.ResourceMemory]; got.String() != "512Mi" {
		t.Errorf("memory capacity = %v", got.String())
	}
	if node.Status.Addresses[0].Address != "192.168.1.10" || node.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Errorf("addresses = %v, endpoints %v", node.Status.Addresses, node.Status.DaemonEndpoints)
	}
	if node.Status.NodeInfo.ContainerRuntimeVersion != "vessel-oci" || node.Annotations[vesselv1.AnnotationSandbox] != "p-1234" {
		t.Errorf("nodeInfo = %+v annotations %v", node.Status.NodeInfo, node.Annotations)
	}
	// Created Ready, so the node-lifecycle controller has no not-ready taints to add and remove.
	ready := false
	for _, c := range node.Status.Conditions {
		ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.IsZero()
	}
	if !ready {
		t.Errorf("conditions = %+v, want Ready with a heartbeat time", node.Status.Conditions)
	}
}
