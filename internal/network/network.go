// Package network wires sandboxes into per-subnet Linux bridges on one host:
// a bridge per subnet with the gateway address, NAT for egress leaving the
// subnet, and per sandbox a named network namespace joined to the bridge by a
// veth pair (OCI runtime) or a tap device (microVM runtime).
//
// Everything is done through netlink and nftables directly; neither the ip nor
// the nft command is needed at run time. All operations are idempotent so the
// host agent can re-run them after a crash and converge.
package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
)

// SubnetConfig describes one subnet as it exists on this host.
type SubnetConfig struct {
	// Name is the Subnet object's name; the bridge name is derived from it.
	Name string
	// CIDR is the subnet's address range, e.g. 10.0.1.0/24.
	CIDR netip.Prefix
	// Gateway is assigned to the bridge and used as the sandboxes' default route.
	Gateway netip.Addr
}

// SandboxNet is one sandbox's interface in a subnet.
type SandboxNet struct {
	// ID names the sandbox; it names the netns file and is recorded on the
	// host-side device so List can find it again.
	ID string
	// Subnet is the SubnetConfig.Name the sandbox joins; EnsureSubnet must have
	// been called for it.
	Subnet    string
	IP        netip.Addr
	PrefixLen int
	// MAC is the sandbox interface's hardware address; nil lets the kernel pick.
	MAC     net.HardwareAddr
	Gateway netip.Addr
}

// ErrInvalidArgument is wrapped by errors caused by bad input rather than by
// host state; retrying such a call cannot succeed.
var ErrInvalidArgument = errors.New("invalid argument")

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

func validateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("sandbox id %q: %w", id, ErrInvalidArgument)
	}
	return nil
}

// Device names are at most 15 bytes (IFNAMSIZ-1). A truncated hash keeps them
// deterministic (so a restarted agent finds them) and collision-resistant
// enough for the few thousand devices one host carries.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// BridgeName is the bridge device of a subnet: "vsl-" + 10 hex digits.
func BridgeName(subnet string) string { return "vsl-" + shortHash(subnet) }

// HostVethName is the host end of a sandbox's veth pair.
func HostVethName(id string) string { return "vsv-" + shortHash(id) }

// TapName is the tap device of a microVM sandbox.
func TapName(id string) string { return "vst-" + shortHash(id) }

// aliasPrefix marks host-side devices owned by a sandbox. The device alias
// carries the sandbox ID because the hashed device name cannot be reversed.
const aliasPrefix = "vessel-sandbox:"
