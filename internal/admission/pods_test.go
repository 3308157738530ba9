package admission

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// applyPatch applies the response's JSON patch to pod and returns the
// result, as the apiserver does.
func applyPatch(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", resp.Patch, err)
	}
	out, err := patch.Apply(mustJSON(t, pod))
	if err != nil {
		t.Fatalf("apply patch %s: %v", resp.Patch, err)
	}
	patched := &corev1.Pod{}
	if err := json.Unmarshal(out, patched); err != nil {
		t.Fatal(err)
	}
	return patched
}

func TestMutatePodPatch(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	logShipper := corev1.Container{Name: "log-shipper", Image: "fluent-bit",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}}

	for _, tc := range []struct {
		name     string
		sidecars []corev1.Container
		pod      func() *corev1.Pod
		want     func(*corev1.Pod) // edits the input pod into the expected one
	}{
		{
			name: "bare pod gets every map and list created",
			pod:  basicPod,
			want: func(p *corev1.Pod) {
				p.Labels = map[string]string{vesselv1.LabelProfile: "default-profile"}
				p.Annotations = map[string]string{
					vesselv1.AnnotationCapacityProvisioned: "0.25vCPU 0.5GB",
					vesselv1.AnnotationIsolation:           "microvm",
				}
				p.Spec.SchedulerName = vesselv1.SchedulerName
				p.Spec.Tolerations = []corev1.Toleration{vesselToleration}
			},
		},
		{
			name: "existing labels, annotations, tolerations and scheduler are kept or replaced",
			pod: func() *corev1.Pod {
				p := basicPod()
				p.Labels = map[string]string{"app": "web"}
				p.Annotations = map[string]string{"note": "x", vesselv1.AnnotationIsolation: "fake"}
				p.Spec.SchedulerName = "default-scheduler"
				p.Spec.Tolerations = []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists}}
				p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("8Gi")}
				return p
			},
			want: func(p *corev1.Pod) {
				p.Labels[vesselv1.LabelProfile] = "default-profile"
				p.Annotations[vesselv1.AnnotationCapacityProvisioned] = "2vCPU 9GB"
				p.Annotations[vesselv1.AnnotationIsolation] = "microvm"
				p.Spec.SchedulerName = vesselv1.SchedulerName
				p.Spec.Tolerations = append(p.Spec.Tolerations, vesselToleration)
			},
		},
		{
			name: "toleration already present is not duplicated",
			pod: func() *corev1.Pod {
				p := basicPod()
				p.Spec.Tolerations = []corev1.Toleration{vesselToleration}
				return p
			},
			want: func(p *corev1.Pod) {
				p.Labels = map[string]string{vesselv1.LabelProfile: "default-profile"}
				p.Annotations = map[string]string{vesselv1.AnnotationCapacityProvisioned: "0.25vCPU 0.5GB", vesselv1.AnnotationIsolation: "microvm"}
				p.Spec.SchedulerName = vesselv1.SchedulerName
			},
		},
		{
			name:     "profile sidecars go first among init containers and count in the size",
			sidecars: []corev1.Container{logShipper},
			pod: func() *corev1.Pod {
				p := basicPod()
				p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "migrate"}}
				p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
				return p
			},
			want: func(p *corev1.Pod) {
				p.Labels = map[string]string{vesselv1.LabelProfile: "default-profile"}
				// 1 GiB + 512 MiB sidecar + 256 MiB agent.
				p.Annotations = map[string]string{vesselv1.AnnotationCapacityProvisioned: "0.25vCPU 2GB", vesselv1.AnnotationIsolation: "microvm"}
				p.Spec.SchedulerName = vesselv1.SchedulerName
				p.Spec.Tolerations = []corev1.Toleration{vesselToleration}
				side := *logShipper.DeepCopy()
				side.RestartPolicy = &always
				p.Spec.InitContainers = append([]corev1.Container{side}, p.Spec.InitContainers...)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, cluster, _ := newTestHandler(t)
			cluster.profiles[0].Spec.Sidecars = tc.sidecars
			pod := tc.pod()
			resp := post(t, h, PathMutatePods, podRequest(t, pod))
			got := applyPatch(t, pod, resp)
			want := tc.pod()
			tc.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("patched pod (-want +got):\n%s\npatch: %s", diff, resp.Patch)
			}
			if resp.AuditAnnotations["profile"] != "default-profile" {
				t.Errorf("audit annotations %v", resp.AuditAnnotations)
			}
		})
	}
}

