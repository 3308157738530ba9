package hostagent

import (
	"context"
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// machine is what capacity is computed from.
type machine struct {
	CPUs        int
	MemoryBytes int64
	DiskBytes   int64
}

func measureMachine(dataDir string) machine {
	m := machine{CPUs: goruntime.NumCPU()}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	var st unix.Statfs_t
	if unix.Statfs(dataDir, &st) == nil {
		m.DiskBytes = int64(st.Blocks) * st.Bsize
	}
	return m
}

// capacity is the Host's capacity: overrides win, the rest comes from the machine.
func capacity(m machine, overrides corev1.ResourceList, reserve, maxSandboxes int64, cpuOvercommit, memOvercommit, diskOvercommit float64) corev1.ResourceList {
	mem := int64(float64(m.MemoryBytes-min(reserve, m.MemoryBytes/2)) * max(memOvercommit, 1))
	out := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewMilliQuantity(int64(float64(m.CPUs)*1000*max(cpuOvercommit, 1)), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem>>20<<20, resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(int64(float64(m.DiskBytes)*max(diskOvercommit, 1))>>30<<30, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(maxSandboxes, resource.DecimalSI),
	}
	for k, v := range overrides {
		out[k] = v
	}
	return out
}

// register creates or updates the Host and takes its Lease.
func (a *Agent) register(ctx context.Context) error {
	// The namespace normally exists (created by the installer); creating it is harmless.
	_, _ = a.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: vesselv1.SystemNamespace}}, metav1.CreateOptions{})
	spec := vesselv1.HostSpec{
		Address: a.cfg.Address, KubeletPort: a.cfg.KubeletPort, Isolation: a.cfg.Isolation, Zone: a.cfg.Zone,
		Capacity: capacity(measureMachine(a.cfg.DataDir), a.cfg.Capacity, a.cfg.MemoryReserve, a.cfg.MaxSandboxes, a.cfg.CPUOvercommit, a.cfg.MemoryOvercommit, a.cfg.DiskOvercommit),
	}
	var h vesselv1.Host
	err := a.client.Get(ctx, client.ObjectKey{Name: a.cfg.HostName}, &h)
	switch {
	case apierrors.IsNotFound(err):
		h = vesselv1.Host{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.HostName}, Spec: spec}
		if err := a.client.Create(ctx, &h); err != nil {
			return fmt.Errorf("register host %s: %w", a.cfg.HostName, err)
		}
	case err != nil:
		return fmt.Errorf("register host %s: %w", a.cfg.HostName, err)
	case !equality.Semantic.DeepEqual(h.Spec, spec):
		h.Spec = spec
		if err := a.client.Update(ctx, &h); err != nil {
			return fmt.Errorf("register host %s: %w", a.cfg.HostName, err)
		}
	}
	a.log.InfoContext(ctx, "host registered", "capacity", fmt.Sprint(spec.Capacity))
	return a.renewHost(ctx)
}

// renewHost renews the Host Lease and refreshes the Host status.
func (a *Agent) renewHost(ctx context.Context) error {
	if err := a.renewLease(ctx, vesselv1.SystemNamespace, a.cfg.HostName, a.cfg.HostName, nil); err != nil {
		return fmt.Errorf("renew host lease: %w", err)
	}
	var h vesselv1.Host
	if err := a.client.Get(ctx, client.ObjectKey{Name: a.cfg.HostName}, &h); err != nil {
		return err
	}
	n := int32(0)
	if a.cache != nil {
		var list vesselv1.SandboxList
		if err := a.cache.List(ctx, &list, client.InNamespace(vesselv1.SystemNamespace)); err == nil {
			for _, sb := range list.Items {
				if sb.Spec.Host == a.cfg.HostName {
					n++
				}
			}
		}
	}
	old := h.Status.DeepCopy()
	h.Status.Sandboxes = n
	meta.SetStatusCondition(&h.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "AgentRunning",
		Message: "host agent is renewing its lease", ObservedGeneration: h.Generation})
	if equality.Semantic.DeepEqual(old, &h.Status) {
		return nil
	}
	return a.client.Status().Update(ctx, &h)
}

// renewLease creates or renews a Lease held by holder.
func (a *Agent) renewLease(ctx context.Context, ns, name, holder string, owner *metav1.OwnerReference) error {
	leases := a.kube.CoordinationV1().Leases(ns)
	now := metav1.NewMicroTime(time.Now())
	dur := ptr.To(int32(a.cfg.LeaseDuration / time.Second))
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: dur, AcquireTime: &now, RenewTime: &now},
		}
		if owner != nil {
			l.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, dur, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeatNodes keeps the Node of every sandbox on this host Ready.
func (a *Agent) heartbeatNodes(ctx context.Context) error {
	var nodes corev1.NodeList
	if err := a.cache.List(ctx, &nodes); err != nil {
		return err
	}
	var errs []error
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if a.nodeSandbox(ctx, n) == nil {
			continue
		}
		if err := a.heartbeat(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("node heartbeats: %v", errs)
	}
	return nil
}

// freshlyReady reports whether n already shows Ready with a heartbeat newer than within: a
// new Node, which the scheduler creates Ready, needs only its Lease.
func freshlyReady(n *corev1.Node, now time.Time, within time.Duration) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue && now.Sub(c.LastHeartbeatTime.Time) < within
		}
	}
	return false
}

// heartbeat sets the node's conditions like a kubelet and renews its Lease in kube-node-lease.
func (a *Agent) heartbeat(ctx context.Context, n *corev1.Node) error {
	if !freshlyReady(n, time.Now(), a.cfg.LeaseInterval/2) {
		conds := vesselv1.ReadyNodeConditions(metav1.Now(), n.Status.Conditions)
		patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
		if err != nil {
			return err
		}
		if _, err := a.kube.CoreV1().Nodes().PatchStatus(ctx, n.Name, patch); err != nil {
			return err
		}
	}
	owner := &metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}
	return a.renewLease(ctx, NodeLeaseNamespace, n.Name, n.Name, owner)
}
