package profile

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"prod", "prod", true},
		{"prod", "prod1", false},
		{"prod", "pro", false},
		{"*", "", true},
		{"*", "anything", true},
		{"prod-*", "prod-", true},
		{"prod-*", "prod-eu", true},
		{"prod-*", "prod", false},
		{"*-prod", "eu-prod", true},
		{"*-prod", "eu-prod-1", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a*b*c", "acb", false},
		{"?", "", false},
		{"?", "a", true},
		{"?", "ab", false},
		{"team-??", "team-01", true},
		{"team-??", "team-1", false},
		{"*?", "", false},
		{"*?", "x", true},
		{"?*?", "ab", true},
		{"?", "é", true},
		{"**", "x", true},
		{"", "", true},
		{"", "a", false},
		// Regular-expression syntax is literal.
		{"prod.*", "prod-eu", false},
		{"prod.*", "prod.eu", true},
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
		{"a+", "aa", false},
		{"^a$", "a", false},
		// Backtracking: the first "*" must give back what it swallowed.
		{"*aab", "aaab", true},
		{"*a*a*a*a*a*b", strings.Repeat("a", 40), false},
	} {
		if got := MatchPattern(tc.pattern, tc.s); got != tc.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func profile(name string, phase vesselv1.ProfilePhase, selectors ...vesselv1.ProfileSelector) vesselv1.VesselProfile {
	return vesselv1.VesselProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       vesselv1.VesselProfileSpec{Selectors: selectors, Subnets: []string{"a"}},
		Status:     vesselv1.VesselProfileStatus{Phase: phase},
	}
}

func sel(ns string, labels ...string) vesselv1.ProfileSelector {
	s := vesselv1.ProfileSelector{Namespace: ns}
	for i := 0; i < len(labels); i += 2 {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[labels[i]] = labels[i+1]
	}
	return s
}

func pod(ns string, labels ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{}}}
	for i := 0; i < len(labels); i += 2 {
		p.Labels[labels[i]] = labels[i+1]
	}
	return p
}

func TestSelectorMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  vesselv1.ProfileSelector
		pod  *corev1.Pod
		want bool
	}{
		{"namespace only", sel("default"), pod("default", "app", "x"), true},
		{"other namespace", sel("default"), pod("prod"), false},
		{"all labels present", sel("ns", "app", "web", "tier", "front"), pod("ns", "app", "web", "tier", "front", "x", "y"), true},
		{"one label missing", sel("ns", "app", "web", "tier", "front"), pod("ns", "app", "web"), false},
		{"label value differs", sel("ns", "app", "web"), pod("ns", "app", "db"), false},
		{"value pattern", sel("ns", "app", "web-*"), pod("ns", "app", "web-eu"), true},
		{"key pattern", sel("ns", "team.example.com/*", "?"), pod("ns", "team.example.com/a", "b"), true},
		{"key pattern needs a pair matching both", sel("ns", "env*", "prod"), pod("ns", "env", "dev", "envx", "prod"), true},
		{"key and value must match on the same label", sel("ns", "env*", "prod"), pod("ns", "env", "dev", "other", "prod"), false},
		{"wildcard namespace", sel("team-*"), pod("team-blue"), true},
		{"empty value pattern matches empty value", sel("ns", "flag", ""), pod("ns", "flag", ""), true},
	} {
		if got := SelectorMatches(tc.sel, tc.pod.Namespace, tc.pod.Labels); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	profiles := []vesselv1.VesselProfile{
		profile("zeta", vesselv1.ProfileActive, sel("default")),
		profile("alpha", vesselv1.ProfileActive, sel("other"), sel("default", "app", "web")),
		profile("beta", vesselv1.ProfileActive, sel("*")),
		profile("creating", vesselv1.ProfileCreating, sel("*")),
		profile("aaa-failed", vesselv1.ProfileCreateFailed, sel("*")),
	}
	deleting := profile("aaa-deleting", vesselv1.ProfileActive, sel("*"))
	deleting.DeletionTimestamp = &metav1.Time{}
	profiles = append(profiles, deleting)

	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		want    string
		wantErr string
	}{
		{name: "first by name wins", pod: pod("default", "app", "web"), want: "alpha"},
		{name: "catch-all when no earlier name matches", pod: pod("default"), want: "beta"},
		{name: "label picks a later profile", pod: pod("default", "app", "web", vesselv1.LabelProfile, "zeta"), want: "zeta"},
		{name: "label picks a profile the pod does not match", pod: pod("prod", vesselv1.LabelProfile, "zeta"),
			wantErr: `label vessel.dev/profile names VesselProfile "zeta", but none of its selectors matches namespace "prod" and the pod's labels`},
		{name: "label names a missing profile", pod: pod("default", vesselv1.LabelProfile, "nope"),
			wantErr: `label vessel.dev/profile names VesselProfile "nope", which does not exist`},
		{name: "label names a creating profile", pod: pod("default", vesselv1.LabelProfile, "creating"),
			wantErr: `VesselProfile "creating", which is Creating, not Active`},
		{name: "label names a deleted profile", pod: pod("default", vesselv1.LabelProfile, "aaa-deleting"),
			wantErr: `which is being deleted, not Active`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Match(profiles, tc.pod)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrRequestedProfile) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrRequestedProfile containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got == nil || got.Name != tc.want {
				t.Fatalf("Match = %v, %v; want %s", got, err, tc.want)
			}
		})
	}

	if got, err := Match(profiles[:1], pod("prod")); got != nil || err != nil {
		t.Errorf("no match: got %v, %v", got, err)
	}
	if got, err := Match(nil, pod("prod")); got != nil || err != nil {
		t.Errorf("no profiles: got %v, %v", got, err)
	}
}