func TestMutatePodIsolationFromConfig(t *testing.T) {
	cluster := &fakeCluster{profiles: []vesselv1.VesselProfile{activeProfile("p", "*")}}
	authz := &fakeAuthorizer{allowed: map[string][]string{"p": {alice}}}
	h, err := New(Config{Isolation: vesselv1.IsolationOCI}, cluster, cluster, authz)
	if err != nil {
		t.Fatal(err)
	}
	got := applyPatch(t, basicPod(), post(t, h, PathMutatePods, podRequest(t, basicPod())))
	if got.Annotations[vesselv1.AnnotationIsolation] != "oci" {
		t.Errorf("isolation annotation %q, want oci", got.Annotations[vesselv1.AnnotationIsolation])
	}
	if _, err := New(Config{Isolation: "vm"}, cluster, cluster, authz); err == nil {
		t.Error("unknown isolation accepted")
	}
	if _, err := New(Config{}, nil, cluster, authz); err == nil {
		t.Error("nil lister accepted")
	}
}

func TestNonMatchingPodPassesUntouched(t *testing.T) {
	h, _, authz := newTestHandler(t)
	pod := basicPod()
	pod.Namespace = "other"
	pod.Spec.HostNetwork = true // would be refused on Vessel; not our business here
	resp := post(t, h, PathMutatePods, podRequest(t, pod))
	if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil || resp.Result != nil {
		t.Errorf("got %+v, want allowed with no patch", resp)
	}
	if len(authz.asked) != 0 {
		t.Errorf("authorizer asked about a pod no profile selects: %v", authz.asked)
	}
}

func TestNonCreateOperationsPass(t *testing.T) {
	h, _, _ := newTestHandler(t)
	req := podRequest(t, basicPod())
	req.Operation = admissionv1.Update
	if resp := post(t, h, PathMutatePods, req); !resp.Allowed || resp.Patch != nil {
		t.Errorf("update: %+v", resp)
	}
}

func TestPodRejections(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		name string
		edit func(*corev1.Pod)
		want string
	}{
		{"host namespaces", func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.HostPID, p.Spec.HostIPC = true, true, true },
			"Pod not supported on Vessel: fields not supported: HostNetwork, HostPID, HostIPC"},
		{"host PID only", func(p *corev1.Pod) { p.Spec.HostPID = true },
			"Pod not supported on Vessel: fields not supported: HostPID"},
		{"host port", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		},
			"Pod not supported on Vessel: port contains HostIP or HostPort"},
		{"host IP in an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "x", Ports: []corev1.ContainerPort{{ContainerPort: 80, HostIP: "0.0.0.0"}}}}
		}, "Pod not supported on Vessel: port contains HostIP or HostPort"},
		{"privileged", func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes} },
			"Pod not supported on Vessel: invalid SecurityContext fields: Privileged"},
		{"capabilities added", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
				Add: []corev1.Capability{"SYS_ADMIN", "CAP_NET_ADMIN", "sys_admin"}, Drop: []corev1.Capability{"ALL"}}}
		}, "Pod not supported on Vessel: invalid SecurityContext fields: Capabilities added: CAP_NET_ADMIN, CAP_SYS_ADMIN"},
		{"capabilities only dropped are fine", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		}, ""},
		{"hostPath volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "Pod not supported on Vessel: volumes not supported: data is of an unsupported volume type hostPath"},
		{"several unsupported volumes", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{
				{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
				{Name: "huge", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}}},
				{Name: "img", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "x"}}},
			}
		}, "Pod not supported on Vessel: volumes not supported: claim is of an unsupported volume type persistentVolumeClaim, " +
			"huge is of an unsupported volume type emptyDir with medium HugePages, img is of an unsupported volume type image"},
		{"supported volumes", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{
				{Name: "a", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "b", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
				{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				{Name: "d", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
				{Name: "e", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}},
				{Name: "f", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
				{Name: "g", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}},
			}
		}, ""},
		{"DaemonSet owner", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "DaemonSet", Name: "ds", UID: "u"}}
		}, "Pod not supported on Vessel: pod owned by a DaemonSet"},
		{"ReplicaSet owner is fine", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "u"}}
		}, ""},
		{"GPU", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
		}, "Pod not supported on Vessel: GPU resources not supported: nvidia.com/gpu"},
		{"every reason at once, in order", func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes,
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CAP_SYS_ADMIN"}}}
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", UID: "u"}}
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"amd.com/gpu": resource.MustParse("1")}
		}, "Pod not supported on Vessel: fields not supported: HostNetwork, port contains HostIP or HostPort, " +
			"invalid SecurityContext fields: Privileged, invalid SecurityContext fields: Capabilities added: CAP_SYS_ADMIN, " +
			"volumes not supported: data is of an unsupported volume type hostPath, pod owned by a DaemonSet, " +
			"GPU resources not supported: amd.com/gpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := newTestHandler(t)
			pod := basicPod()
			tc.edit(pod)
			resp := post(t, h, PathMutatePods, podRequest(t, pod))
			if tc.want == "" {
				if !resp.Allowed {
					t.Fatalf("denied: %s", message(resp))
				}
				return
			}
			if resp.Allowed || message(resp) != tc.want {
				t.Fatalf("got allowed=%v %q\nwant denied %q", resp.Allowed, message(resp), tc.want)
			}
			if resp.Result.Code != http.StatusForbidden || resp.Patch != nil {
				t.Errorf("code %d patch %s, want 403 and no patch", resp.Result.Code, resp.Patch)
			}
		})
	}
}

