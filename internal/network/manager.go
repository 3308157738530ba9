package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Manager owns the sandbox networking state of one host. It keeps no state
// in memory: everything is read back from the kernel and from NetnsDir, so a
// fresh Manager after an agent restart sees what the previous one built.
type Manager struct {
	netnsDir string
	log      *slog.Logger
}

// Config configures a Manager.
type Config struct {
	// NetnsDir holds one bind-mounted network namespace file per sandbox,
	// e.g. /run/vessel/netns. It is created if missing.
	NetnsDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// New returns a Manager. It touches nothing on the host until called.
func New(cfg Config) (*Manager, error) {
	if cfg.NetnsDir == "" || !filepath.IsAbs(cfg.NetnsDir) {
		return nil, fmt.Errorf("network manager: netns dir %q must be absolute: %w", cfg.NetnsDir, ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{netnsDir: cfg.NetnsDir, log: log}, nil
}

// NetnsPath is where the network namespace of sandbox id is bind-mounted.
func (m *Manager) NetnsPath(id string) string { return filepath.Join(m.netnsDir, id) }

// EnsureSubnet creates or repairs the subnet's bridge, gateway address,
// IPv4 forwarding and egress masquerade. Safe to call any number of times.
func (m *Manager) EnsureSubnet(ctx context.Context, sc SubnetConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if sc.Name == "" || !sc.CIDR.IsValid() || !sc.CIDR.Addr().Is4() || !sc.Gateway.Is4() || !sc.CIDR.Contains(sc.Gateway) {
		return fmt.Errorf("ensure subnet %q: need an IPv4 CIDR containing the gateway (got %v, %v): %w", sc.Name, sc.CIDR, sc.Gateway, ErrInvalidArgument)
	}
	name := BridgeName(sc.Name)
	br, err := netlink.LinkByName(name)
	if err != nil {
		if !isLinkNotFound(err) {
			return fmt.Errorf("ensure subnet %s: look up bridge %s: %w", sc.Name, name, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.Alias = "vessel-subnet:" + sc.Name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("ensure subnet %s: create bridge %s: %w", sc.Name, name, err)
		}
		if br, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("ensure subnet %s: look up bridge %s: %w", sc.Name, name, err)
		}
		m.log.InfoContext(ctx, "created bridge", "subnet", sc.Name, "bridge", name)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("ensure subnet %s: %s exists and is a %s, not a bridge", sc.Name, name, br.Type())
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: sc.Gateway.AsSlice(), Mask: net.CIDRMask(sc.CIDR.Bits(), 32)}}
	if err := netlink.AddrReplace(br, gw); err != nil {
		return fmt.Errorf("ensure subnet %s: gateway address on %s: %w", sc.Name, name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("ensure subnet %s: set %s up: %w", sc.Name, name, err)
	}
	if err := enableIPForward(); err != nil {
		return fmt.Errorf("ensure subnet %s: %w", sc.Name, err)
	}
	if err := ensureMasquerade(sc.Name, sc.CIDR); err != nil {
		return fmt.Errorf("ensure subnet %s: %w", sc.Name, err)
	}
	return nil
}

// RemoveSubnet deletes the subnet's bridge and NAT rule. Sandboxes still
// attached lose connectivity; callers detach them first. Idempotent.
func (m *Manager) RemoveSubnet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := deleteLinkByName(BridgeName(name)); err != nil {
		return fmt.Errorf("remove subnet %s: %w", name, err)
	}
	if err := removeMasquerade(name); err != nil {
		return fmt.Errorf("remove subnet %s: %w", name, err)
	}
	return nil
}

func enableIPForward() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

// Attach creates (or repairs) the sandbox's network namespace and its veth
// into the subnet's bridge, and returns the namespace path. Idempotent: after
// a crash half way it converges to the same end state.
func (m *Manager) Attach(ctx context.Context, sn SandboxNet) (string, error) {
	if err := m.validateAttach(ctx, sn); err != nil {
		return "", err
	}
	br, err := m.bridge(sn)
	if err != nil {
		return "", err
	}
	path := m.NetnsPath(sn.ID)
	if err := m.ensureNetns(path); err != nil {
		return "", fmt.Errorf("attach sandbox %s: %w", sn.ID, err)
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return "", fmt.Errorf("attach sandbox %s: open netns: %w", sn.ID, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("attach sandbox %s: netlink in netns: %w", sn.ID, err)
	}
	defer h.Close()

	hostName := HostVethName(sn.ID)
	host, herr := netlink.LinkByName(hostName)
	peer, perr := h.LinkByName("eth0")
	healthy := herr == nil && perr == nil && host.Type() == "veth" && peer.Type() == "veth" &&
		host.Attrs().MasterIndex == br.Attrs().Index
	if !healthy {
		// Partial state from an interrupted Attach: rebuilding the pair is
		// simpler and safer than patching whichever half survived.
		if err := deleteLinkByName(hostName); err != nil {
			return "", fmt.Errorf("attach sandbox %s: %w", sn.ID, err)
		}
		if perr == nil {
			if err := h.LinkDel(peer); err != nil {
				return "", fmt.Errorf("attach sandbox %s: delete stale eth0: %w", sn.ID, err)
			}
		}
		la := netlink.NewLinkAttrs()
		la.Name = hostName
		la.MTU = br.Attrs().MTU
		veth := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
		if err := netlink.LinkAdd(veth); err != nil {
			return "", fmt.Errorf("attach sandbox %s: create veth %s: %w", sn.ID, hostName, err)
		}
		if host, err = netlink.LinkByName(hostName); err != nil {
			return "", fmt.Errorf("attach sandbox %s: look up veth %s: %w", sn.ID, hostName, err)
		}
		m.log.InfoContext(ctx, "created veth", "sandbox", sn.ID, "device", hostName)
	}
	if err := netlink.LinkSetAlias(host, aliasPrefix+sn.ID); err != nil {
		return "", fmt.Errorf("attach sandbox %s: alias %s: %w", sn.ID, hostName, err)
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return "", fmt.Errorf("attach sandbox %s: enslave %s to %s: %w", sn.ID, hostName, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return "", fmt.Errorf("attach sandbox %s: set %s up: %w", sn.ID, hostName, err)
	}
	if err := configureInside(h, sn); err != nil {
		return "", fmt.Errorf("attach sandbox %s: %w", sn.ID, err)
	}
	return path, nil
}

func (m *Manager) validateAttach(ctx context.Context, sn SandboxNet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateID(sn.ID); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if !sn.IP.Is4() || !sn.Gateway.Is4() || sn.PrefixLen < 1 || sn.PrefixLen > 32 {
		return fmt.Errorf("attach sandbox %s: need IPv4 address, gateway and prefix length: %w", sn.ID, ErrInvalidArgument)
	}
	if sn.MAC != nil && len(sn.MAC) != 6 {
		return fmt.Errorf("attach sandbox %s: MAC %v: %w", sn.ID, sn.MAC, ErrInvalidArgument)
	}
	return nil
}

func (m *Manager) bridge(sn SandboxNet) (netlink.Link, error) {
	br, err := netlink.LinkByName(BridgeName(sn.Subnet))
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: bridge of subnet %s (EnsureSubnet not called?): %w", sn.ID, sn.Subnet, err)
	}
	return br, nil
}

// configureInside sets eth0's MAC and address, lo, and the default route
// inside the sandbox namespace, replacing whatever a previous Attach with
// other parameters left there.
func configureInside(h *netlink.Handle, sn SandboxNet) error {
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("look up eth0: %w", err)
	}
	if sn.MAC != nil && eth0.Attrs().HardwareAddr.String() != sn.MAC.String() {
		if err := h.LinkSetDown(eth0); err != nil {
			return fmt.Errorf("set eth0 down: %w", err)
		}
		if err := h.LinkSetHardwareAddr(eth0, sn.MAC); err != nil {
			return fmt.Errorf("set eth0 MAC %s: %w", sn.MAC, err)
		}
	}
	want := &net.IPNet{IP: sn.IP.AsSlice(), Mask: net.CIDRMask(sn.PrefixLen, 32)}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list eth0 addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			if err := h.AddrDel(eth0, &a); err != nil {
				return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
			}
		}
	}
	if err := h.AddrReplace(eth0, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("address %s on eth0: %w", want, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: sn.Gateway.AsSlice(), Dst: nil}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("default route via %s: %w", sn.Gateway, err)
	}
	return nil
}

