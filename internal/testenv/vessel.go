package testenv

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// subnetSeq hands each test its own /24 inside 10.200.0.0/16, so Subnets never overlap.
var subnetSeq atomic.Int32

// Subnet creates a Subnet with a fresh /24 and deletes it when t ends.
func (e *Env) Subnet(t testing.TB) *vesselv1.Subnet {
	t.Helper()
	n := subnetSeq.Add(1)
	cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(n), 0}), 24)
	s := &vesselv1.Subnet{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano()%100000, n)},
		Spec:       vesselv1.SubnetSpec{CIDR: cidr.String(), Gateway: cidr.Addr().Next().String(), Zone: "e2e", VPC: "e2e"},
	}
	e.create(t, s)
	return s
}

// Profile creates a VesselProfile selecting namespace ns through subnets, waits until it is
// Active and deletes it when t ends.
func (e *Env) Profile(t testing.TB, ns string, subnets ...string) *vesselv1.VesselProfile {
	t.Helper()
	p := &vesselv1.VesselProfile{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"},
		Spec: vesselv1.VesselProfileSpec{
			Selectors: []vesselv1.ProfileSelector{{Namespace: ns}},
			Subnets:   subnets,
		},
	}
	e.create(t, p)
	Eventually(t, 30*time.Second, "profile "+p.Name+" Active", func(ctx context.Context) error {
		if err := e.Ctrl.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Phase != vesselv1.ProfileActive {
			return fmt.Errorf("phase %q, message %q", p.Status.Phase, p.Status.Message)
		}
		return nil
	})
	return p
}

// AllowUse grants RBAC verb use on profile to subject (a User or Group), until t ends.
func (e *Env) AllowUse(t testing.TB, profile string, subject rbacv1.Subject) {
	t.Helper()
	name := fmt.Sprintf("e2e-use-%s-%d", profile, subnetSeq.Add(1))
	e.create(t, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{vesselv1.GroupName}, Resources: []string{"vesselprofiles"},
			ResourceNames: []string{profile}, Verbs: []string{vesselv1.VerbUse}}},
	})
	subject.APIGroup = rbacv1.GroupName
	if subject.Kind == rbacv1.ServiceAccountKind {
		subject.APIGroup = ""
	}
	e.create(t, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	})
}

// create creates o and deletes it when t ends.
func (e *Env) create(t testing.TB, o client.Object) {
	t.Helper()
	if err := e.Ctrl.Create(context.Background(), o); err != nil {
		t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
	t.Cleanup(func() { _ = e.Ctrl.Delete(context.Background(), o) })
}
