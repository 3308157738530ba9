package crds

import (
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

func TestCRDs(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]apiextensionsv1.ResourceScope{
		"hosts.vessel.dev":          apiextensionsv1.ClusterScoped,
		"sandboxes.vessel.dev":      apiextensionsv1.NamespaceScoped,
		"subnets.vessel.dev":        apiextensionsv1.ClusterScoped,
		"vesselprofiles.vessel.dev": apiextensionsv1.ClusterScoped,
	}
	if len(crds) != len(want) {
		t.Fatalf("got %d CRDs, want %d", len(crds), len(want))
	}
	for _, crd := range crds {
		scope, ok := want[crd.Name]
		if !ok {
			t.Errorf("unexpected CRD %s", crd.Name)
			continue
		}
		if crd.Spec.Scope != scope {
			t.Errorf("%s: scope %s, want %s", crd.Name, crd.Spec.Scope, scope)
		}
		if crd.Spec.Group != vesselv1.GroupName {
			t.Errorf("%s: group %s", crd.Name, crd.Spec.Group)
		}
		if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1" || !crd.Spec.Versions[0].Storage {
			t.Errorf("%s: versions %+v, want one storage version v1", crd.Name, crd.Spec.Versions)
			continue
		}
		v := crd.Spec.Versions[0]
		if v.Subresources == nil || v.Subresources.Status == nil {
			t.Errorf("%s: no status subresource", crd.Name)
		}
		if len(v.AdditionalPrinterColumns) == 0 {
			t.Errorf("%s: no printer columns", crd.Name)
		}
	}
}

func TestProfileSpecImmutableRule(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range crds {
		if crd.Name != "vesselprofiles.vessel.dev" {
			continue
		}
		spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
		if len(spec.XValidations) != 1 || spec.XValidations[0].Rule != "self == oldSelf" {
			t.Fatalf("spec validations = %+v, want the immutability rule", spec.XValidations)
		}
		return
	}
	t.Fatal("vesselprofiles CRD missing")
}
