package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/scheduler"
	"github.com/vessel-dev/vessel/internal/testenv"
)

// schedEnv is one scheduler test: the shared control plane with Vessel's
// CRDs, a namespace for its pods, and a name prefix for the cluster-scoped
// objects it creates (all removed when the test ends).
type schedEnv struct {
	*testenv.Env
	c      client.Client
	ns     string
	prefix string
}

func newSchedEnv(t *testing.T) *schedEnv {
	t.Helper()
	env := testenv.Get(t)
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = vesselv1.AddToScheme(scheme)
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	_, err = env.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: vesselv1.SystemNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	e := &schedEnv{Env: env, c: c, ns: env.Namespace(t)}
	e.prefix = e.ns // test-xxxxx: unique, valid in every name
	// Registered first, so it runs last, after the scheduler has stopped.
	t.Cleanup(func() { e.removeWorkloads(t) })
	return e
}

// removeWorkloads force-deletes the test's pods and what the scheduler made
// for them, standing in for a host agent that is not there.
func (e *schedEnv) removeWorkloads(t *testing.T) {
	ctx := context.Background()
	_ = e.Client.CoreV1().Pods(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
	var sbs vesselv1.SandboxList
	_ = e.c.List(ctx, &sbs, client.InNamespace(vesselv1.SystemNamespace), client.MatchingLabels{vesselv1.LabelPodNamespace: e.ns})
	for i := range sbs.Items {
		sb := &sbs.Items[i]
		e.releaseSandbox(t, sb.Name)
		_ = e.c.Delete(ctx, sb)
		if node := nodeOf(sb); node != "" {
			_ = e.Client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{})
		}
	}
}

// startScheduler runs a scheduler until the test ends or stop is called.
func (e *schedEnv) startScheduler(t *testing.T) (stop func()) {
	t.Helper()
	return e.startSchedulerAs(t, e.Config)
}

// restrictedConfig is a client config acting as a user that holds only the
// scheduler's ClusterRole, so tests prove the role is enough.
func (e *schedEnv) restrictedConfig(t *testing.T) *rest.Config {
	t.Helper()
	user := "system:serviceaccount:" + vesselv1.SystemNamespace + ":" + e.prefix + "-scheduler"
	role := scheduler.ClusterRole()
	role.Name = e.prefix + "-" + role.Name
	e.create(t, role)
	e.create(t, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	return cfg
}

func (e *schedEnv) startSchedulerAs(t *testing.T, cfg *rest.Config) (stop func()) {
	t.Helper()
	s, err := scheduler.New(scheduler.Config{
		RESTConfig:     cfg,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		InitialBackoff: 200 * time.Millisecond,
		MaxBackoff:     2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("scheduler Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("scheduler did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("scheduler stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("scheduler not ready after 60s")
	}
	return stop
}

func (e *schedEnv) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := e.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = e.c.Delete(context.Background(), obj) })
}

// subnet creates a Subnet named <prefix>-<name>; returns the name.
func (e *schedEnv) subnet(t *testing.T, name, cidr, gateway, zone string) string {
	name = e.prefix + "-" + name
	e.create(t, &vesselv1.Subnet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       vesselv1.SubnetSpec{CIDR: cidr, Gateway: gateway, Zone: zone},
	})
	return name
}

// profile creates a VesselProfile named after the test over subnets and waits until it is
// Active: admission refuses pods that name a profile the controller has not processed yet.
func (e *schedEnv) profile(t *testing.T, subnets ...string) string {
	t.Helper()
	p := &vesselv1.VesselProfile{
		ObjectMeta: metav1.ObjectMeta{Name: e.prefix},
		Spec: vesselv1.VesselProfileSpec{
			Selectors: []vesselv1.ProfileSelector{{Namespace: e.ns}},
			Subnets:   subnets,
		},
	}
	e.create(t, p)
	testenv.Eventually(t, 30*time.Second, "profile "+p.Name+" Active", func(ctx context.Context) error {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Phase != vesselv1.ProfileActive {
			return fmt.Errorf("phase %q, message %q", p.Status.Phase, p.Status.Message)
		}
		return nil
	})
	return p.Name
}

