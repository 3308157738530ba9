package admission

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeReviews struct {
	got    *authorizationv1.SubjectAccessReview
	status authorizationv1.SubjectAccessReviewStatus
	err    error
}

func (f *fakeReviews) Create(_ context.Context, r *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	f.got = r
	if f.err != nil {
		return nil, f.err
	}
	out := r.DeepCopy()
	out.Status = f.status
	return out, nil
}

func TestSARAuthorizer(t *testing.T) {
	user := authenticationv1.UserInfo{Username: "alice", UID: "42", Groups: []string{"dev"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a"}}}

	reviews := &fakeReviews{status: authorizationv1.SubjectAccessReviewStatus{Allowed: true}}
	ok, err := NewSARAuthorizer(reviews).CanUse(context.Background(), user, "team")
	if err != nil || !ok {
		t.Fatalf("allowed: %v, %v", ok, err)
	}
	want := authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "use", Group: "vessel.dev", Resource: "vesselprofiles", Name: "team"},
		User:               "alice", UID: "42", Groups: []string{"dev"},
		Extra: map[string]authorizationv1.ExtraValue{"scopes": {"a"}},
	}
	if diff := cmp.Diff(want, reviews.got.Spec); diff != "" {
		t.Errorf("review spec (-want +got):\n%s", diff)
	}

	reviews.status = authorizationv1.SubjectAccessReviewStatus{Allowed: false, Reason: "no RBAC rule"}
	if ok, err := NewSARAuthorizer(reviews).CanUse(context.Background(), user, "team"); ok || err != nil {
		t.Errorf("denied: %v, %v", ok, err)
	}

	reviews.status = authorizationv1.SubjectAccessReviewStatus{EvaluationError: "webhook authorizer down"}
	if _, err := NewSARAuthorizer(reviews).CanUse(context.Background(), user, "team"); err == nil {
		t.Error("evaluation error treated as an answer")
	}

	reviews.err = errors.New("connection refused")
	if _, err := NewSARAuthorizer(reviews).CanUse(context.Background(), user, "team"); !errors.Is(err, reviews.err) {
		t.Errorf("err %v does not wrap the client error", err)
	}
}
