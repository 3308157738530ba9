package profile

import (
	"fmt"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// Limits bound what admins may create. Zero fields mean the default.
type Limits struct {
	MaxProfiles  int // per cluster
	MaxSelectors int // per profile
	MaxLabels    int // label pairs per selector
}

// DefaultLimits are Fargate's: 10 profiles, 5 selectors, 5 label pairs.
func DefaultLimits() Limits { return Limits{MaxProfiles: 10, MaxSelectors: 5, MaxLabels: 5} }

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxProfiles <= 0 {
		l.MaxProfiles = d.MaxProfiles
	}
	if l.MaxSelectors <= 0 {
		l.MaxSelectors = d.MaxSelectors
	}
	if l.MaxLabels <= 0 {
		l.MaxLabels = d.MaxLabels
	}
	return l
}

// Characters a pattern may contain besides "*" and "?". Anything else could
// never match a namespace or label, so it is almost certainly a mistake
// (often a regular expression).
const (
	namespaceChars  = "abcdefghijklmnopqrstuvwxyz0123456789-"
	labelValueChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	labelKeyChars   = labelValueChars + "/"
)

// ValidateProfileSpec checks a spec on its own. Every message says what is
// wrong and how to fix it.
func ValidateProfileSpec(spec *vesselv1.VesselProfileSpec, limits Limits, path *field.Path) field.ErrorList {
	limits = limits.withDefaults()
	var errs field.ErrorList

	selPath := path.Child("selectors")
	switch n := len(spec.Selectors); {
	case n == 0:
		errs = append(errs, field.Required(selPath, "at least one selector is required, e.g. {namespace: my-app}"))
	case n > limits.MaxSelectors:
		errs = append(errs, field.Invalid(selPath, n, fmt.Sprintf(
			"%d selectors given, at most %d are allowed: split them over several profiles", n, limits.MaxSelectors)))
	}
	for i, sel := range spec.Selectors {
		errs = append(errs, validateSelector(sel, limits, selPath.Index(i))...)
	}

	subPath := path.Child("subnets")
	if len(spec.Subnets) == 0 {
		errs = append(errs, field.Required(subPath, "at least one subnet is required: list the name of a Subnet (kubectl get subnets)"))
	}
	seen := map[string]bool{}
	for i, name := range spec.Subnets {
		switch {
		case name == "":
			errs = append(errs, field.Required(subPath.Index(i), "subnet name must not be empty"))
		case seen[name]:
			errs = append(errs, field.Duplicate(subPath.Index(i), name))
		}
		seen[name] = true
	}

	rolePath := path.Child("podExecutionRole")
	if ns := spec.PodExecutionRole.Namespace; ns != "" {
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs = append(errs, field.Invalid(rolePath.Child("namespace"), ns, msg))
		}
	}
	for i, ref := range spec.PodExecutionRole.ImagePullSecrets {
		if ref.Name == "" {
			errs = append(errs, field.Required(rolePath.Child("imagePullSecrets").Index(i).Child("name"),
				"name the Secret of type kubernetes.io/dockerconfigjson to pull with"))
		}
	}

	errs = append(errs, validateSidecars(spec, path.Child("sidecars"))...)
	return errs
}

func validateSelector(sel vesselv1.ProfileSelector, limits Limits, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	nsPath := path.Child("namespace")
	if sel.Namespace == "" {
		errs = append(errs, field.Required(nsPath, "every selector needs a namespace: a name, or a pattern with * and ?"))
	} else if bad := outside(sel.Namespace, namespaceChars); bad != "" {
		errs = append(errs, field.Invalid(nsPath, sel.Namespace, fmt.Sprintf(
			"contains %q, which no namespace has: namespaces are lowercase letters, digits and '-', and only * and ? are wildcards", bad)))
	}
	labelsPath := path.Child("labels")
	if n := len(sel.Labels); n > limits.MaxLabels {
		errs = append(errs, field.Invalid(labelsPath, n, fmt.Sprintf(
			"%d label pairs given, at most %d are allowed per selector: use several selectors", n, limits.MaxLabels)))
	}
	for k, v := range sel.Labels {
		keyPath := labelsPath.Key(k)
		switch bad := outside(k, labelKeyChars); {
		case k == "":
			errs = append(errs, field.Required(keyPath, "label keys must not be empty"))
		case bad != "":
			errs = append(errs, field.Invalid(keyPath, k, fmt.Sprintf(
				"key contains %q, which no label key has: only * and ? are wildcards", bad)))
		}
		if bad := outside(v, labelValueChars); bad != "" {
			errs = append(errs, field.Invalid(keyPath, v, fmt.Sprintf(
				"value contains %q, which no label value has: only * and ? are wildcards", bad)))
		}
	}
	return errs
}

func validateSidecars(spec *vesselv1.VesselProfileSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for i, c := range spec.Sidecars {
		p := path.Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), "sidecars need a name, unique in the pod"))
		} else {
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
			}
			if names[c.Name] {
				errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
			}
			names[c.Name] = true
		}
		if c.Image == "" {
			errs = append(errs, field.Required(p.Child("image"), "sidecars need an image"))
		}
		if c.RestartPolicy != nil && *c.RestartPolicy != "Always" {
			errs = append(errs, field.NotSupported(p.Child("restartPolicy"), *c.RestartPolicy, []string{"Always"}))
		}
	}
	return errs
}

// outside returns the first character of s, other than the wildcards, that
// is not in allowed, or "" when there is none.
func outside(s, allowed string) string {
	for _, r := range s {
		if r != '*' && r != '?' && !strings.ContainsRune(allowed, r) {
			return string(r)
		}
	}
	return ""
}

// ValidateProfileCreate checks a new profile against the cluster: its spec,
// that every subnet it lists exists, and the profile count limit. existing
// may include p itself (it is then ignored).
func ValidateProfileCreate(p *vesselv1.VesselProfile, existing []vesselv1.VesselProfile, subnets []vesselv1.Subnet, limits Limits) field.ErrorList {
	limits = limits.withDefaults()
	errs := ValidateProfileSpec(&p.Spec, limits, field.NewPath("spec"))

	known := make(map[string]bool, len(subnets))
	for i := range subnets {
		known[subnets[i].Name] = true
	}
	for i, name := range p.Spec.Subnets {
		if name != "" && !known[name] {
			errs = append(errs, field.Invalid(field.NewPath("spec", "subnets").Index(i), name, fmt.Sprintf(
				"no Subnet named %q exists: create it first, or list one of kubectl get subnets", name)))
		}
	}

	others := 0
	for i := range existing {
		if existing[i].Name != p.Name {
			others++
		}
	}
	if others >= limits.MaxProfiles {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "name"), fmt.Sprintf(
			"the cluster already has %d VesselProfiles, the limit: delete one, or raise the limit in the Vessel configuration", others)))
	}
	return errs
}

// ValidateProfileUpdate refuses any change of spec; metadata (labels,
// finalizers) may change.
func ValidateProfileUpdate(newP, oldP *vesselv1.VesselProfile) field.ErrorList {
	if apiequality.Semantic.DeepEqual(newP.Spec, oldP.Spec) {
		return nil
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec"),
		"spec is immutable: create a new VesselProfile with the new spec, then delete this one")}
}
