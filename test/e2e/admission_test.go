package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/testenv"
)

func simplePod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
}

// expectMutated checks the pod the way REFERENCE §2 describes an admitted pod.
func expectMutated(t *testing.T, pod *corev1.Pod, profile, capacity string) {
	t.Helper()
	if pod.Spec.SchedulerName != vesselv1.SchedulerName {
		t.Errorf("pod %s: schedulerName %q, want %q", pod.Name, pod.Spec.SchedulerName, vesselv1.SchedulerName)
	}
	if got := pod.Labels[vesselv1.LabelProfile]; got != profile {
		t.Errorf("pod %s: label %s=%q, want %q", pod.Name, vesselv1.LabelProfile, got, profile)
	}
	if got := pod.Annotations[vesselv1.AnnotationCapacityProvisioned]; got != capacity {
		t.Errorf("pod %s: capacity annotation %q, want %q", pod.Name, got, capacity)
	}
	if got := pod.Annotations[vesselv1.AnnotationIsolation]; got != string(vesselv1.IsolationOCI) {
		t.Errorf("pod %s: isolation annotation %q, want oci", pod.Name, got)
	}
	want := corev1.Toleration{Key: vesselv1.LabelComputeType, Operator: corev1.TolerationOpEqual, Value: vesselv1.ComputeTypeVessel, Effect: corev1.TaintEffectNoSchedule}
	found := false
	for _, tol := range pod.Spec.Tolerations {
		found = found || tol == want
	}
	if !found {
		t.Errorf("pod %s: tolerations %+v lack %+v", pod.Name, pod.Spec.Tolerations, want)
	}
}

func TestAdmissionMutatesMatchingPods(t *testing.T) {
	env := testenv.Get(t)
	ns := env.Namespace(t)
	subnet := env.Subnet(t)
	prof := env.Profile(t, ns, subnet.Name)
	ctx := context.Background()

	t.Run("pod sized 1 vCPU + 8 GB becomes 2 vCPU / 9 GB", func(t *testing.T) {
		pod := simplePod("sized")
		pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("8Gi"),
		}
		got, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod: %v", err)
		}
		expectMutated(t, got, prof.Name, "2vCPU 9GB")
	})

	t.Run("nothing requested gets the smallest size", func(t *testing.T) {
		got, err := env.Client.CoreV1().Pods(ns).Create(ctx, simplePod("small"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod: %v", err)
		}
		expectMutated(t, got, prof.Name, "0.25vCPU 0.5GB")
	})

	t.Run("pods of a Deployment are mutated too", func(t *testing.T) {
		// The ReplicaSet controller creates the pods; it may not use the profile, the pods'
		// service account may.
		env.AllowUse(t, prof.Name, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "system:serviceaccounts:" + ns})
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
					Spec:       simplePod("web").Spec,
				},
			},
		}
		if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var pods *corev1.PodList
		testenv.Eventually(t, 60*time.Second, "2 pods of deployment web", func(ctx context.Context) (err error) {
			pods, err = env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err == nil && len(pods.Items) != 2 {
				err = fmt.Errorf("%d pods", len(pods.Items))
			}
			return err
		})
		for i := range pods.Items {
			expectMutated(t, &pods.Items[i], prof.Name, "0.25vCPU 0.5GB")
		}
	})

	t.Run("pod in a namespace no profile selects is untouched", func(t *testing.T) {
		other := env.Namespace(t)
		got, err := env.Client.CoreV1().Pods(other).Create(ctx, simplePod("plain"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.SchedulerName != corev1.DefaultSchedulerName || len(got.Annotations) != 0 || got.Labels[vesselv1.LabelProfile] != "" {
			t.Fatalf("non-matching pod was changed: scheduler %q, annotations %v, labels %v", got.Spec.SchedulerName, got.Annotations, got.Labels)
		}
	})
}

func TestAdmissionRefusesUnsupportedPods(t *testing.T) {
	env := testenv.Get(t)
	ns := env.Namespace(t)
	subnet := env.Subnet(t)
	env.Profile(t, ns, subnet.Name)
	cases := map[string]struct {
		mutate func(*corev1.Pod)
		want   string
	}{
		"privileged": {func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}, "Pod not supported on Vessel: invalid SecurityContext fields: Privileged"},
		"hostNetwork": {func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			"Pod not supported on Vessel: fields not supported: HostNetwork"},
		"hostPath": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}}}
		}, "Pod not supported on Vessel: volumes not supported: data is of an unsupported volume type hostPath"},
		"DaemonSet pod": {func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", UID: "0d3f5d1e-7a59-4d0b-8d5b-2a4f8f0c9e11"}}
		}, "Pod not supported on Vessel: pod owned by a DaemonSet"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pod := simplePod(strings.ToLower(strings.ReplaceAll(name, " ", "-")))
			tc.mutate(pod)
			_, err := env.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create %s pod: err %v, want it to contain %q", name, err, tc.want)
			}
		})
	}
}