// host registers a Host with room for pods sandboxes of 4 vCPU / 16 GiB
// in total, and its Lease, renewed now and valid for an hour.
func (e *schedEnv) host(t *testing.T, name string, pods int64) string {
	t.Helper()
	name = e.prefix + "-" + name
	e.create(t, &vesselv1.Host{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: vesselv1.HostSpec{
			Address: "127.0.0.1", KubeletPort: 10250, Isolation: vesselv1.IsolationOCI,
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("64"),
				corev1.ResourceMemory:           resource.MustParse("256Gi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("10Ti"),
				corev1.ResourcePods:             *resource.NewQuantity(pods, resource.DecimalSI),
			},
		},
	})
	e.create(t, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: vesselv1.SystemNamespace, Name: name},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(name),
			LeaseDurationSeconds: ptr.To[int32](3600),
			RenewTime:            ptr.To(metav1.NewMicroTime(time.Now())),
		},
	})
	return name
}

// pod creates a pod the way admission leaves it.
func (e *schedEnv) pod(t *testing.T, name, profile string, mods ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: e.ns, Name: name,
			Labels: map[string]string{vesselv1.LabelProfile: profile},
			Annotations: map[string]string{
				vesselv1.AnnotationCapacityProvisioned: "0.25vCPU 0.5GB",
				vesselv1.AnnotationIsolation:           string(vesselv1.IsolationOCI),
			},
		},
		Spec: corev1.PodSpec{
			SchedulerName: vesselv1.SchedulerName,
			Containers:    []corev1.Container{{Name: "app", Image: "registry.local/demo:1"}},
			Tolerations: []corev1.Toleration{{
				Key: vesselv1.LabelComputeType, Operator: corev1.TolerationOpEqual,
				Value: vesselv1.ComputeTypeVessel, Effect: corev1.TaintEffectNoSchedule,
			}},
		},
	}
	for _, m := range mods {
		m(pod)
	}
	created, err := e.Client.CoreV1().Pods(e.ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return created
}

func nodeOf(sb *vesselv1.Sandbox) string {
	return vesselv1.NodeNamePrefix + strings.ReplaceAll(sb.Spec.Network.IP, ".", "-")
}

// expectScheduled waits until pod is bound and returns its Sandbox and Node.
func (e *schedEnv) expectScheduled(t *testing.T, pod *corev1.Pod) (*vesselv1.Sandbox, *corev1.Node) {
	t.Helper()
	var sb vesselv1.Sandbox
	var node *corev1.Node
	testenv.Eventually(t, 30*time.Second, "pod "+pod.Name+" scheduled", func(ctx context.Context) error {
		p, err := e.Client.CoreV1().Pods(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName == "" {
			return fmt.Errorf("not bound; conditions %v", p.Status.Conditions)
		}
		if err := e.c.Get(ctx, types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(p.UID)}, &sb); err != nil {
			return err
		}
		if node, err = e.Client.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{}); err != nil {
			return err
		}
		if p.Spec.NodeName != nodeOf(&sb) {
			return fmt.Errorf("bound to %s, sandbox IP %s", p.Spec.NodeName, sb.Spec.Network.IP)
		}
		return nil
	})
	return &sb, node
}

// expectPodCondition waits for PodScheduled=False with reason and message.
func (e *schedEnv) expectPodScheduledFalse(t *testing.T, pod *corev1.Pod, reason, message string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("pod %s PodScheduled=False %s", pod.Name, reason), func(ctx context.Context) error {
		p, err := e.Client.CoreV1().Pods(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reason &&
				(message == "" || c.Message == message) {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v, nodeName %q", p.Status.Conditions, p.Spec.NodeName)
	})
}

// expectEvent waits for an event about pod from vessel-scheduler.
func (e *schedEnv) expectEvent(t *testing.T, pod *corev1.Pod, reason, messagePart string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("event %s on %s", reason, pod.Name), func(ctx context.Context) error {
		evs, err := e.Client.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": pod.Name, "reason": reason}.String(),
		})
		if err != nil {
			return err
		}
		var seen []string
		for _, ev := range evs.Items {
			if ev.Source.Component == vesselv1.SchedulerName && strings.Contains(ev.Message, messagePart) {
				return nil
			}
			seen = append(seen, ev.Source.Component+": "+ev.Message)
		}
		return fmt.Errorf("events seen: %v", seen)
	})
}

