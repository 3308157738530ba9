package profile

import (
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/util/validation/field"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// Prefix lengths a Subnet may have: /30 is the smallest range with room for
// a gateway and one sandbox; /8 keeps allocation state small.
const (
	minPrefixBits = 8
	maxPrefixBits = 30
)

// ValidateSubnet checks a Subnet being created or updated: an IPv4 CIDR with
// no host bits, a gateway inside it that is neither the network nor the
// broadcast address, and no overlap with any other Subnet in existing
// (which may include s itself; it is ignored).
func ValidateSubnet(s *vesselv1.Subnet, existing []vesselv1.Subnet) field.ErrorList {
	specPath := field.NewPath("spec")
	cidrPath, gwPath := specPath.Child("cidr"), specPath.Child("gateway")

	prefix, err := netip.ParsePrefix(s.Spec.CIDR)
	if err != nil || !prefix.Addr().Is4() {
		return field.ErrorList{field.Invalid(cidrPath, s.Spec.CIDR, "must be an IPv4 range in CIDR notation, e.g. 10.0.1.0/24")}
	}
	var errs field.ErrorList
	if masked := prefix.Masked(); masked != prefix {
		errs = append(errs, field.Invalid(cidrPath, s.Spec.CIDR, fmt.Sprintf("has host bits set: use %s", masked)))
		prefix = masked
	}
	if b := prefix.Bits(); b < minPrefixBits || b > maxPrefixBits {
		errs = append(errs, field.Invalid(cidrPath, s.Spec.CIDR, fmt.Sprintf(
			"prefix length /%d is out of range: use /%d (largest) to /%d (smallest)", b, minPrefixBits, maxPrefixBits)))
	}

	errs = append(errs, validateGateway(s.Spec.Gateway, prefix, gwPath)...)

	for i := range existing {
		other := &existing[i]
		if other.Name == s.Name {
			continue
		}
		otherPrefix, err := netip.ParsePrefix(other.Spec.CIDR)
		if err != nil {
			continue // invalid Subnets were refused when written; nothing to overlap
		}
		if prefix.Overlaps(otherPrefix.Masked()) {
			errs = append(errs, field.Invalid(cidrPath, s.Spec.CIDR, fmt.Sprintf(
				"overlaps Subnet %q (%s): choose a range outside it", other.Name, other.Spec.CIDR)))
		}
	}
	return errs
}

func validateGateway(gateway string, prefix netip.Prefix, path *field.Path) field.ErrorList {
	gw, err := netip.ParseAddr(gateway)
	if err != nil || !gw.Is4() {
		return field.ErrorList{field.Invalid(path, gateway, fmt.Sprintf(
			"must be an IPv4 address inside %s, e.g. %s", prefix, prefix.Addr().Next()))}
	}
	if !prefix.Contains(gw) {
		return field.ErrorList{field.Invalid(path, gateway, fmt.Sprintf(
			"is outside %s: use an address inside it, e.g. %s", prefix, prefix.Addr().Next()))}
	}
	switch gw {
	case prefix.Addr():
		return field.ErrorList{field.Invalid(path, gateway, fmt.Sprintf(
			"is the network address of %s: use a host address, e.g. %s", prefix, prefix.Addr().Next()))}
	case broadcast(prefix):
		return field.ErrorList{field.Invalid(path, gateway, fmt.Sprintf(
			"is the broadcast address of %s: use a host address, e.g. %s", prefix, prefix.Addr().Next()))}
	}
	return nil
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
