package v1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestAddToScheme(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"VesselProfile", "VesselProfileList", "Subnet", "SubnetList", "Sandbox", "SandboxList"} {
		obj, err := scheme.New(SchemeGroupVersion.WithKind(kind))
		if err != nil {
			t.Errorf("%s: %v", kind, err)
			continue
		}
		if obj.DeepCopyObject() == nil {
			t.Errorf("%s: DeepCopyObject returned nil", kind)
		}
	}
	if got := Resource("vesselprofiles").String(); got != "vesselprofiles.vessel.dev" {
		t.Errorf("Resource = %s", got)
	}
}