// AttachTap creates (or keeps) a persistent tap device for a microVM sandbox
// on the subnet's bridge and returns its name. The VM's kernel owns the
// address, so unlike Attach no namespace is created. Idempotent.
func (m *Manager) AttachTap(ctx context.Context, sn SandboxNet) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := validateID(sn.ID); err != nil {
		return "", fmt.Errorf("attach tap: %w", err)
	}
	br, err := m.bridge(sn)
	if err != nil {
		return "", err
	}
	name := TapName(sn.ID)
	tap, err := netlink.LinkByName(name)
	if err != nil {
		if !isLinkNotFound(err) {
			return "", fmt.Errorf("attach tap sandbox %s: look up %s: %w", sn.ID, name, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.MTU = br.Attrs().MTU
		t := &netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_NO_PI}
		if err := netlink.LinkAdd(t); err != nil {
			return "", fmt.Errorf("attach tap sandbox %s: create %s: %w", sn.ID, name, err)
		}
		// LinkAdd keeps the tap's fds open so the device outlives them only
		// because it is persistent; close them so QEMU can attach.
		for _, f := range t.Fds {
			f.Close()
		}
		if tap, err = netlink.LinkByName(name); err != nil {
			return "", fmt.Errorf("attach tap sandbox %s: look up %s: %w", sn.ID, name, err)
		}
	}
	if err := netlink.LinkSetAlias(tap, aliasPrefix+sn.ID); err != nil {
		return "", fmt.Errorf("attach tap sandbox %s: alias: %w", sn.ID, err)
	}
	if err := netlink.LinkSetMaster(tap, br); err != nil {
		return "", fmt.Errorf("attach tap sandbox %s: enslave to bridge: %w", sn.ID, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return "", fmt.Errorf("attach tap sandbox %s: set up: %w", sn.ID, err)
	}
	return name, nil
}

// Detach removes the sandbox's devices and network namespace. Idempotent:
// detaching a sandbox that has nothing on the host is not an error.
func (m *Manager) Detach(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateID(id); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	for _, name := range []string{HostVethName(id), TapName(id)} {
		if err := deleteLinkByName(name); err != nil {
			return fmt.Errorf("detach sandbox %s: %w", id, err)
		}
	}
	path := m.NetnsPath(id)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach sandbox %s: unmount netns: %w", id, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach sandbox %s: remove netns file: %w", id, err)
	}
	m.log.InfoContext(ctx, "detached sandbox network", "sandbox", id)
	return nil
}