// releaseSandbox removes the finalizer, as the host agent does after teardown.
func (e *schedEnv) releaseSandbox(t *testing.T, name string) {
	ctx := context.Background()
	for range 10 {
		var sb vesselv1.Sandbox
		if err := e.c.Get(ctx, types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: name}, &sb); err != nil {
			return
		}
		sb.Finalizers = slices.DeleteFunc(sb.Finalizers, func(f string) bool { return f == vesselv1.FinalizerSandbox })
		if err := e.c.Update(ctx, &sb); err == nil || apierrors.IsNotFound(err) {
			return
		}
	}
}

func (e *schedEnv) expectGone(t *testing.T, what string, get func(ctx context.Context) error) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, what+" gone", func(ctx context.Context) error {
		err := get(ctx)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return errors.New("still there")
		}
		return err
	})
}

func TestSchedulerPlacesPodOnSandboxAndNode(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.60.1.0/24", "10.60.1.1", "zone-a")
	profile := e.profile(t, sub)
	host := e.host(t, "h1", 10)
	// As a user holding only scheduler.ClusterRole: the role is enough.
	e.startSchedulerAs(t, e.restrictedConfig(t))

	pod := e.pod(t, "web", profile, func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2Gi"),
		}
		p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	})
	sb, node := e.expectScheduled(t, pod)

	// Sandbox: owner, size, host, network, labels, finalizer, containers.
	if sb.Spec.Owner != (vesselv1.SandboxOwner{Kind: vesselv1.OwnerPod, Namespace: e.ns, Name: "web", UID: pod.UID}) {
		t.Errorf("sandbox owner = %+v", sb.Spec.Owner)
	}
	if sb.Spec.Size != (vesselv1.SandboxSize{MilliVCPU: 1000, MemoryMiB: 3072, DiskGiB: 20}) {
		t.Errorf("sandbox size = %+v, want 1 vCPU / 3 GB / 20 GiB", sb.Spec.Size)
	}
	n := sb.Spec.Network
	if sb.Spec.Host != host || n.Subnet != sub || n.Gateway != "10.60.1.1" || n.PrefixLength != 24 ||
		!strings.HasPrefix(n.IP, "10.60.1.") || n.IP == "10.60.1.1" || !strings.HasPrefix(n.MAC, "02:56:0a:3c:01:") {
		t.Errorf("sandbox host %s network %+v", sb.Spec.Host, n)
	}
	if !slices.Contains(sb.Finalizers, vesselv1.FinalizerSandbox) || sb.Labels[vesselv1.LabelPodUID] != string(pod.UID) ||
		sb.Labels[vesselv1.LabelHost] != host || sb.Labels[vesselv1.LabelPodNamespace] != e.ns || sb.Labels[vesselv1.LabelPodName] != "web" {
		t.Errorf("sandbox finalizers %v labels %v", sb.Finalizers, sb.Labels)
	}
	if len(sb.Spec.Containers) != 1 || sb.Spec.Containers[0].Image != "registry.local/demo:1" ||
		sb.Spec.RestartPolicy != corev1.RestartPolicyOnFailure || sb.Spec.Isolation != vesselv1.IsolationOCI || sb.Spec.Hostname != "web" {
		t.Errorf("sandbox spec = %+v", sb.Spec)
	}

	// Node: name, labels, taint, capacity, addresses, endpoint, info.
	wantName := "vessel-" + strings.ReplaceAll(n.IP, ".", "-")
	if node.Name != wantName {
		t.Errorf("node name = %s, want %s", node.Name, wantName)
	}
	for k, v := range map[string]string{
		vesselv1.LabelComputeType: "vessel", vesselv1.LabelProfile: profile, "topology.kubernetes.io/zone": "zone-a",
		"kubernetes.io/hostname": wantName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
	} {
		if node.Labels[k] != v {
			t.Errorf("node label %s = %q, want %q", k, node.Labels[k], v)
		}
	}
	if !slices.ContainsFunc(node.Spec.Taints, func(tn corev1.Taint) bool {
		return tn.Key == vesselv1.LabelComputeType && tn.Value == "vessel" && tn.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("node taints = %v", node.Spec.Taints)
	}
	for name, want := range map[corev1.ResourceName]string{corev1.ResourcePods: "1", corev1.ResourceCPU: "1", corev1.ResourceMemory: "3Gi", corev1.ResourceEphemeralStorage: "20Gi"} {
		if got := node.Status.Capacity[name]; got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("node capacity %s = %s, want %s", name, got.String(), want)
		}
		if got := node.Status.Allocatable[name]; got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("node allocatable %s = %s, want %s", name, got.String(), want)
		}
	}
	if !slices.Contains(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}) {
		t.Errorf("node addresses = %v", node.Status.Addresses)
	}
	if node.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 || node.Annotations[vesselv1.AnnotationSandbox] != sb.Name ||
		node.Status.NodeInfo.ContainerRuntimeVersion != "vessel-oci" || node.Status.NodeInfo.KubeletVersion == "" {
		t.Errorf("node endpoints %v annotations %v info %+v", node.Status.DaemonEndpoints, node.Annotations, node.Status.NodeInfo)
	}

	e.expectEvent(t, pod, "Scheduled", fmt.Sprintf("Successfully assigned %s/web to %s", e.ns, wantName))
	p, _ := e.Client.CoreV1().Pods(e.ns).Get(context.Background(), "web", metav1.GetOptions{})
	if !slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue
	}) {
		t.Errorf("pod conditions = %v, want PodScheduled=True", p.Status.Conditions)
	}

	if out, err := e.Kubectl(t, nil, "get", "nodes", "-l", "vessel.dev/compute-type=vessel"); err != nil || !strings.Contains(out, wantName) {
		t.Errorf("kubectl get nodes: %v\n%s", err, out)
	}
}

