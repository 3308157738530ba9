package hostagent

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/runtime"
)

type fakeObjects struct {
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func (f fakeObjects) ConfigMap(_ context.Context, _, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f fakeObjects) Secret(_ context.Context, _, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func TestResolveEnv(t *testing.T) {
	objs := fakeObjects{
		cms:     map[string]*corev1.ConfigMap{"cm": {Data: map[string]string{"k": "v", "b": "2", "bad=key": "x"}}},
		secrets: map[string]*corev1.Secret{"s": {Data: map[string][]byte{"pw": []byte("hunter2")}}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "x"}, Annotations: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}}}}},
	}
	facts := podFacts{PodIP: "10.0.0.5", HostIP: "192.168.1.1", NodeName: "vessel-10-0-0-5", Size: vesselv1.SandboxSize{MilliVCPU: 1000, MemoryMiB: 2048}}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	c := &corev1.Container{
		Name: "c",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}},
			{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr.To(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "k", Value: "override"},
			{Name: "NAME", ValueFrom: field("metadata.name")},
			{Name: "NS", ValueFrom: field("metadata.namespace")},
			{Name: "UID", ValueFrom: field("metadata.uid")},
			{Name: "APP", ValueFrom: field("metadata.labels['app']")},
			{Name: "ANN", ValueFrom: field("metadata.annotations['a']")},
			{Name: "IP", ValueFrom: field("status.podIP")},
			{Name: "HOST", ValueFrom: field("status.hostIP")},
			{Name: "NODE", ValueFrom: field("spec.nodeName")},
			{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
			{Name: "CPU_REQ_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
			{Name: "CPU_LIM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_LIM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CMK", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "b"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "missing", Optional: ptr.To(true)}}},
			{Name: "REF", Value: "$(NAME)@$(IP) $(UNDEFINED) $$(NAME)"},
		},
	}
	got, err := resolveEnv(context.Background(), c, pod, facts, objs)
	if err != nil {
		t.Fatal(err)
	}
	want := []runtime.EnvVar{
		{Name: "b", Value: "2"}, {Name: "k", Value: "override"}, {Name: "S_pw", Value: "hunter2"},
		{Name: "NAME", Value: "p"}, {Name: "NS", Value: "ns"}, {Name: "UID", Value: "u1"}, {Name: "APP", Value: "x"},
		{Name: "ANN", Value: "b"}, {Name: "IP", Value: "10.0.0.5"}, {Name: "HOST", Value: "192.168.1.1"},
		{Name: "NODE", Value: "vessel-10-0-0-5"}, {Name: "SA", Value: "sa"}, {Name: "CPU_REQ_M", Value: "250"},
		{Name: "CPU_LIM", Value: "1"}, {Name: "MEM_LIM_MI", Value: "2048"}, {Name: "CMK", Value: "2"},
		{Name: "REF", Value: "p@10.0.0.5 $(UNDEFINED) $(NAME)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	for name, env := range map[string]corev1.EnvVar{
		"missing configmap": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}},
		"missing key":       {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "nope"}}},
		"bad field":         {Name: "X", ValueFrom: field("spec.bogus")},
	} {
		_, err := resolveEnv(context.Background(), &corev1.Container{Name: "c", Env: []corev1.EnvVar{env}}, pod, facts, objs)
		if err == nil || !strings.Contains(err.Error(), errConfig.Error()) {
			t.Errorf("%s: want a config error, got %v", name, err)
		}
	}
}

func TestFormatMap(t *testing.T) {
	if got := formatMap(map[string]string{"b": `say "hi"`, "a": "1"}); got != "a=\"1\"\nb=\"say \\\"hi\\\"\"" {
		t.Errorf("got %q", got)
	}
}