// List returns the IDs of sandboxes that have a netns file or a host device,
// sorted, so the host agent can garbage-collect those no Sandbox owns.
func (m *Manager) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	entries, err := os.ReadDir(m.netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list sandbox networks: %w", err)
	}
	for _, e := range entries {
		seen[e.Name()] = true
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list sandbox networks: links: %w", err)
	}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix); ok {
			seen[id] = true
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// ensureNetns makes path a bind mount of a network namespace, creating a
// new namespace unless a live one is already mounted there.
func (m *Manager) ensureNetns(path string) error {
	if err := m.ensureNetnsDir(); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err == nil && st.Type == unix.NSFS_MAGIC {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters a fresh namespace and is never unlocked, so the
		// Go runtime discards it when this goroutine returns instead of
		// reusing a thread that is no longer in the host namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount netns: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// ensureNetnsDir makes the netns directory a shared mount point, as
// iproute2 does for /run/netns: a namespace unmounted on Detach then also
// disappears from mount namespaces that copied the mount while it existed,
// instead of being kept alive by them.
func (m *Manager) ensureNetnsDir() error {
	if err := os.MkdirAll(m.netnsDir, 0o755); err != nil {
		return fmt.Errorf("create netns dir: %w", err)
	}
	err := unix.Mount("", m.netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		if err := unix.Mount(m.netnsDir, m.netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount netns dir: %w", err)
		}
		err = unix.Mount("", m.netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make netns dir shared: %w", err)
	}
	return nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func deleteLinkByName(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
