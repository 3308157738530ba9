package admission

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// fakeCluster is the ProfileLister and SubnetLister of unit tests.
type fakeCluster struct {
	profiles []vesselv1.VesselProfile
	subnets  []vesselv1.Subnet
	err      error
}

func (c *fakeCluster) ListProfiles(context.Context) ([]vesselv1.VesselProfile, error) {
	return c.profiles, c.err
}

func (c *fakeCluster) ListSubnets(context.Context) ([]vesselv1.Subnet, error) {
	return c.subnets, c.err
}

// fakeAuthorizer allows the users listed for a profile and fails for the
// users in errs. It records who was asked.
type fakeAuthorizer struct {
	mu      sync.Mutex
	allowed map[string][]string // profile -> usernames
	errs    map[string]error    // username -> error
	asked   []string
}

func (a *fakeAuthorizer) CanUse(_ context.Context, user authenticationv1.UserInfo, profile string) (bool, error) {
	a.mu.Lock()
	a.asked = append(a.asked, user.Username)
	a.mu.Unlock()
	if err := a.errs[user.Username]; err != nil {
		return false, err
	}
	for _, u := range a.allowed[profile] {
		if u == user.Username {
			return true, nil
		}
	}
	return false, nil
}

func activeProfile(name string, namespace string, sidecars ...corev1.Container) vesselv1.VesselProfile {
	return vesselv1.VesselProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: vesselv1.VesselProfileSpec{
			Selectors: []vesselv1.ProfileSelector{{Namespace: namespace}},
			Subnets:   []string{"subnet-a"},
			Sidecars:  sidecars,
		},
		Status: vesselv1.VesselProfileStatus{Phase: vesselv1.ProfileActive},
	}
}

func subnet(name, cidr, gw string) vesselv1.Subnet {
	return vesselv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: vesselv1.SubnetSpec{CIDR: cidr, Gateway: gw}}
}

const alice = "alice"

// newTestHandler serves profile "default-profile" for namespace default,
// usable by alice, with subnet-a existing.
func newTestHandler(t testing.TB) (*Handler, *fakeCluster, *fakeAuthorizer) {
	t.Helper()
	cluster := &fakeCluster{
		profiles: []vesselv1.VesselProfile{activeProfile("default-profile", "default")},
		subnets:  []vesselv1.Subnet{subnet("subnet-a", "10.0.1.0/24", "10.0.1.1")},
	}
	authz := &fakeAuthorizer{allowed: map[string][]string{"default-profile": {alice}}}
	h, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, cluster, cluster, authz)
	if err != nil {
		t.Fatal(err)
	}
	return h, cluster, authz
}

func basicPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
		},
	}
}

// podRequest is a pod CREATE by alice.
func podRequest(t testing.TB, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	return &admissionv1.AdmissionRequest{
		UID:       types.UID("uid-1"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace,
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: alice},
		Object:    runtime.RawExtension{Raw: mustJSON(t, pod)},
	}
}

func objectRequest(t testing.TB, kind string, op admissionv1.Operation, obj, old any) *admissionv1.AdmissionRequest {
	t.Helper()
	req := &admissionv1.AdmissionRequest{
		UID:       "uid-2",
		Kind:      metav1.GroupVersionKind{Group: vesselv1.GroupName, Version: "v1", Kind: kind},
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: "admin"},
		Object:    runtime.RawExtension{Raw: mustJSON(t, obj)},
	}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: mustJSON(t, old)}
	}
	return req
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reviewBody(t testing.TB, req *admissionv1.AdmissionRequest) []byte {
	return mustJSON(t, admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
}

// post sends a review through the HTTP handler, as the apiserver would,
// and returns the decoded response; the HTTP status must be 200.
func post(t testing.TB, h http.Handler, path string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(reviewBody(t, req)))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d: %s", path, w.Code, w.Body)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Response == nil {
		t.Fatalf("bad response envelope: %s", w.Body)
	}
	if review.Response.UID != req.UID {
		t.Fatalf("response uid %q, want %q", review.Response.UID, req.UID)
	}
	return review.Response
}

func message(resp *admissionv1.AdmissionResponse) string {
	if resp.Result == nil {
		return ""
	}
	return resp.Result.Message
}
