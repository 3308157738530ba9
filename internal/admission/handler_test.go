package admission

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

func TestHTTPRequestChecks(t *testing.T) {
	h, _, _ := newTestHandler(t)
	h.cfg.MaxRequestBytes = 64 << 10
	valid := string(reviewBody(t, podRequest(t, basicPod())))
	for _, tc := range []struct {
		name, method, path, contentType, body string
		want                                  int
	}{
		{"valid", http.MethodPost, PathMutatePods, "application/json", valid, http.StatusOK},
		{"charset parameter is fine", http.MethodPost, PathMutatePods, "application/json; charset=utf-8", valid, http.StatusOK},
		{"GET", http.MethodGet, PathMutatePods, "application/json", valid, http.StatusMethodNotAllowed},
		{"unknown path", http.MethodPost, "/mutate/nodes", "application/json", valid, http.StatusNotFound},
		{"no content type", http.MethodPost, PathMutatePods, "", valid, http.StatusUnsupportedMediaType},
		{"yaml", http.MethodPost, PathMutatePods, "application/yaml", valid, http.StatusUnsupportedMediaType},
		{"too large", http.MethodPost, PathMutatePods, "application/json", `{"x":"` + strings.Repeat("a", 64<<10) + `"}`, http.StatusRequestEntityTooLarge},
		{"empty", http.MethodPost, PathMutatePods, "application/json", "", http.StatusBadRequest},
		{"not json", http.MethodPost, PathMutatePods, "application/json", "<xml/>", http.StatusBadRequest},
		{"truncated", http.MethodPost, PathMutatePods, "application/json", valid[:len(valid)/2], http.StatusBadRequest},
		{"v1beta1", http.MethodPost, PathMutatePods, "application/json", strings.Replace(valid, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), http.StatusBadRequest},
		{"no request", http.MethodPost, PathMutatePods, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"no uid", http.MethodPost, PathMutatePods, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`, http.StatusBadRequest},
		{"request of the wrong type", http.MethodPost, PathMutatePods, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[1]}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("HTTP %d, want %d: %s", w.Code, tc.want, w.Body)
			}
		})
	}
}

func TestMalformedObjectIsDeniedNotFailed(t *testing.T) {
	h, _, _ := newTestHandler(t)
	req := podRequest(t, basicPod())
	req.Object.Raw = []byte(`{"spec":{"containers":"nope"}}`)
	resp := post(t, h, PathMutatePods, req)
	if resp.Allowed || resp.Result.Code != http.StatusBadRequest || !strings.HasPrefix(message(resp), "decode pod: ") {
		t.Errorf("got %+v", resp)
	}
}

// FuzzAdmissionReview throws arbitrary bodies at every webhook path: the
// handler must answer 200 with a well-formed review carrying the request's
// UID, or a 4xx, and never panic (the recover would turn that into a 500).
func FuzzAdmissionReview(f *testing.F) {
	h, _, _ := newTestHandler(f)
	h.cfg.MaxRequestBytes = 1 << 20
	pod := basicPod()
	pod.Labels = map[string]string{"vessel.dev/profile": "default-profile"}
	pod.Spec.Volumes = nil
	seeds := [][]byte{
		reviewBody(f, podRequest(f, basicPod())),
		reviewBody(f, podRequest(f, pod)),
		reviewBody(f, objectRequest(f, "VesselProfile", admissionv1.Create, newProfile("p", "subnet-a"), nil)),
		reviewBody(f, objectRequest(f, "VesselProfile", admissionv1.Update, newProfile("p", "subnet-a"), newProfile("p", "b"))),
		reviewBody(f, objectRequest(f, "Subnet", admissionv1.Create, subnet("s", "10.0.0.0/8", "10.0.0.1"), nil)),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"default","object":{"spec":{"volumes":[{"name":"v"}],"containers":[{"name":"a","resources":{"requests":{"cpu":"1e9"}}}]}}}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":null}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"vessel.dev","kind":"Subnet"},"operation":"UPDATE","object":{"spec":{"cidr":"::/0"}}}}`),
		[]byte(`{}`),
		[]byte(`null`),
		[]byte(``),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"metadata":{"labels":{"vessel.dev/profile":"*"}}}}}`),
	}
	paths := []string{PathMutatePods, PathValidateProfiles, PathValidateSubnets}
	for _, s := range seeds {
		for i := range paths {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, pathIndex uint8, body []byte) {
		r := httptest.NewRequest(http.MethodPost, paths[int(pathIndex)%len(paths)], bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
			var in, out admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatalf("200 for an undecodable body: %v", err)
			}
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil || out.Response.UID != in.Request.UID {
				t.Fatalf("bad response %s (err %v) for uid %q", w.Body, err, in.Request.UID)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("HTTP %d: %s", w.Code, w.Body)
		}
	})
}