func TestAdmissionAuthorizesUseOfProfile(t *testing.T) {
	env := testenv.Get(t)
	ns := env.Namespace(t)
	subnet := env.Subnet(t)
	prof := env.Profile(t, ns, subnet.Name)
	ctx := context.Background()
	// Both users may create pods in ns; only one may use the profile.
	for _, user := range []string{"alice", "bob"} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "edit-" + user, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
		}
		if err := env.Ctrl.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
	}
	env.AllowUse(t, prof.Name, rbacv1.Subject{Kind: rbacv1.UserKind, Name: "alice"})

	got, err := env.Impersonate(t, "alice").CoreV1().Pods(ns).Create(ctx, simplePod("by-alice"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("alice, who may use the profile, was refused: %v", err)
	}
	expectMutated(t, got, prof.Name, "0.25vCPU 0.5GB")

	_, err = env.Impersonate(t, "bob").CoreV1().Pods(ns).Create(ctx, simplePod("by-bob"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), prof.Name) || !strings.Contains(err.Error(), "use") {
		t.Fatalf("bob, who may not use profile %s, got err %v; want a refusal naming the profile and verb use", prof.Name, err)
	}
}

func TestAdmissionValidatesProfilesAndSubnets(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	subnet := env.Subnet(t)

	t.Run("profile naming a missing subnet", func(t *testing.T) {
		p := &vesselv1.VesselProfile{ObjectMeta: metav1.ObjectMeta{Name: "missing-subnet"},
			Spec: vesselv1.VesselProfileSpec{Selectors: []vesselv1.ProfileSelector{{Namespace: "x"}}, Subnets: []string{"no-such-subnet"}}}
		err := env.Ctrl.Create(ctx, p)
		if err == nil {
			_ = env.Ctrl.Delete(ctx, p)
		}
		if err == nil || !strings.Contains(err.Error(), "no-such-subnet") {
			t.Fatalf("got %v, want a refusal naming subnet no-such-subnet", err)
		}
	})
	t.Run("profile with six selectors", func(t *testing.T) {
		p := &vesselv1.VesselProfile{ObjectMeta: metav1.ObjectMeta{Name: "too-many"},
			Spec: vesselv1.VesselProfileSpec{Subnets: []string{subnet.Name}}}
		for i := range 6 {
			p.Spec.Selectors = append(p.Spec.Selectors, vesselv1.ProfileSelector{Namespace: fmt.Sprintf("ns%d", i)})
		}
		err := env.Ctrl.Create(ctx, p)
		if err == nil {
			_ = env.Ctrl.Delete(ctx, p)
		}
		if err == nil || !strings.Contains(err.Error(), "selectors") {
			t.Fatalf("got %v, want a refusal about selectors", err)
		}
	})
	t.Run("profile spec is immutable", func(t *testing.T) {
		p := env.Profile(t, "immutable-ns", subnet.Name)
		p.Spec.Selectors[0].Namespace = "other"
		err := env.Ctrl.Update(ctx, p)
		if err == nil || !strings.Contains(err.Error(), "immutable") {
			t.Fatalf("update of profile spec: %v, want refused as immutable", err)
		}
	})
	t.Run("subnet whose gateway is outside it", func(t *testing.T) {
		s := &vesselv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: "bad-gateway"},
			Spec: vesselv1.SubnetSpec{CIDR: "10.201.0.0/24", Gateway: "10.201.1.1", Zone: "e2e", VPC: "e2e"}}
		err := env.Ctrl.Create(ctx, s)
		if err == nil {
			_ = env.Ctrl.Delete(ctx, s)
		}
		if err == nil || !strings.Contains(err.Error(), "gateway") {
			t.Fatalf("got %v, want a refusal about the gateway", err)
		}
	})
	t.Run("subnet overlapping another", func(t *testing.T) {
		s := &vesselv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: "overlap"},
			Spec: vesselv1.SubnetSpec{CIDR: subnet.Spec.CIDR, Gateway: subnet.Spec.Gateway, Zone: "e2e", VPC: "e2e"}}
		err := env.Ctrl.Create(ctx, s)
		if err == nil {
			_ = env.Ctrl.Delete(ctx, s)
		}
		if err == nil || !strings.Contains(err.Error(), subnet.Name) {
			t.Fatalf("got %v, want a refusal naming the overlapped subnet %s", err, subnet.Name)
		}
	})
}