func TestSchedulerDistinctIPsAcrossRestart(t *testing.T) {
	e := newSchedEnv(t)
	a := e.subnet(t, "a", "10.61.1.0/24", "10.61.1.1", "zone-a")
	b := e.subnet(t, "b", "10.61.2.0/24", "10.61.2.1", "zone-b")
	profile := e.profile(t, a, b)
	e.host(t, "h1", 100)
	stop := e.startScheduler(t)

	var pods []*corev1.Pod
	for i := range 20 {
		pods = append(pods, e.pod(t, fmt.Sprintf("p%02d", i), profile))
	}
	ips := map[string]string{}
	perSubnet := map[string]int{}
	check := func(pods []*corev1.Pod) {
		for _, p := range pods {
			sb, node := e.expectScheduled(t, p)
			if other, dup := ips[sb.Spec.Network.IP]; dup {
				t.Fatalf("%s and %s both got %s", other, p.Name, sb.Spec.Network.IP)
			}
			ips[sb.Spec.Network.IP] = p.Name
			perSubnet[sb.Spec.Network.Subnet]++
			if node.Labels["topology.kubernetes.io/zone"] == "" {
				t.Errorf("node %s has no zone", node.Name)
			}
		}
	}
	check(pods)
	if perSubnet[a] != 10 || perSubnet[b] != 10 {
		t.Errorf("pods per subnet = %v, want 10 in each (spread)", perSubnet)
	}
	testenv.Eventually(t, 30*time.Second, "subnet status counts addresses", func(ctx context.Context) error {
		var sub vesselv1.Subnet
		if err := e.c.Get(ctx, client.ObjectKey{Name: a}, &sub); err != nil {
			return err
		}
		if sub.Status.Allocated != 10 || sub.Status.Available != 243 {
			return fmt.Errorf("status %+v, want allocated 10, available 243", sub.Status)
		}
		return nil
	})

	// A new scheduler rebuilds its addresses from the Sandboxes.
	stop()
	e.startScheduler(t)
	var more []*corev1.Pod
	for i := range 6 {
		more = append(more, e.pod(t, fmt.Sprintf("q%02d", i), profile))
	}
	check(more)
	if len(ips) != 26 {
		t.Fatalf("%d distinct IPs for 26 pods", len(ips))
	}
}

