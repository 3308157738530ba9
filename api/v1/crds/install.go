package crds

import (
	"context"
	"fmt"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// Install creates the embedded CRDs, or updates them to the embedded spec
// where they exist, and waits until every one is Established. It is
// idempotent and safe to call from several processes at once.
func Install(ctx context.Context, cfg *rest.Config) error {
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("install CRDs: %w", err)
	}
	crds, err := CRDs()
	if err != nil {
		return err
	}
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			existing, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				_, err = api.Create(ctx, crd, metav1.CreateOptions{})
			case err == nil:
				crd.ResourceVersion = existing.ResourceVersion
				_, err = api.Update(ctx, crd, metav1.UpdateOptions{})
			}
			if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
				return false, nil // someone else wrote it meanwhile: read again
			}
			return err == nil, err
		})
		if err != nil {
			return fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("wait for CRD %s to be established: %w", crd.Name, err)
		}
	}
	// Established does not mean discoverable yet; clients resolving kinds through discovery
	// (controller-runtime's REST mapper) would fail with "no matches for kind" in between.
	gv := crds[0].Spec.Group + "/" + crds[0].Spec.Versions[0].Name
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := client.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			return false, nil
		}
		kinds := 0
		for _, r := range list.APIResources {
			if !strings.Contains(r.Name, "/") { // skip subresources such as sandboxes/status
				kinds++
			}
		}
		return kinds >= len(crds), nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s in API discovery: %w", gv, err)
	}
	return nil
}
