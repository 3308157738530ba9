package profile

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// ErrRequestedProfile is matched (errors.Is) by every error Match returns:
// the pod names a profile in label vessel.dev/profile that cannot take it.
var ErrRequestedProfile = errors.New("requested VesselProfile cannot run this pod")

// SelectorMatches reports whether a pod in namespace with labels is
// selected: the namespace matches and, for every label pair of the
// selector, the pod has a label whose key and value match it.
func SelectorMatches(sel vesselv1.ProfileSelector, namespace string, labels map[string]string) bool {
	if !MatchPattern(sel.Namespace, namespace) {
		return false
	}
	for keyPattern, valuePattern := range sel.Labels {
		if !hasMatchingLabel(labels, keyPattern, valuePattern) {
			return false
		}
	}
	return true
}

func hasMatchingLabel(labels map[string]string, keyPattern, valuePattern string) bool {
	if v, ok := labels[keyPattern]; ok && MatchPattern(valuePattern, v) {
		return true // the common case: the key is not a pattern
	}
	for k, v := range labels {
		if MatchPattern(keyPattern, k) && MatchPattern(valuePattern, v) {
			return true
		}
	}
	return false
}

// Matches reports whether any selector of the profile selects the pod.
func Matches(p *vesselv1.VesselProfile, namespace string, labels map[string]string) bool {
	for _, sel := range p.Spec.Selectors {
		if SelectorMatches(sel, namespace, labels) {
			return true
		}
	}
	return false
}

// Eligible reports whether a profile may admit new pods: it is Active and
// not being deleted. Creating profiles are not eligible, so a pod is never
// admitted through a profile whose subnets have not been checked yet.
func Eligible(p *vesselv1.VesselProfile) bool {
	return p.Status.Phase == vesselv1.ProfileActive && p.DeletionTimestamp == nil
}

// Match returns the profile that runs pod, or nil when none does. The pod's
// namespace must be set (admission copies it from the request).
//
// When the pod carries label vessel.dev/profile, that profile is the only
// candidate: it must exist, be eligible and match the pod, or Match returns
// an error matching ErrRequestedProfile that says which. Otherwise the
// first eligible matching profile in byte order of name wins. Match does
// not modify profiles and returns a pointer into it.
func Match(profiles []vesselv1.VesselProfile, pod *corev1.Pod) (*vesselv1.VesselProfile, error) {
	if name, ok := pod.Labels[vesselv1.LabelProfile]; ok {
		return matchRequested(profiles, pod, name)
	}
	var best *vesselv1.VesselProfile
	for i := range profiles {
		p := &profiles[i]
		if (best == nil || p.Name < best.Name) && Eligible(p) && Matches(p, pod.Namespace, pod.Labels) {
			best = p
		}
	}
	return best, nil
}

func matchRequested(profiles []vesselv1.VesselProfile, pod *corev1.Pod, name string) (*vesselv1.VesselProfile, error) {
	for i := range profiles {
		p := &profiles[i]
		if p.Name != name {
			continue
		}
		if !Eligible(p) {
			state := string(p.Status.Phase)
			if p.DeletionTimestamp != nil {
				state = "being deleted"
			} else if state == "" {
				state = "not yet processed"
			}
			return nil, fmt.Errorf("label %s names VesselProfile %q, which is %s, not Active: %w",
				vesselv1.LabelProfile, name, state, ErrRequestedProfile)
		}
		if !Matches(p, pod.Namespace, pod.Labels) {
			return nil, fmt.Errorf("label %s names VesselProfile %q, but none of its selectors matches namespace %q and the pod's labels: %w",
				vesselv1.LabelProfile, name, pod.Namespace, ErrRequestedProfile)
		}
		return p, nil
	}
	return nil, fmt.Errorf("label %s names VesselProfile %q, which does not exist (kubectl get vesselprofiles lists them): %w",
		vesselv1.LabelProfile, name, ErrRequestedProfile)
}
