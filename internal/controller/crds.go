package controller

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/api/v1/crds"
)

// InstallCRDs creates or updates Vessel's CustomResourceDefinitions and waits until each is
// Established. It is idempotent and safe to run against any cluster.
func InstallCRDs(ctx context.Context, cfg *rest.Config) error {
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("install CRDs: %w", err)
	}
	defs, err := crds.CRDs()
	if err != nil {
		return err
	}
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	start := time.Now()
	for _, crd := range defs {
		existing, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, crd, metav1.CreateOptions{})
		case err == nil:
			crd.ResourceVersion = existing.ResourceVersion
			_, err = api.Update(ctx, crd, metav1.UpdateOptions{})
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range defs {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
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
	slog.Debug("CRDs established", "elapsed", time.Since(start))
	// Established does not mean discoverable yet; clients resolving kinds through discovery
	// (controller-runtime's REST mapper) would fail with "no matches for kind" in between.
	gv := vesselv1.SchemeGroupVersion.String()
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
		return kinds >= len(defs), nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s in API discovery: %w", gv, err)
	}
	return nil
}
