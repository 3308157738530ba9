package controller

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// DefaultName names the Subnet and the VesselProfile that `vessel up` creates.
const DefaultName = "default"

// defaultSubnetCandidates are tried in order; the first that overlaps none of the host's routes
// and none of the excluded ranges (the Service range) becomes the default Subnet.
var defaultSubnetCandidates = []string{"10.42.0.0/16", "10.44.0.0/16", "10.45.0.0/16", "172.28.0.0/16", "192.168.224.0/20"}

// EnsureDefaults creates, when missing, the Subnet and VesselProfile `default` that run every pod
// of namespace `default` on Vessel, and lets every authenticated user launch through that profile
// (anyone who may create pods in `default` may run them there). Existing objects are left as they
// are, so an admin's changes survive restarts.
func EnsureDefaults(ctx context.Context, c client.Client, exclude ...netip.Prefix) error {
	var subnet vesselv1.Subnet
	err := c.Get(ctx, client.ObjectKey{Name: DefaultName}, &subnet)
	if apierrors.IsNotFound(err) {
		cidr, err := pickDefaultCIDR(hostRoutes(), exclude)
		if err != nil {
			return err
		}
		subnet = vesselv1.Subnet{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultName},
			Spec: vesselv1.SubnetSpec{
				CIDR:    cidr.String(),
				Gateway: cidr.Addr().Next().String(),
				Zone:    "local",
				VPC:     DefaultName,
			},
		}
		if err := c.Create(ctx, &subnet); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create default subnet %s: %w", cidr, err)
		}
	} else if err != nil {
		return fmt.Errorf("get default subnet: %w", err)
	}

	prof := &vesselv1.VesselProfile{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultName},
		Spec: vesselv1.VesselProfileSpec{
			Selectors: []vesselv1.ProfileSelector{{Namespace: "default"}},
			Subnets:   []string{DefaultName},
		},
	}
	if err := c.Create(ctx, prof); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create default profile: %w", err)
	}

	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "vessel:profile:default:use"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{vesselv1.GroupName}, Resources: []string{"vesselprofiles"},
			ResourceNames: []string{DefaultName}, Verbs: []string{vesselv1.VerbUse},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vessel:profile:default:use"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:authenticated"}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", o.GetName(), err)
		}
	}
	return nil
}

func pickDefaultCIDR(routes, exclude []netip.Prefix) (netip.Prefix, error) {
	taken := append(routes, exclude...)
next:
	for _, s := range defaultSubnetCandidates {
		cand := netip.MustParsePrefix(s)
		for _, r := range taken {
			if r.Bits() > 0 && r.Overlaps(cand) {
				continue next
			}
		}
		return cand, nil
	}
	return netip.Prefix{}, fmt.Errorf("every candidate for the default subnet (%s) overlaps a route of this host: create a Subnet named %q yourself", strings.Join(defaultSubnetCandidates, ", "), DefaultName)
}

// hostRoutes reads the IPv4 destinations of the host's routing table, skipping the default
// route (which overlaps everything) and Vessel's own bridges (which carry the Subnets).
func hostRoutes() []netip.Prefix {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Prefix
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || strings.HasPrefix(fields[0], "vsl") {
			continue
		}
		dst, err1 := hex.DecodeString(fields[1])
		mask, err2 := hex.DecodeString(fields[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		// /proc/net/route prints addresses in host (little-endian) byte order.
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(dst))
		ones := 0
		for m := binary.LittleEndian.Uint32(mask); m != 0; m >>= 1 {
			ones += int(m & 1)
		}
		if ones == 0 {
			continue
		}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), ones).Masked())
	}
	return out
}