// errorsFor renders an ErrorList one error a line, so tests can look for
// fields and messages.
func errorsFor(errs field.ErrorList) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}

func TestValidateProfileSpec(t *testing.T) {
	valid := func() vesselv1.VesselProfileSpec {
		return vesselv1.VesselProfileSpec{Selectors: []vesselv1.ProfileSelector{sel("default", "app", "web")}, Subnets: []string{"a"}}
	}
	six := func() map[string]string {
		m := map[string]string{}
		for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
			m[k] = "x"
		}
		return m
	}
	always, never := corev1.ContainerRestartPolicyAlways, corev1.ContainerRestartPolicy("Never")
	for _, tc := range []struct {
		name   string
		mutate func(*vesselv1.VesselProfileSpec)
		want   []string // substrings, each of which must appear; nil means valid
	}{
		{"valid", func(*vesselv1.VesselProfileSpec) {}, nil},
		{"five selectors of five labels", func(s *vesselv1.VesselProfileSpec) {
			s.Selectors = nil
			for range 5 {
				m := six()
				delete(m, "f")
				s.Selectors = append(s.Selectors, vesselv1.ProfileSelector{Namespace: "*", Labels: m})
			}
		}, nil},
		{"no selectors", func(s *vesselv1.VesselProfileSpec) { s.Selectors = nil },
			[]string{"spec.selectors: Required value: at least one selector is required"}},
		{"six selectors", func(s *vesselv1.VesselProfileSpec) {
			for range 5 {
				s.Selectors = append(s.Selectors, sel("x"))
			}
		}, []string{"spec.selectors: Invalid value: 6: 6 selectors given, at most 5 are allowed: split them over several profiles"}},
		{"namespace missing", func(s *vesselv1.VesselProfileSpec) { s.Selectors[0].Namespace = "" },
			[]string{"spec.selectors[0].namespace: Required value: every selector needs a namespace"}},
		{"regex namespace", func(s *vesselv1.VesselProfileSpec) { s.Selectors[0].Namespace = "prod-.+" },
			[]string{`spec.selectors[0].namespace: Invalid value: "prod-.+": contains "."`}},
		{"six labels", func(s *vesselv1.VesselProfileSpec) { s.Selectors[0].Labels = six() },
			[]string{"spec.selectors[0].labels: Invalid value: 6: 6 label pairs given, at most 5 are allowed per selector"}},
		{"bad label value", func(s *vesselv1.VesselProfileSpec) { s.Selectors[0].Labels = map[string]string{"app": "a|b"} },
			[]string{`spec.selectors[0].labels[app]: Invalid value: "a|b": value contains "|"`}},
		{"no subnets", func(s *vesselv1.VesselProfileSpec) { s.Subnets = nil },
			[]string{"spec.subnets: Required value: at least one subnet is required"}},
		{"duplicate subnet", func(s *vesselv1.VesselProfileSpec) { s.Subnets = []string{"a", "a"} },
			[]string{`spec.subnets[1]: Duplicate value: "a"`}},
		{"pull secret without name", func(s *vesselv1.VesselProfileSpec) {
			s.PodExecutionRole.ImagePullSecrets = []corev1.LocalObjectReference{{}}
		}, []string{"spec.podExecutionRole.imagePullSecrets[0].name: Required value"}},
		{"sidecars", func(s *vesselv1.VesselProfileSpec) {
			s.Sidecars = []corev1.Container{
				{Name: "log", Image: "fluent-bit", RestartPolicy: &always},
				{Name: "log", Image: "x"},
				{Name: "Bad_Name"},
				{Name: "ok", Image: "x", RestartPolicy: &never},
			}
		}, []string{
			`spec.sidecars[1].name: Duplicate value: "log"`,
			`spec.sidecars[2].name: Invalid value: "Bad_Name"`,
			"spec.sidecars[2].image: Required value",
			`spec.sidecars[3].restartPolicy: Unsupported value: "Never"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid()
			tc.mutate(&spec)
			errs := ValidateProfileSpec(&spec, Limits{}, field.NewPath("spec"))
			got := errorsFor(errs)
			if tc.want == nil && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", got)
			}
			if len(errs) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%s", len(errs), len(tc.want), got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
		})
	}
}

func TestValidateProfileLimitsConfigurable(t *testing.T) {
	spec := vesselv1.VesselProfileSpec{Selectors: []vesselv1.ProfileSelector{sel("a"), sel("b")}, Subnets: []string{"s"}}
	errs := ValidateProfileSpec(&spec, Limits{MaxSelectors: 1}, field.NewPath("spec"))
	if !strings.Contains(errorsFor(errs), "2 selectors given, at most 1") {
		t.Errorf("custom limit not applied: %v", errs)
	}
}

func subnet(name, cidr, gw string) vesselv1.Subnet {
	return vesselv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: vesselv1.SubnetSpec{CIDR: cidr, Gateway: gw}}
}

func TestValidateProfileCreate(t *testing.T) {
	subnets := []vesselv1.Subnet{subnet("a", "10.0.1.0/24", "10.0.1.1")}
	p := profile("new", "", sel("default"))
	p.Spec.Subnets = []string{"a", "missing"}
	errs := ValidateProfileCreate(&p, nil, subnets, Limits{})
	want := `spec.subnets[1]: Invalid value: "missing": no Subnet named "missing" exists: create it first`
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), want) {
		t.Errorf("got %v, want one error %q", errs, want)
	}

	p.Spec.Subnets = []string{"a"}
	var existing []vesselv1.VesselProfile
	for _, n := range []string{"p1", "p2", "p3"} {
		existing = append(existing, profile(n, vesselv1.ProfileActive, sel("x")))
	}
	if errs := ValidateProfileCreate(&p, existing, subnets, Limits{MaxProfiles: 4}); len(errs) != 0 {
		t.Errorf("under the limit: %v", errs)
	}
	// The object being created may already show up in a stale list.
	withSelf := append(existing[:3:3], p)
	if errs := ValidateProfileCreate(&p, withSelf, subnets, Limits{MaxProfiles: 4}); len(errs) != 0 {
		t.Errorf("self counted against the limit: %v", errs)
	}
	errs = ValidateProfileCreate(&p, existing, subnets, Limits{MaxProfiles: 3})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "the cluster already has 3 VesselProfiles, the limit") {
		t.Errorf("over the limit: %v", errs)
	}
}

func TestValidateProfileUpdate(t *testing.T) {
	old := profile("p", vesselv1.ProfileActive, sel("default"))
	same := *old.DeepCopy()
	same.Labels = map[string]string{"x": "y"}
	same.Status.Phase = vesselv1.ProfileDeleting
	if errs := ValidateProfileUpdate(&same, &old); len(errs) != 0 {
		t.Errorf("metadata/status change refused: %v", errs)
	}
	changed := *old.DeepCopy()
	changed.Spec.Subnets = append(changed.Spec.Subnets, "b")
	errs := ValidateProfileUpdate(&changed, &old)
	if len(errs) != 1 || errs[0].Error() != "spec: Forbidden: spec is immutable: create a new VesselProfile with the new spec, then delete this one" {
		t.Errorf("spec change: %v", errs)
	}
}

func TestValidateSubnet(t *testing.T) {
	existing := []vesselv1.Subnet{
		subnet("a", "10.0.1.0/24", "10.0.1.1"),
		subnet("big", "10.1.0.0/16", "10.1.0.1"),
	}
	for _, tc := range []struct {
		name     string
		s        vesselv1.Subnet
		want     string // "" means valid
		wantMore int    // extra errors expected beyond the first
	}{
		{"valid", subnet("b", "10.0.2.0/24", "10.0.2.1"), "", 0},
		{"update of itself does not overlap itself", subnet("a", "10.0.1.0/24", "10.0.1.254"), "", 0},
		{"last host is a fine gateway", subnet("b", "10.0.2.0/24", "10.0.2.254"), "", 0},
		{"not a CIDR", subnet("b", "10.0.2.0", "10.0.2.1"), `spec.cidr: Invalid value: "10.0.2.0": must be an IPv4 range in CIDR notation`, 0},
		{"IPv6", subnet("b", "fd00::/64", "fd00::1"), "must be an IPv4 range", 0},
		{"host bits", subnet("b", "10.0.2.5/24", "10.0.2.1"), `has host bits set: use 10.0.2.0/24`, 0},
		{"too small", subnet("b", "10.0.2.0/31", "10.0.2.1"), "prefix length /31 is out of range", 1},
		{"too big", subnet("b", "8.0.0.0/7", "8.0.0.1"), "prefix length /7 is out of range", 0},
		{"gateway outside", subnet("b", "10.0.2.0/24", "10.0.3.1"), `spec.gateway: Invalid value: "10.0.3.1": is outside 10.0.2.0/24: use an address inside it, e.g. 10.0.2.1`, 0},
		{"gateway network", subnet("b", "10.0.2.0/24", "10.0.2.0"), "is the network address of 10.0.2.0/24", 0},
		{"gateway broadcast", subnet("b", "10.0.2.0/24", "10.0.2.255"), "is the broadcast address of 10.0.2.0/24", 0},
		{"gateway broadcast /30", subnet("b", "10.0.2.0/30", "10.0.2.3"), "is the broadcast address of 10.0.2.0/30", 0},
		{"gateway garbage", subnet("b", "10.0.2.0/24", "gw"), `spec.gateway: Invalid value: "gw": must be an IPv4 address`, 0},
		{"overlap contained", subnet("b", "10.0.1.128/25", "10.0.1.129"), `overlaps Subnet "a" (10.0.1.0/24): choose a range outside it`, 0},
		{"overlap containing", subnet("b", "10.0.0.0/8", "10.0.0.1"), `overlaps Subnet "a"`, 1},
		{"overlap equal", subnet("b", "10.1.0.0/16", "10.1.0.2"), `overlaps Subnet "big"`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateSubnet(&tc.s, existing)
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("unexpected: %v", errs)
				}
				return
			}
			if len(errs) != 1+tc.wantMore || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("got:\n%s\nwant %d errors, the first containing %q", errorsFor(errs), 1+tc.wantMore, tc.want)
			}
		})
	}
}

func FuzzMatchPattern(f *testing.F) {
	f.Add("a*b?c", "axxbyc")
	f.Add("*", "")
	f.Add("?*?*", "ab")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		got := MatchPattern(pattern, s)
		// A pattern without wildcards is plain equality.
		if !strings.ContainsAny(pattern, "*?") && got != (pattern == s) {
			t.Fatalf("literal %q vs %q: %v", pattern, s, got)
		}
		// Every string matches itself with any "?" or "*" turned into "*".
		if !MatchPattern(strings.NewReplacer("?", "*").Replace(s), s) {
			t.Fatalf("%q does not match itself", s)
		}
	})
}