func TestSidecarNameConflict(t *testing.T) {
	h, cluster, _ := newTestHandler(t)
	cluster.profiles[0].Spec.Sidecars = []corev1.Container{{Name: "app", Image: "x"}}
	resp := post(t, h, PathMutatePods, podRequest(t, basicPod()))
	want := "Pod not supported on Vessel: container name app is reserved for a sidecar of VesselProfile default-profile"
	if resp.Allowed || message(resp) != want {
		t.Errorf("got %v %q, want %q", resp.Allowed, message(resp), want)
	}
}

func TestTooLargePodIsAdmittedAtMaxSize(t *testing.T) {
	h, _, _ := newTestHandler(t)
	pod := basicPod()
	pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32")}
	resp := post(t, h, PathMutatePods, podRequest(t, pod))
	got := applyPatch(t, pod, resp)
	want := "pod's cpu/memory requirements exceed the largest Vessel size (16 vCPU, 120 GB)"
	if got.Annotations[vesselv1.AnnotationExceedsMaxSize] != want {
		t.Errorf("exceeds annotation %q, want %q", got.Annotations[vesselv1.AnnotationExceedsMaxSize], want)
	}
	if got.Annotations[vesselv1.AnnotationCapacityProvisioned] != "16vCPU 120GB" {
		t.Errorf("capacity %q", got.Annotations[vesselv1.AnnotationCapacityProvisioned])
	}
	if got.Spec.SchedulerName != vesselv1.SchedulerName {
		t.Error("too-large pod not handed to the Vessel scheduler, which must report it")
	}
	if len(resp.Warnings) != 1 || resp.Warnings[0] != want {
		t.Errorf("warnings %v", resp.Warnings)
	}
}