func TestBackoffDelay(t *testing.T) {
	base, max := 10*time.Second, 5*time.Minute
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for n, w := range want {
		if got := backoffDelay(n, base, max); got != w {
			t.Errorf("backoffDelay(%d) = %s, want %s", n, got, w)
		}
	}
	var b backoff
	t0 := time.Unix(1000, 0)
	if u := b.next("a", t0, t0.Add(time.Second), base, max); !u.Equal(t0.Add(time.Second)) {
		t.Errorf("first restart should be immediate, got %s", u.Sub(t0))
	}
	if u := b.next("a", t0, t0.Add(time.Second), base, max); !u.Equal(t0.Add(time.Second)) {
		t.Errorf("same instance must give the same time")
	}
	if u := b.next("b", t0.Add(2*time.Second), t0.Add(3*time.Second), base, max); u.Sub(t0.Add(3*time.Second)) != 10*time.Second {
		t.Errorf("second restart after 10s, got %s", u.Sub(t0.Add(3*time.Second)))
	}
	if u := b.next("c", t0, t0.Add(11*time.Minute), base, max); !u.Equal(t0.Add(11 * time.Minute)) {
		t.Errorf("a 10 min run resets the back-off")
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tc := range []struct {
		policy  corev1.RestartPolicy
		sidecar bool
		code    int
		want    bool
	}{
		{corev1.RestartPolicyAlways, false, 0, true},
		{corev1.RestartPolicyAlways, false, 1, true},
		{corev1.RestartPolicyOnFailure, false, 0, false},
		{corev1.RestartPolicyOnFailure, false, 137, true},
		{corev1.RestartPolicyNever, false, 1, false},
		{corev1.RestartPolicyNever, true, 0, true},
		{"", false, 0, true},
	} {
		if got := shouldRestart(tc.policy, tc.sidecar, tc.code); got != tc.want {
			t.Errorf("shouldRestart(%s, %v, %d) = %v", tc.policy, tc.sidecar, tc.code, got)
		}
	}
}

func runningSt() corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}
func exitedSt(code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}
func waitingSt(after *int32) corev1.ContainerStatus {
	s := corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}
	if after != nil {
		s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: *after}
	}
	return s
}

func TestPodPhase(t *testing.T) {
	one := []corev1.Container{{Name: "i"}}
	for name, tc := range map[string]struct {
		init     []corev1.ContainerStatus
		initSpec []corev1.Container
		main     []corev1.ContainerStatus
		policy   corev1.RestartPolicy
		want     corev1.PodPhase
	}{
		"creating":                   {main: []corev1.ContainerStatus{waitingSt(nil)}, policy: "Always", want: corev1.PodPending},
		"running":                    {main: []corev1.ContainerStatus{runningSt()}, policy: "Always", want: corev1.PodRunning},
		"crash loop stays Running":   {main: []corev1.ContainerStatus{waitingSt(ptr.To(int32(1)))}, policy: "Always", want: corev1.PodRunning},
		"never, exit 0":              {main: []corev1.ContainerStatus{exitedSt(0)}, policy: "Never", want: corev1.PodSucceeded},
		"never, exit 1":              {main: []corev1.ContainerStatus{exitedSt(1)}, policy: "Never", want: corev1.PodFailed},
		"never, one still running":   {main: []corev1.ContainerStatus{exitedSt(1), runningSt()}, policy: "Never", want: corev1.PodRunning},
		"onfailure, all ok":          {main: []corev1.ContainerStatus{exitedSt(0), exitedSt(0)}, policy: "OnFailure", want: corev1.PodSucceeded},
		"onfailure, failed restarts": {main: []corev1.ContainerStatus{exitedSt(2)}, policy: "OnFailure", want: corev1.PodRunning},
		"always, all exited":         {main: []corev1.ContainerStatus{exitedSt(0)}, policy: "Always", want: corev1.PodRunning},
		"init running":               {initSpec: one, init: []corev1.ContainerStatus{runningSt()}, main: []corev1.ContainerStatus{waitingSt(nil)}, policy: "Always", want: corev1.PodPending},
		"init failed, never":         {initSpec: one, init: []corev1.ContainerStatus{exitedSt(1)}, main: []corev1.ContainerStatus{waitingSt(nil)}, policy: "Never", want: corev1.PodFailed},
		"init failed, retries":       {initSpec: one, init: []corev1.ContainerStatus{waitingSt(ptr.To(int32(1)))}, main: []corev1.ContainerStatus{waitingSt(nil)}, policy: "OnFailure", want: corev1.PodPending},
		"init done, main running":    {initSpec: one, init: []corev1.ContainerStatus{exitedSt(0)}, main: []corev1.ContainerStatus{runningSt()}, policy: "Always", want: corev1.PodRunning},
	} {
		if got := podPhase(tc.initSpec, tc.init, tc.main, tc.policy); got != tc.want {
			t.Errorf("%s: phase %s, want %s", name, got, tc.want)
		}
	}
}

