// Package ipam hands out IPv4 addresses from Subnets. It is pure state: no
// client, no clock. The scheduler owns the only Allocator, fills it from the
// existing Sandboxes with Reserve before it allocates anything, and serializes
// calls itself (an Allocator is not safe for concurrent use).
package ipam

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Error categories; callers test them with errors.Is.
var (
	// ErrExhausted: the subnet has no free address left.
	ErrExhausted = errors.New("no free address")
	// ErrInUse: the address is already allocated or reserved.
	ErrInUse = errors.New("address already in use")
	// ErrInvalid: the subnet or address is not something Vessel can allocate from.
	ErrInvalid = errors.New("invalid subnet")
)

// Subnet is an IPv4 range and its gateway. The network address, the
// broadcast address and the gateway are never handed out.
type Subnet struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

// ParseSubnet parses a Subnet's spec.cidr and spec.gateway. The CIDR must be
// IPv4 without host bits and the gateway an address inside it.
func ParseSubnet(cidr, gateway string) (Subnet, error) {
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil || !prefix.Addr().Is4() {
		return Subnet{}, fmt.Errorf("parse cidr %q: %w: not an IPv4 CIDR", cidr, ErrInvalid)
	}
	if prefix.Masked() != prefix {
		return Subnet{}, fmt.Errorf("parse cidr %q: %w: host bits set", cidr, ErrInvalid)
	}
	gw, err := netip.ParseAddr(gateway)
	if err != nil || !prefix.Contains(gw) {
		return Subnet{}, fmt.Errorf("parse gateway %q of %s: %w: not an address inside the range", gateway, cidr, ErrInvalid)
	}
	return Subnet{Prefix: prefix, Gateway: gw}, nil
}

// first and last return the lowest and highest address handed out, and ok
// false when the range has none (/31 and /32 have neither a network nor a
// broadcast address in Vessel's sense and are refused).
func (s Subnet) bounds() (first, last netip.Addr, ok bool) {
	if !s.Prefix.IsValid() || !s.Prefix.Addr().Is4() || s.Prefix.Bits() > 30 {
		return netip.Addr{}, netip.Addr{}, false
	}
	network := s.Prefix.Masked().Addr()
	return network.Next(), broadcast(s.Prefix).Prev(), true
}

// Size is how many addresses the subnet can hand out in total.
func (s Subnet) Size() int {
	first, last, ok := s.bounds()
	if !ok {
		return 0
	}
	n := int(u32(last)-u32(first)) + 1
	if s.Prefix.Contains(s.Gateway) && s.Gateway.Compare(first) >= 0 && s.Gateway.Compare(last) <= 0 {
		n--
	}
	return n
}

func broadcast(p netip.Prefix) netip.Addr {
	a := u32(p.Masked().Addr()) | (1<<(32-p.Bits()) - 1)
	return fromU32(a)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Allocator tracks which addresses are taken. Addresses are global: Subnets
// never overlap (admission refuses it), so an address names its subnet.
type Allocator struct {
	used map[netip.Addr]struct{}
	// next is where the following search in a range starts: allocation is
	// next-fit, so a released address is reused only after the rest of the
	// range, which keeps a just-deleted pod's address (and Node name) out of
	// circulation as long as possible.
	next map[netip.Prefix]netip.Addr
}

// New returns an empty Allocator.
func New() *Allocator {
	return &Allocator{used: map[netip.Addr]struct{}{}, next: map[netip.Prefix]netip.Addr{}}
}

// Allocate takes a free address of s. It returns an error matching
// ErrExhausted when none is left and ErrInvalid when s has no usable range.
func (a *Allocator) Allocate(s Subnet) (netip.Addr, error) {
	first, last, ok := s.bounds()
	if !ok {
		return netip.Addr{}, fmt.Errorf("allocate from %s: %w: prefix must be IPv4 and /30 or larger", s.Prefix, ErrInvalid)
	}
	start := a.next[s.Prefix]
	if !start.IsValid() || start.Compare(first) < 0 || start.Compare(last) > 0 {
		start = first
	}
	addr := start
	for {
		if _, taken := a.used[addr]; !taken && addr != s.Gateway {
			a.used[addr] = struct{}{}
			if addr == last {
				a.next[s.Prefix] = first
			} else {
				a.next[s.Prefix] = addr.Next()
			}
			return addr, nil
		}
		if addr == last {
			addr = first
		} else {
			addr = addr.Next()
		}
		if addr == start {
			return netip.Addr{}, fmt.Errorf("allocate from %s: %w", s.Prefix, ErrExhausted)
		}
	}
}

// Reserve marks addr as taken, for addresses already held by existing
// Sandboxes. It returns an error matching ErrInUse when addr is taken.
func (a *Allocator) Reserve(addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("reserve %s: %w: not an IPv4 address", addr, ErrInvalid)
	}
	if _, taken := a.used[addr]; taken {
		return fmt.Errorf("reserve %s: %w", addr, ErrInUse)
	}
	a.used[addr] = struct{}{}
	return nil
}

// Release frees addr; releasing a free address does nothing.
func (a *Allocator) Release(addr netip.Addr) { delete(a.used, addr) }

// InUse reports whether addr is taken.
func (a *Allocator) InUse(addr netip.Addr) bool {
	_, taken := a.used[addr]
	return taken
}

// Used counts the taken addresses inside s (the gateway excluded).
func (a *Allocator) Used(s Subnet) int {
	n := 0
	for addr := range a.used {
		if s.Prefix.Contains(addr) && addr != s.Gateway && addr != s.Prefix.Masked().Addr() && addr != broadcast(s.Prefix) {
			n++
		}
	}
	return n
}

// Free counts the addresses of s still available.
func (a *Allocator) Free(s Subnet) int { return max(s.Size()-a.Used(s), 0) }

// MAC is the sandbox interface's hardware address for addr: locally
// administered unicast, 02:56 ("V") followed by the four bytes of the
// address, so it is stable across restarts and never needs storing apart
// from the IP.
func MAC(addr netip.Addr) net.HardwareAddr {
	b := addr.As4()
	return net.HardwareAddr{0x02, 0x56, b[0], b[1], b[2], b[3]}
}
