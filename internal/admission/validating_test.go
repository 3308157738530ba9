package admission

import (
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

func newProfile(name string, subnets ...string) *vesselv1.VesselProfile {
	return &vesselv1.VesselProfile{
		TypeMeta:   metav1.TypeMeta{APIVersion: "vessel.dev/v1", Kind: "VesselProfile"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: vesselv1.VesselProfileSpec{
			Selectors: []vesselv1.ProfileSelector{{Namespace: "team-*"}},
			Subnets:   subnets,
		},
	}
}

func TestValidateProfileCreate(t *testing.T) {
	h, _, _ := newTestHandler(t)
	resp := post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Create, newProfile("team", "subnet-a"), nil))
	if !resp.Allowed {
		t.Fatalf("valid profile denied: %s", message(resp))
	}

	resp = post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Create, newProfile("team", "subnet-a", "subnet-z"), nil))
	want := `VesselProfile.vessel.dev "team" is invalid: spec.subnets[1]: Invalid value: "subnet-z": ` +
		`no Subnet named "subnet-z" exists: create it first, or list one of kubectl get subnets`
	if resp.Allowed || message(resp) != want || resp.Result.Code != http.StatusUnprocessableEntity {
		t.Errorf("got allowed=%v %q\nwant 422 %q", resp.Allowed, message(resp), want)
	}
	if resp.Result.Details == nil || len(resp.Result.Details.Causes) != 1 || resp.Result.Details.Causes[0].Field != "spec.subnets[1]" {
		t.Errorf("causes %+v, want one for spec.subnets[1]", resp.Result.Details)
	}
}

func TestValidateProfileCountLimit(t *testing.T) {
	h, cluster, _ := newTestHandler(t)
	h.cfg.Limits.MaxProfiles = 1
	resp := post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Create, newProfile("second", "subnet-a"), nil))
	if resp.Allowed || !strings.Contains(message(resp), "the cluster already has 1 VesselProfiles, the limit") {
		t.Errorf("got %v %q", resp.Allowed, message(resp))
	}
	cluster.profiles = nil
	if resp := post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Create, newProfile("second", "subnet-a"), nil)); !resp.Allowed {
		t.Errorf("under the limit: %s", message(resp))
	}
}

func TestValidateProfileUpdate(t *testing.T) {
	h, _, _ := newTestHandler(t)
	old := newProfile("team", "subnet-a")
	relabeled := old.DeepCopy()
	relabeled.Labels = map[string]string{"owner": "platform"}
	relabeled.Finalizers = []string{"vessel.dev/pods"}
	if resp := post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Update, relabeled, old)); !resp.Allowed {
		t.Errorf("metadata update denied: %s", message(resp))
	}

	changed := old.DeepCopy()
	changed.Spec.Selectors[0].Namespace = "prod"
	resp := post(t, h, PathValidateProfiles, objectRequest(t, "VesselProfile", admissionv1.Update, changed, old))
	want := `VesselProfile.vessel.dev "team" is invalid: spec: Forbidden: spec is immutable: create a new VesselProfile with the new spec, then delete this one`
	if resp.Allowed || message(resp) != want {
		t.Errorf("got %v %q\nwant %q", resp.Allowed, message(resp), want)
	}

	status := objectRequest(t, "VesselProfile", admissionv1.Update, changed, old)
	status.SubResource = "status"
	if resp := post(t, h, PathValidateProfiles, status); !resp.Allowed {
		t.Error("status update denied")
	}
}

func TestValidateSubnetWebhook(t *testing.T) {
	h, _, _ := newTestHandler(t)
	ok := subnet("subnet-b", "10.0.2.0/24", "10.0.2.1")
	if resp := post(t, h, PathValidateSubnets, objectRequest(t, "Subnet", admissionv1.Create, &ok, nil)); !resp.Allowed {
		t.Errorf("valid subnet denied: %s", message(resp))
	}
	overlap := subnet("subnet-b", "10.0.0.0/16", "10.0.0.1")
	resp := post(t, h, PathValidateSubnets, objectRequest(t, "Subnet", admissionv1.Create, &overlap, nil))
	want := `Subnet.vessel.dev "subnet-b" is invalid: spec.cidr: Invalid value: "10.0.0.0/16": overlaps Subnet "subnet-a" (10.0.1.0/24): choose a range outside it`
	if resp.Allowed || message(resp) != want {
		t.Errorf("got %v %q\nwant %q", resp.Allowed, message(resp), want)
	}
	// Updating a subnet in place does not overlap itself.
	same := subnet("subnet-a", "10.0.1.0/24", "10.0.1.2")
	if resp := post(t, h, PathValidateSubnets, objectRequest(t, "Subnet", admissionv1.Update, &same, subnet("subnet-a", "10.0.1.0/24", "10.0.1.1"))); !resp.Allowed {
		t.Errorf("in-place update denied: %s", message(resp))
	}
}