func TestPodConditions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ready := runningSt()
	ready.Name, ready.Ready = "a", true
	unready := runningSt()
	unready.Name = "b"
	conds := podConditions(nil, corev1.PodRunning, true, nil, nil, []corev1.ContainerStatus{ready, unready}, "Always", nil, t0)
	get := func(cs []corev1.PodCondition, typ corev1.PodConditionType) corev1.PodCondition {
		for _, c := range cs {
			if c.Type == typ {
				return c
			}
		}
		t.Fatalf("no condition %s", typ)
		return corev1.PodCondition{}
	}
	if c := get(conds, corev1.ContainersReady); c.Status != corev1.ConditionFalse || c.Message != "containers with unready status: [b]" {
		t.Errorf("ContainersReady %+v", c)
	}
	if c := get(conds, corev1.PodInitialized); c.Status != corev1.ConditionTrue {
		t.Errorf("Initialized %+v", c)
	}
	if c := get(conds, podReadyToStartContainers); c.Status != corev1.ConditionTrue {
		t.Errorf("PodReadyToStartContainers %+v", c)
	}
	// Later, both ready: Ready flips and gets a new transition time; unchanged ones keep theirs.
	unready.Ready = true
	t1 := t0.Add(time.Minute)
	conds2 := podConditions(conds, corev1.PodRunning, true, nil, nil, []corev1.ContainerStatus{ready, unready}, "Always", nil, t1)
	if c := get(conds2, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Time.Equal(t1) {
		t.Errorf("Ready %+v", c)
	}
	if c := get(conds2, corev1.PodInitialized); !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Initialized transition time moved: %+v", c)
	}
	// A readiness gate holds Ready back; foreign conditions are kept.
	gated := podConditions(append(conds2, corev1.PodCondition{Type: "example.com/gate", Status: corev1.ConditionFalse}), corev1.PodRunning, true, nil, nil,
		[]corev1.ContainerStatus{ready, unready}, "Always", []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}, t1)
	if c := get(gated, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ReadinessGatesNotReady" {
		t.Errorf("gated Ready %+v", c)
	}
	get(gated, "example.com/gate")
	// Completed pods are not Ready.
	done := podConditions(nil, corev1.PodSucceeded, true, nil, nil, []corev1.ContainerStatus{exitedSt(0)}, "Never", nil, t1)
	if c := get(done, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "PodCompleted" {
		t.Errorf("completed Ready %+v", c)
	}
	// Pending init containers.
	init := podConditions(nil, corev1.PodPending, true, []corev1.Container{{Name: "setup"}}, []corev1.ContainerStatus{runningSt()}, []corev1.ContainerStatus{waitingSt(nil)}, "Always", nil, t1)
	if c := get(init, corev1.PodInitialized); c.Status != corev1.ConditionFalse || c.Message != "containers with incomplete status: [setup]" {
		t.Errorf("Initialized %+v", c)
	}
}

func TestContainerStatus(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	cur := &runtime.ContainerStatus{ID: "sb.c.2", Attempt: 2, State: runtime.ContainerRunning, StartedAt: t0}
	prev := &runtime.ContainerStatus{ID: "sb.c.1", Attempt: 1, State: runtime.ContainerExited, ExitCode: 137, Reason: "OOMKilled", OOMKilled: true, StartedAt: t0, FinishedAt: t0}
	st := containerStatus(containerView{Spec: corev1.Container{Name: "c", Image: "img"}, Cur: cur, Prev: prev, Ready: true, Started: true, ImageID: "repo@sha256:x"})
	if st.RestartCount != 2 || st.ContainerID != "vessel://sb.c.2" || !st.Ready || st.Started == nil || !*st.Started || st.State.Running == nil ||
		st.LastTerminationState.Terminated == nil || st.LastTerminationState.Terminated.Reason != "OOMKilled" || st.ImageID != "repo@sha256:x" {
		t.Errorf("running: %+v", st)
	}
	exited := &runtime.ContainerStatus{ID: "sb.c.3", Attempt: 3, State: runtime.ContainerExited, ExitCode: 1, Reason: "Error", StartedAt: t0, FinishedAt: t0}
	st = containerStatus(containerView{Spec: corev1.Container{Name: "c"}, Cur: exited, Prev: cur, Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}})
	if st.State.Waiting == nil || st.State.Waiting.Reason != "CrashLoopBackOff" || st.LastTerminationState.Terminated == nil ||
		st.LastTerminationState.Terminated.ExitCode != 1 || st.Ready || *st.Started {
		t.Errorf("backoff: %+v", st)
	}
	st = containerStatus(containerView{Spec: corev1.Container{Name: "c"}})
	if st.State.Waiting == nil || st.State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("new: %+v", st)
	}
	lost := &runtime.ContainerStatus{ID: "sb.c.0", State: runtime.ContainerUnknown, StartedAt: t0}
	st = containerStatus(containerView{Spec: corev1.Container{Name: "c"}, Cur: lost})
	if st.State.Terminated == nil || st.State.Terminated.Reason != "ContainerStatusUnknown" || st.State.Terminated.ExitCode != 137 {
		t.Errorf("unknown: %+v", st)
	}
	// Restart counts survive a host reboot through the last reported status.
	if n := nextAttempt(&containerView{Last: &corev1.ContainerStatus{RestartCount: 4, ContainerID: "vessel://x"}}); n != 5 {
		t.Errorf("nextAttempt after reboot = %d", n)
	}
	if n := nextAttempt(&containerView{Cur: exited}); n != 4 {
		t.Errorf("nextAttempt = %d", n)
	}
	if n := nextAttempt(&containerView{}); n != 0 {
		t.Errorf("first attempt = %d", n)
	}
}

