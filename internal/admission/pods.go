package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/profile"
	"github.com/vessel-dev/vessel/internal/sizing"
)

// vesselToleration lets a pod onto the tainted per-pod Vessel nodes.
var vesselToleration = corev1.Toleration{
	Key:      vesselv1.LabelComputeType,
	Operator: corev1.TolerationOpEqual,
	Value:    vesselv1.ComputeTypeVessel,
	Effect:   corev1.TaintEffectNoSchedule,
}

// mutatePod admits a pod being created: pods no profile selects pass
// untouched; the others are authorized, checked, sized and rewritten to
// run on Vessel.
func (h *Handler) mutatePod(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return deny(http.StatusBadRequest, fmt.Sprintf(
			"vessel pod webhook got %s %s: its rules must select only pods (CREATE)", req.Kind.Kind, req.SubResource))
	}
	if req.Operation != admissionv1.Create {
		return allow() // profiles are matched at creation only
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return deny(http.StatusBadRequest, "decode pod: "+err.Error())
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace // unset on create; matching needs it
	}

	profiles, err := h.profiles.ListProfiles(ctx)
	if err != nil {
		return deny(http.StatusInternalServerError, fmt.Sprintf("list VesselProfiles: %v", err))
	}
	prof, err := profile.Match(profiles, pod)
	if err != nil {
		return deny(http.StatusBadRequest, strings.TrimSuffix(err.Error(), ": "+profile.ErrRequestedProfile.Error()))
	}
	if prof == nil {
		return allow()
	}

	reasons := unsupportedReasons(pod)
	reasons = append(reasons, sidecarConflicts(pod, prof)...)
	if len(reasons) > 0 {
		return deny(http.StatusForbidden, unsupportedPrefix+strings.Join(reasons, ", "))
	}

	if resp := h.authorize(ctx, req.UserInfo, pod, prof.Name); resp != nil {
		return resp
	}

	resp, err := h.podPatch(pod, prof)
	if err != nil {
		return deny(http.StatusInternalServerError, err.Error())
	}
	resp.AuditAnnotations = map[string]string{"profile": prof.Name}
	return resp
}

// sidecarConflicts refuses to inject a profile sidecar whose name the pod
// already uses, which the apiserver would refuse with a less clear message.
func sidecarConflicts(pod *corev1.Pod, prof *vesselv1.VesselProfile) []string {
	if len(prof.Spec.Sidecars) == 0 {
		return nil
	}
	used := map[string]bool{}
	forEachContainer(&pod.Spec, func(c *corev1.Container) { used[c.Name] = true })
	var out []string
	for _, s := range prof.Spec.Sidecars {
		if used[s.Name] {
			out = append(out, fmt.Sprintf("container name %s is reserved for a sidecar of VesselProfile %s", s.Name, prof.Name))
		}
	}
	return out
}

// authorize allows the pod when either the requesting user or the pod's
// service account may use the profile, as PodSecurityPolicy did: a
// controller creating pods for a Deployment is allowed when the
// Deployment's service account is. It returns nil when allowed.
func (h *Handler) authorize(ctx context.Context, user authenticationv1.UserInfo, pod *corev1.Pod, profileName string) *admissionv1.AdmissionResponse {
	sa := ServiceAccountUser(pod.Namespace, serviceAccountName(pod))
	candidates := []authenticationv1.UserInfo{sa}
	if user.Username != "" && user.Username != sa.Username {
		candidates = []authenticationv1.UserInfo{user, sa}
	}
	var errs []error
	for _, u := range candidates {
		ok, err := h.authz.CanUse(ctx, u, profileName)
		if err != nil {
			errs = append(errs, fmt.Errorf("check whether %s may use VesselProfile %s: %w", u.Username, profileName, err))
			continue
		}
		if ok {
			return nil
		}
	}
	if len(errs) > 0 {
		h.cfg.Logger.Error("authorize pod", "namespace", pod.Namespace, "profile", profileName, "err", errors.Join(errs...))
		return deny(http.StatusInternalServerError, errors.Join(errs...).Error())
	}
	return deny(http.StatusForbidden, fmt.Sprintf(
		"neither user %q nor service account %q may use VesselProfile %q: grant verb %q on resource vesselprofiles.%s named %q to one of them",
		user.Username, sa.Username, profileName, vesselv1.VerbUse, vesselv1.GroupName, profileName))
}

func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default" // what the ServiceAccount admission plugin sets
}

// ServiceAccountUser is the identity the apiserver gives a service
// account's tokens.
func ServiceAccountUser(namespace, name string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:" + namespace + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
}

// podPatch sizes the pod as it will run (with the profile's sidecars) and
// returns the admitting response with the JSON patch that makes it a
// Vessel pod.
func (h *Handler) podPatch(pod *corev1.Pod, prof *vesselv1.VesselProfile) (*admissionv1.AdmissionResponse, error) {
	var patch jsonPatch
	var warnings []string

	initContainers := pod.Spec.InitContainers
	if len(prof.Spec.Sidecars) > 0 {
		initContainers = withSidecars(prof.Spec.Sidecars, pod.Spec.InitContainers)
		patch.add("/spec/initContainers", initContainers)
	}
	sized := *pod
	sized.Spec.InitContainers = initContainers
	size, err := sizing.ForPod(&sized)

	annotations := map[string]string{
		vesselv1.AnnotationCapacityProvisioned: size.String(),
		vesselv1.AnnotationIsolation:           string(h.cfg.Isolation),
	}
	switch {
	case errors.Is(err, sizing.ErrExceedsMaxSize):
		// Admitted but never placed: the scheduler reports this message
		// on the pod, where users look for why it is Pending.
		annotations[vesselv1.AnnotationExceedsMaxSize] = err.Error()
		warnings = append(warnings, err.Error())
	case err != nil:
		return nil, fmt.Errorf("size pod: %w", err)
	}

	patch.add("/spec/schedulerName", vesselv1.SchedulerName)
	patch.setMapEntries("/metadata/labels", pod.Labels, map[string]string{vesselv1.LabelProfile: prof.Name})
	patch.setMapEntries("/metadata/annotations", pod.Annotations, annotations)
	if !hasToleration(pod.Spec.Tolerations, vesselToleration) {
		if pod.Spec.Tolerations == nil {
			patch.add("/spec/tolerations", []corev1.Toleration{vesselToleration})
		} else {
			patch.add("/spec/tolerations/-", vesselToleration)
		}
	}

	b, err := patch.marshal()
	if err != nil {
		return nil, err
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: b, PatchType: &pt, Warnings: warnings}, nil
}

// withSidecars returns the init containers with the profile's sidecars in
// front, as native sidecars (restartPolicy Always): they start before the
// pod's own init containers and stop after its containers, so a Job's pod
// still completes.
func withSidecars(sidecars, initContainers []corev1.Container) []corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	out := make([]corev1.Container, 0, len(sidecars)+len(initContainers))
	for _, s := range sidecars {
		c := *s.DeepCopy()
		c.RestartPolicy = &always
		out = append(out, c)
	}
	return append(out, initContainers...)
}

func hasToleration(tolerations []corev1.Toleration, want corev1.Toleration) bool {
	for _, t := range tolerations {
		if t.Key == want.Key && t.Operator == want.Operator && t.Value == want.Value && t.Effect == want.Effect {
			return true
		}
	}
	return false
}
