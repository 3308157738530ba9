package crds

import (
	"context"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
)

// The apiserver refuses a CRD whose CEL rules are estimated too costly, and
// "self == oldSelf" over a spec holding whole containers is the kind of rule
// that can be. Run the apiserver's own validation so a bad CRD fails here
// rather than when the control plane installs it.
func TestCRDsPassAPIServerValidation(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range crds {
		internal := &apiextensions.CustomResourceDefinition{}
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, internal, nil); err != nil {
			t.Fatalf("convert %s: %v", crd.Name, err)
		}
		// The apiserver's create strategy fills this in before validating.
		internal.Status.StoredVersions = []string{"v1"}
		if errs := validation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
			t.Errorf("%s rejected by the apiserver's validation: %v", crd.Name, errs.ToAggregate())
		}
	}
}
