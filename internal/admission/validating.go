package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/profile"
)

// validateProfile checks VesselProfile writes against the cluster: subnets
// that exist and the profile count on create, an unchanged spec on update.
// The CRD's CEL rule also refuses spec changes; this webhook gives the
// clearer message and covers clusters whose apiserver predates CEL.
func (h *Handler) validateProfile(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group != vesselv1.GroupName || req.Kind.Kind != "VesselProfile" {
		return deny(http.StatusBadRequest, fmt.Sprintf("vessel profile webhook got %s.%s: check its rules", req.Kind.Kind, req.Kind.Group))
	}
	if req.SubResource != "" {
		return allow() // status is the controller's
	}
	p := &vesselv1.VesselProfile{}
	if err := json.Unmarshal(req.Object.Raw, p); err != nil {
		return deny(http.StatusBadRequest, "decode VesselProfile: "+err.Error())
	}

	var errs field.ErrorList
	switch req.Operation {
	case admissionv1.Create:
		profiles, err := h.profiles.ListProfiles(ctx)
		if err != nil {
			return deny(http.StatusInternalServerError, fmt.Sprintf("list VesselProfiles: %v", err))
		}
		subnets, err := h.subnets.ListSubnets(ctx)
		if err != nil {
			return deny(http.StatusInternalServerError, fmt.Sprintf("list Subnets: %v", err))
		}
		errs = profile.ValidateProfileCreate(p, profiles, subnets, h.cfg.Limits)
	case admissionv1.Update:
		old := &vesselv1.VesselProfile{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return deny(http.StatusBadRequest, "decode old VesselProfile: "+err.Error())
		}
		errs = profile.ValidateProfileUpdate(p, old)
	default:
		return allow()
	}
	return invalid("VesselProfile", p.Name, errs)
}

// validateSubnet checks Subnet creates and updates, including overlap with
// every other Subnet.
func (h *Handler) validateSubnet(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group != vesselv1.GroupName || req.Kind.Kind != "Subnet" {
		return deny(http.StatusBadRequest, fmt.Sprintf("vessel subnet webhook got %s.%s: check its rules", req.Kind.Kind, req.Kind.Group))
	}
	if req.SubResource != "" || (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) {
		return allow()
	}
	s := &vesselv1.Subnet{}
	if err := json.Unmarshal(req.Object.Raw, s); err != nil {
		return deny(http.StatusBadRequest, "decode Subnet: "+err.Error())
	}
	subnets, err := h.subnets.ListSubnets(ctx)
	if err != nil {
		return deny(http.StatusInternalServerError, fmt.Sprintf("list Subnets: %v", err))
	}
	return invalid("Subnet", s.Name, profile.ValidateSubnet(s, subnets))
}

// invalid answers like the apiserver's own validation (422 with one cause
// per field), so kubectl prints it the familiar way; no errors admits.
func invalid(kind, name string, errs field.ErrorList) *admissionv1.AdmissionResponse {
	if len(errs) == 0 {
		return allow()
	}
	status := apierrors.NewInvalid(schema.GroupKind{Group: vesselv1.GroupName, Kind: kind}, name, errs).Status()
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &status}
}