func TestCapacity(t *testing.T) {
	m := machine{CPUs: 4, MemoryBytes: 16 << 30, DiskBytes: 100<<30 + 12345}
	got := capacity(m, corev1.ResourceList{corev1.ResourcePods: resource.MustParse("20")}, 1<<30, 110, 1, 1, 1)
	if got.Cpu().MilliValue() != 4000 || got.Memory().Value() != 15<<30 || got.StorageEphemeral().Value() != 100<<30 || got.Pods().Value() != 20 {
		t.Errorf("capacity %v", got)
	}
	small := capacity(machine{CPUs: 1, MemoryBytes: 1 << 30}, nil, 1<<30, 110, 1, 1, 1)
	if small.Memory().Value() != 512<<20 {
		t.Errorf("reserve must leave half of a small machine: %v", small.Memory())
	}
}

func TestProbeCounter(t *testing.T) {
	p := probeCounter{successThreshold: 2, failureThreshold: 3}
	var got []int
	for _, ok := range []bool{true, true, false, false, true, false, false, false} {
		got = append(got, p.observe(ok))
	}
	if want := []int{0, 1, 0, 0, 0, 0, 0, -1}; !reflect.DeepEqual(got, want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}
}

func TestResolvePort(t *testing.T) {
	c := &corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	if p, err := resolvePort(intstr.FromString("http"), c); err != nil || p != 8080 {
		t.Errorf("named: %d %v", p, err)
	}
	if p, err := resolvePort(intstr.FromInt32(9090), c); err != nil || p != 9090 {
		t.Errorf("number: %d %v", p, err)
	}
	if _, err := resolvePort(intstr.FromString("grpc"), c); err == nil {
		t.Error("unknown name must fail")
	}
}

func TestDNSConfig(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns"}}
	d := dnsConfig(pod, []netip.Addr{netip.MustParseAddr("10.43.0.10")}, "cluster.local")
	if len(d.Nameservers) != 1 || d.Searches[0] != "ns.svc.cluster.local" || d.Options[0] != "ndots:5" {
		t.Errorf("ClusterFirst: %+v", d)
	}
	pod.Spec.DNSPolicy = corev1.DNSNone
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"example.com"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}}}
	d = dnsConfig(pod, []netip.Addr{netip.MustParseAddr("10.43.0.10")}, "cluster.local")
	if len(d.Nameservers) != 1 || d.Nameservers[0].String() != "1.1.1.1" || !reflect.DeepEqual(d.Searches, []string{"example.com"}) || d.Options[0] != "ndots:2" {
		t.Errorf("None: %+v", d)
	}
}

func TestNames(t *testing.T) {
	if nodeName("10.0.1.23") != "vessel-10-0-1-23" {
		t.Error("names")
	}
}

func TestFreshlyReady(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 10, 0, time.UTC)
	node := func(status corev1.ConditionStatus, beat time.Time) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.NewTime(now)},
			{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.NewTime(beat)},
		}}}
	}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"created Ready a moment ago", node(corev1.ConditionTrue, now.Add(-time.Second)), true},
		{"Ready, heartbeat due", node(corev1.ConditionTrue, now.Add(-6*time.Second)), false},
		{"not Ready", node(corev1.ConditionFalse, now), false},
		{"no conditions", &corev1.Node{}, false},
	} {
		if got := freshlyReady(tc.node, now, 5*time.Second); got != tc.want {
			t.Errorf("%s: freshlyReady = %v, want %v", tc.name, got, tc.want)
		}
	}
}
