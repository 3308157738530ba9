package admission

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// SubjectAccessReviewCreator creates SubjectAccessReviews. client-go's
// clientset.AuthorizationV1().SubjectAccessReviews() satisfies it.
type SubjectAccessReviewCreator interface {
	Create(ctx context.Context, review *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

// SARAuthorizer is the production Authorizer: it asks the apiserver, with a
// SubjectAccessReview, whether the user holds verb "use" on
// vesselprofiles.vessel.dev/<profile>.
type SARAuthorizer struct {
	reviews SubjectAccessReviewCreator
}

// NewSARAuthorizer returns an Authorizer backed by SubjectAccessReviews.
func NewSARAuthorizer(reviews SubjectAccessReviewCreator) *SARAuthorizer {
	return &SARAuthorizer{reviews: reviews}
}

// CanUse implements Authorizer.
func (a *SARAuthorizer) CanUse(ctx context.Context, user authenticationv1.UserInfo, profile string) (bool, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb:     vesselv1.VerbUse,
				Group:    vesselv1.GroupName,
				Resource: "vesselprofiles",
				Name:     profile,
			},
			User:   user.Username,
			UID:    user.UID,
			Groups: user.Groups,
			Extra:  extra,
		},
	}
	got, err := a.reviews.Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create SubjectAccessReview for %s: %w", user.Username, err)
	}
	if got.Status.EvaluationError != "" && !got.Status.Allowed && !got.Status.Denied {
		// The authorizer chain could not decide (e.g. a webhook
		// authorizer failed): unknown, not "no".
		return false, fmt.Errorf("SubjectAccessReview for %s: %s", user.Username, got.Status.EvaluationError)
	}
	return got.Status.Allowed, nil
}