func TestSchedulerWaitsForCapacity(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.62.1.0/24", "10.62.1.1", "")
	profile := e.profile(t, sub)
	e.startScheduler(t)

	pod := e.pod(t, "waiting", profile)
	e.expectPodScheduledFalse(t, pod, "Unschedulable", "")
	e.expectEvent(t, pod, "FailedScheduling", "hosts are available")

	e.host(t, "late", 1)
	e.expectScheduled(t, pod)
	e.expectEvent(t, pod, "Scheduled", "Successfully assigned")

	// The host is full now (pods: 1).
	second := e.pod(t, "second", profile)
	e.expectPodScheduledFalse(t, second, "Unschedulable", "0/1 hosts are available: 1 too many sandboxes")
}

func TestSchedulerRefusesTooLargePod(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.63.1.0/24", "10.63.1.1", "")
	profile := e.profile(t, sub)
	e.host(t, "h1", 10)
	e.startScheduler(t)

	const msg = "pod's cpu/memory requirements exceed the largest Vessel size (16 vCPU, 120 GB)"
	pod := e.pod(t, "huge", profile, func(p *corev1.Pod) {
		p.Annotations[vesselv1.AnnotationExceedsMaxSize] = msg
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32")}
	})
	e.expectPodScheduledFalse(t, pod, "ExceedsMaxSize", msg)
	time.Sleep(2 * time.Second)
	p, _ := e.Client.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if p.Spec.NodeName != "" {
		t.Fatalf("too-large pod was bound to %s", p.Spec.NodeName)
	}
}

func TestSchedulerCollectsDeletedPods(t *testing.T) {
	e := newSchedEnv(t)
	// A /30 has exactly one address: the second pod needs the first's.
	sub := e.subnet(t, "tiny", "10.64.1.0/30", "10.64.1.1", "")
	profile := e.profile(t, sub)
	e.host(t, "h1", 10)
	e.startScheduler(t)
	ctx := context.Background()

	first := e.pod(t, "first", profile)
	sb, node := e.expectScheduled(t, first)
	if sb.Spec.Network.IP != "10.64.1.2" {
		t.Fatalf("first pod got %s, want 10.64.1.2", sb.Spec.Network.IP)
	}
	second := e.pod(t, "second", profile)
	e.expectPodScheduledFalse(t, second, "Unschedulable", "")

	if err := e.Client.CoreV1().Pods(e.ns).Delete(ctx, first.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "sandbox of deleted pod marked for deletion", func(ctx context.Context) error {
		var got vesselv1.Sandbox
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(sb), &got); err != nil {
			return err
		}
		if got.DeletionTimestamp == nil {
			return errors.New("no deletionTimestamp")
		}
		return nil
	})
	// The Node stays while the Sandbox does (the agent is tearing it down).
	if _, err := e.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("node gone before its sandbox: %v", err)
	}
	e.releaseSandbox(t, sb.Name)
	e.expectGone(t, "sandbox "+sb.Name, func(ctx context.Context) error {
		return e.c.Get(ctx, client.ObjectKeyFromObject(sb), &vesselv1.Sandbox{})
	})

	// The address is free again: the waiting pod gets it, and a Node of the same name.
	sb2, node2 := e.expectScheduled(t, second)
	if sb2.Spec.Network.IP != "10.64.1.2" || node2.Name != node.Name || node2.UID == node.UID {
		t.Fatalf("second pod: ip %s node %s (uid %s); first node %s (uid %s)", sb2.Spec.Network.IP, node2.Name, node2.UID, node.Name, node.UID)
	}
}

func TestSchedulerCollectsOrphans(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.65.1.0/24", "10.65.1.1", "")
	profile := e.profile(t, sub)
	e.host(t, "h1", 10)
	stop := e.startScheduler(t)
	ctx := context.Background()

	pod := e.pod(t, "orphan", profile)
	sb, node := e.expectScheduled(t, pod)
	// Pod deleted while no scheduler runs: the next one finds the orphan.
	stop()
	if err := e.Client.CoreV1().Pods(e.ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	e.startScheduler(t)
	testenv.Eventually(t, 30*time.Second, "orphan sandbox deleted", func(ctx context.Context) error {
		var got vesselv1.Sandbox
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(sb), &got); err != nil {
			return err
		}
		if got.DeletionTimestamp == nil {
			return errors.New("no deletionTimestamp")
		}
		return nil
	})
	e.releaseSandbox(t, sb.Name)
	e.expectGone(t, "node "+node.Name, func(ctx context.Context) error {
		_, err := e.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		return err
	})
}