func TestRequestedProfile(t *testing.T) {
	h, cluster, authz := newTestHandler(t)
	cluster.profiles = append(cluster.profiles, activeProfile("aaa", "*"))
	authz.allowed["aaa"] = []string{alice}

	pod := basicPod()
	if got := applyPatch(t, pod, post(t, h, PathMutatePods, podRequest(t, pod))); got.Labels[vesselv1.LabelProfile] != "aaa" {
		t.Errorf("without label: profile %q, want aaa (first by name)", got.Labels[vesselv1.LabelProfile])
	}

	pod.Labels = map[string]string{vesselv1.LabelProfile: "default-profile"}
	if got := applyPatch(t, pod, post(t, h, PathMutatePods, podRequest(t, pod))); got.Labels[vesselv1.LabelProfile] != "default-profile" {
		t.Errorf("with label: profile %q", got.Labels[vesselv1.LabelProfile])
	}

	pod.Labels[vesselv1.LabelProfile] = "missing"
	resp := post(t, h, PathMutatePods, podRequest(t, pod))
	want := `label vessel.dev/profile names VesselProfile "missing", which does not exist (kubectl get vesselprofiles lists them)`
	if resp.Allowed || message(resp) != want || resp.Result.Code != http.StatusBadRequest {
		t.Errorf("got %v %q, want 400 %q", resp.Allowed, message(resp), want)
	}
}

func TestAuthorization(t *testing.T) {
	saName := "system:serviceaccount:default:builder"
	for _, tc := range []struct {
		name     string
		allowed  []string
		errs     map[string]error
		wantCode int32 // 0: allowed
		wantMsg  string
	}{
		{name: "user may", allowed: []string{alice}},
		{name: "service account may", allowed: []string{saName}},
		{name: "user check fails but service account may", allowed: []string{saName}, errs: map[string]error{alice: errors.New("boom")}},
		{name: "neither may", wantCode: http.StatusForbidden,
			wantMsg: `neither user "alice" nor service account "system:serviceaccount:default:builder" may use VesselProfile "default-profile": ` +
				`grant verb "use" on resource vesselprofiles.vessel.dev named "default-profile" to one of them`},
		{name: "authorizer down", errs: map[string]error{alice: errors.New("boom"), saName: errors.New("boom")}, wantCode: http.StatusInternalServerError,
			wantMsg: "check whether alice may use VesselProfile default-profile: boom\ncheck whether " + saName + " may use VesselProfile default-profile: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, authz := newTestHandler(t)
			authz.allowed["default-profile"] = tc.allowed
			authz.errs = tc.errs
			pod := basicPod()
			pod.Spec.ServiceAccountName = "builder"
			resp := post(t, h, PathMutatePods, podRequest(t, pod))
			if tc.wantCode == 0 {
				applyPatch(t, pod, resp)
				return
			}
			if resp.Allowed || resp.Result.Code != tc.wantCode || message(resp) != tc.wantMsg {
				t.Errorf("got allowed=%v code=%d %q\nwant code=%d %q", resp.Allowed, resp.Result.Code, message(resp), tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestAuthorizationDefaultServiceAccountAndSelf(t *testing.T) {
	h, _, authz := newTestHandler(t)
	authz.allowed["default-profile"] = []string{"system:serviceaccount:default:default"}
	req := podRequest(t, basicPod())
	// A service account creating its own pod is asked about once.
	req.UserInfo = authenticationv1.UserInfo{Username: "system:serviceaccount:default:default"}
	if resp := post(t, h, PathMutatePods, req); !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if len(authz.asked) != 1 {
		t.Errorf("asked %v, want the service account once", authz.asked)
	}
}

func TestListerFailureFailsClosed(t *testing.T) {
	h, cluster, _ := newTestHandler(t)
	cluster.err = errors.New("cache not synced")
	resp := post(t, h, PathMutatePods, podRequest(t, basicPod()))
	if resp.Allowed || resp.Result.Code != http.StatusInternalServerError || !strings.Contains(message(resp), "cache not synced") {
		t.Errorf("got %+v", resp)
	}
}

func TestPodWebhookRefusesOtherKinds(t *testing.T) {
	h, _, _ := newTestHandler(t)
	req := objectRequest(t, "Subnet", admissionv1.Create, subnet("x", "10.9.0.0/24", "10.9.0.1"), nil)
	if resp := post(t, h, PathMutatePods, req); resp.Allowed {
		t.Error("pod webhook allowed a Subnet")
	}
}

func TestEscapePointer(t *testing.T) {
	for in, want := range map[string]string{"vessel.dev/profile": "vessel.dev~1profile", "a~b/c": "a~0b~1c", "plain": "plain"} {
		if got := escapePointer(in); got != want {
			t.Errorf("escapePointer(%q) = %q, want %q", in, got, want)
		}
	}
}
