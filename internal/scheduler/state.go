package scheduler

import (
	"log/slog"
	"net/netip"
	"sync"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
)

// placed is what the scheduler remembers about one Sandbox: enough to count
// a host's used capacity and a subnet's used addresses.
type placed struct {
	host   string
	subnet string
	ip     netip.Addr
	size   vesselv1.SandboxSize
}

// state is the scheduler's view of every Sandbox: those in its cache plus
// those it has just created and its cache has not seen yet ("assumed", as
// kube-scheduler calls them). It is the only allocator of addresses, so an
// address is never handed out twice as long as the state holds every
// Sandbox before the first allocation (see rebuild) and one scheduler runs.
type state struct {
	mu        sync.Mutex
	alloc     *ipam.Allocator
	sandboxes map[string]placed // by Sandbox name
	log       *slog.Logger
}

func newState(log *slog.Logger) *state {
	return &state{alloc: ipam.New(), sandboxes: map[string]placed{}, log: log}
}

// observe records an existing Sandbox. It is idempotent; a Sandbox claiming
// an address another one holds is logged (it means two writers allocated)
// and still counted for capacity.
func (s *state) observe(sb *vesselv1.Sandbox) {
	ip, err := netip.ParseAddr(sb.Spec.Network.IP)
	if err != nil {
		s.log.Error("sandbox has no valid IP", "sandbox", sb.Name, "ip", sb.Spec.Network.IP)
	}
	p := placed{host: sb.Spec.Host, subnet: sb.Spec.Network.Subnet, ip: ip, size: sb.Spec.Size}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sandboxes[sb.Name]; ok {
		if old.ip == p.ip {
			s.sandboxes[sb.Name] = p
			return
		}
		s.releaseLocked(old)
	}
	if ip.IsValid() {
		if owner := s.ownerLocked(ip); owner != "" {
			s.log.Error("two sandboxes hold the same IP", "sandbox", sb.Name, "other", owner, "ip", ip)
		} else if err := s.alloc.Reserve(ip); err != nil {
			s.log.Error("reserve sandbox IP", "sandbox", sb.Name, "ip", ip, "err", err)
		}
	}
	s.sandboxes[sb.Name] = p
}

// forget drops a Sandbox that is gone and frees its address.
func (s *state) forget(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.sandboxes[name]; ok {
		delete(s.sandboxes, name)
		s.releaseLocked(p)
	}
}

func (s *state) releaseLocked(p placed) {
	if !p.ip.IsValid() {
		return
	}
	// Another record may share the address (see observe): keep it taken.
	for _, other := range s.sandboxes {
		if other.ip == p.ip {
			return
		}
	}
	s.alloc.Release(p.ip)
}

func (s *state) ownerLocked(ip netip.Addr) string {
	for name, p := range s.sandboxes {
		if p.ip == ip {
			return name
		}
	}
	return ""
}

func (s *state) get(name string) (placed, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.sandboxes[name]
	return p, ok
}

// onHost lists the names of the Sandboxes placed on host.
func (s *state) onHost(host string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, p := range s.sandboxes {
		if p.host == host {
			out = append(out, name)
		}
	}
	return out
}

// usage sums the sizes of the Sandboxes on each host, and counts them.
func (s *state) usageLocked() map[string]usage {
	out := map[string]usage{}
	for _, p := range s.sandboxes {
		u := out[p.host]
		u.milliCPU += p.size.MilliVCPU
		u.memoryMiB += p.size.MemoryMiB
		u.diskGiB += p.size.DiskGiB
		u.pods++
		out[p.host] = u
	}
	return out
}

// subnetCountsLocked counts the Sandboxes per subnet name.
func (s *state) subnetCountsLocked() map[string]int {
	out := map[string]int{}
	for _, p := range s.sandboxes {
		out[p.subnet]++
	}
	return out
}

// assumeLocked records a Sandbox the scheduler is about to create, with an
// address it allocated.
func (s *state) assumeLocked(name string, p placed) {
	s.sandboxes[name] = p
}