func TestSchedulerFailsPodsOfLostHost(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.66.1.0/24", "10.66.1.1", "")
	profile := e.profile(t, sub)
	host := e.host(t, "doomed", 10)
	e.startScheduler(t)
	ctx := context.Background()

	var pods []*corev1.Pod
	var sbs []*vesselv1.Sandbox
	var nodes []*corev1.Node
	for i := range 2 {
		p := e.pod(t, fmt.Sprintf("p%d", i), profile)
		sb, node := e.expectScheduled(t, p)
		pods, sbs, nodes = append(pods, p), append(sbs, sb), append(nodes, node)
	}

	// The agent stops renewing: its Lease is an hour old.
	var lease coordinationv1.Lease
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: vesselv1.SystemNamespace, Name: host}, &lease); err != nil {
		t.Fatal(err)
	}
	lease.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now().Add(-2 * time.Hour)))
	if err := e.c.Update(ctx, &lease); err != nil {
		t.Fatal(err)
	}

	for i, p := range pods {
		testenv.Eventually(t, 30*time.Second, "pod "+p.Name+" Failed with HostLost", func(ctx context.Context) error {
			got, err := e.Client.CoreV1().Pods(e.ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got.Status.Phase != corev1.PodFailed || got.Status.Reason != "HostLost" || !strings.Contains(got.Status.Message, host) {
				return fmt.Errorf("phase %s reason %q message %q", got.Status.Phase, got.Status.Reason, got.Status.Message)
			}
			return nil
		})
		e.expectGone(t, "sandbox "+sbs[i].Name, func(ctx context.Context) error {
			return e.c.Get(ctx, client.ObjectKeyFromObject(sbs[i]), &vesselv1.Sandbox{})
		})
		e.expectGone(t, "node "+nodes[i].Name, func(ctx context.Context) error {
			_, err := e.Client.CoreV1().Nodes().Get(ctx, nodes[i].Name, metav1.GetOptions{})
			return err
		})
	}
	// New pods do not go to the lost host.
	late := e.pod(t, "late", profile)
	e.expectPodScheduledFalse(t, late, "Unschedulable", "")
}

// A scheduler killed after creating a Sandbox but before the Node and the
// binding: the next one adopts the Sandbox (same host, same address).
func TestSchedulerFinishesHalfDoneWork(t *testing.T) {
	e := newSchedEnv(t)
	sub := e.subnet(t, "a", "10.67.1.0/24", "10.67.1.1", "")
	profile := e.profile(t, sub)
	host := e.host(t, "h1", 10)
	pod := e.pod(t, "half", profile)
	sb := &vesselv1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(pod.UID),
			Labels:     map[string]string{vesselv1.LabelPodNamespace: e.ns, vesselv1.LabelPodUID: string(pod.UID)},
			Finalizers: []string{vesselv1.FinalizerSandbox},
		},
		Spec: vesselv1.SandboxSpec{
			Owner:      vesselv1.SandboxOwner{Kind: vesselv1.OwnerPod, Namespace: e.ns, Name: pod.Name, UID: pod.UID},
			Size:       vesselv1.SandboxSize{MilliVCPU: 250, MemoryMiB: 512, DiskGiB: 20},
			Host:       host,
			Network:    vesselv1.SandboxNetwork{Subnet: sub, IP: "10.67.1.77", MAC: "02:56:0a:43:01:4d", Gateway: "10.67.1.1", PrefixLength: 24},
			Isolation:  vesselv1.IsolationOCI,
			Containers: pod.Spec.Containers,
		},
	}
	if err := e.c.Create(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	e.startScheduler(t)
	got, node := e.expectScheduled(t, pod)
	if got.UID != sb.UID || node.Name != "vessel-10-67-1-77" {
		t.Fatalf("pod went to sandbox %s (uid %s) node %s; want the existing sandbox and vessel-10-67-1-77", got.Name, got.UID, node.Name)
	}
	// The adopted address is taken: the next pod gets another one.
	other, _ := e.expectScheduled(t, e.pod(t, "next", profile))
	if other.Spec.Network.IP == "10.67.1.77" {
		t.Fatal("address of the adopted sandbox handed out again")
	}
}
