package network

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestDeviceNames(t *testing.T) {
	for _, name := range []string{BridgeName("a"), HostVethName("a-very-long-sandbox-id-0123456789abcdef"), TapName("x")} {
		if len(name) > 15 {
			t.Errorf("%q is longer than IFNAMSIZ-1", name)
		}
	}
	if BridgeName("subnet-a") != BridgeName("subnet-a") || BridgeName("subnet-a") == BridgeName("subnet-b") {
		t.Error("bridge names must be deterministic and distinct per subnet")
	}
	if HostVethName("s1") == TapName("s1") {
		t.Error("veth and tap of one sandbox must not share a name")
	}
}

func TestMasqueradeComment(t *testing.T) {
	c := ruleComment("subnet-a", netip.MustParsePrefix("10.0.1.0/24"))
	if name, ok := subnetOfComment(c); !ok || name != "subnet-a" {
		t.Errorf("subnetOfComment(%q) = %q, %v", c, name, ok)
	}
	if _, ok := subnetOfComment("someone else's"); ok {
		t.Error("foreign comment must not parse as a subnet")
	}
}

// testEnv is a Manager with its own netns dir and a subnet, torn down when
// the test ends however it ends.
type testEnv struct {
	m      *Manager
	subnet SubnetConfig
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: run the suite as root (see README)")
	}
}

func newTestEnv(t *testing.T, subnetName, cidr string) *testEnv {
	t.Helper()
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "netns")
	m, err := New(Config{NetnsDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(cidr)
	sc := SubnetConfig{Name: subnetName, CIDR: p, Gateway: p.Addr().Next()}
	t.Cleanup(func() {
		ctx := context.Background()
		ids, _ := m.List(ctx)
		for _, id := range ids {
			if err := m.Detach(ctx, id); err != nil {
				t.Errorf("cleanup detach %s: %v", id, err)
			}
		}
		if err := m.RemoveSubnet(ctx, subnetName); err != nil {
			t.Errorf("cleanup subnet: %v", err)
		}
		unix.Unmount(dir, unix.MNT_DETACH)
	})
	if err := m.EnsureSubnet(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	return &testEnv{m: m, subnet: sc}
}

func (e *testEnv) sandbox(id string, host byte) SandboxNet {
	ip := e.subnet.CIDR.Addr().As4()
	ip[3] = host
	return SandboxNet{
		ID: id, Subnet: e.subnet.Name, IP: netip.AddrFrom4(ip), PrefixLen: e.subnet.CIDR.Bits(),
		MAC: net.HardwareAddr{0x02, 0x56, 0x53, 0, 0, host}, Gateway: e.subnet.Gateway,
	}
}

func (e *testEnv) attach(t *testing.T, sn SandboxNet) string {
	t.Helper()
	path, err := e.m.Attach(context.Background(), sn)
	if err != nil {
		t.Fatalf("attach %s: %v", sn.ID, err)
	}
	return path
}

// inNetns runs fn on a thread inside the namespace at path. Sockets created
// by fn stay in that namespace after it returns.
func inNetns(t *testing.T, path string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			t.Error(err)
			return
		}
		fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// echoServer listens on addr inside the namespace and answers each
// connection with the remote address it saw.
func echoServer(t *testing.T, nsPath, addr string) {
	t.Helper()
	var ln net.Listener
	inNetns(t, nsPath, func() {
		var err error
		if ln, err = net.Listen("tcp4", addr); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String()))
			c.Close()
		}
	}()
}

// dialFrom connects from inside nsPath ("" = host) and returns what the
// server saw as our address.
func dialFrom(t *testing.T, nsPath, addr string) string {
	t.Helper()
	var c net.Conn
	dial := func() {
		var err error
		if c, err = net.DialTimeout("tcp4", addr, 5*time.Second); err != nil {
			t.Errorf("dial %s from %q: %v", addr, nsPath, err)
		}
	}
	if nsPath == "" {
		dial()
	} else {
		inNetns(t, nsPath, dial)
	}
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	return string(buf[:n])
}

func ping(t *testing.T, nsPath, ip string) {
	t.Helper()
	args := []string{"busybox", "ping", "-c1", "-W2", ip}
	if nsPath != "" {
		args = append([]string{"nsenter", "--net=" + nsPath}, args...)
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Errorf("ping %s from %q: %v\n%s", ip, nsPath, err, out)
	}
}

func TestSandboxesReachEachOtherAndHost(t *testing.T) {
	e := newTestEnv(t, "vessel-test-talk", "10.231.1.0/24")
	a, b := e.sandbox("talk-a", 2), e.sandbox("talk-b", 3)
	pathA, pathB := e.attach(t, a), e.attach(t, b)

	ping(t, pathA, "10.231.1.3")
	ping(t, "", "10.231.1.2")
	ping(t, pathB, e.subnet.Gateway.String())

	echoServer(t, pathB, "10.231.1.3:8080")
	if got := dialFrom(t, pathA, "10.231.1.3:8080"); got != "10.231.1.2" {
		t.Errorf("within the subnet the source must be kept: server saw %q", got)
	}
	if got := dialFrom(t, "", "10.231.1.3:8080"); got != "10.231.1.1" {
		t.Errorf("host connection seen from %q, want the gateway", got)
	}

	var mac string
	inNetns(t, pathA, func() {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Error(err)
			return
		}
		mac = l.Attrs().HardwareAddr.String()
	})
	if mac != a.MAC.String() {
		t.Errorf("eth0 MAC = %s, want %s", mac, a.MAC)
	}
}

func TestEgressIsMasqueraded(t *testing.T) {
	e := newTestEnv(t, "vessel-test-nat", "10.231.2.0/24")
	sb := e.attach(t, e.sandbox("nat-a", 2))

	// "Outside" is a namespace reachable from the host over a /30 and with
	// no route back to the sandbox subnet: only masqueraded traffic can be
	// answered.
	outside := newOutside(t, e.m, "10.232.2.1", "10.232.2.2")
	echoServer(t, outside, "10.232.2.2:9000")
	if got := dialFrom(t, sb, "10.232.2.2:9000"); got != "10.232.2.1" {
		t.Errorf("outside saw source %q, want the host's address 10.232.2.1", got)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("ip_forward = %q", b)
	}
}

func newOutside(t *testing.T, m *Manager, hostIP, outIP string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outside")
	if err := m.ensureNetns(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "vsltest-out"
	veth := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteLinkByName("vsltest-out") })
	host, _ := netlink.LinkByName("vsltest-out")
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(hostIP), Mask: net.CIDRMask(30, 32)}}); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(host)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, _ := h.LinkByName("eth0")
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(outIP), Mask: net.CIDRMask(30, 32)}}); err != nil {
		t.Fatal(err)
	}
	h.LinkSetUp(eth0)
	return path
}

func TestAttachIsIdempotentAndRepairs(t *testing.T) {
	e := newTestEnv(t, "vessel-test-idem", "10.231.3.0/24")
	sn := e.sandbox("idem-a", 2)
	p1 := e.attach(t, sn)
	if err := e.m.EnsureSubnet(context.Background(), e.subnet); err != nil {
		t.Fatalf("second EnsureSubnet: %v", err)
	}
	before, _ := netlink.LinkByName(HostVethName(sn.ID))
	if p2 := e.attach(t, sn); p2 != p1 {
		t.Errorf("second Attach returned %q, first %q", p2, p1)
	}
	after, _ := netlink.LinkByName(HostVethName(sn.ID))
	if before.Attrs().Index != after.Attrs().Index {
		t.Error("Attach on healthy state recreated the veth")
	}

	// A crash that lost the host end: Attach rebuilds the pair.
	if err := netlink.LinkDel(after); err != nil {
		t.Fatal(err)
	}
	e.attach(t, sn)
	ping(t, p1, e.subnet.Gateway.String())

	ids, err := e.m.List(context.Background())
	if err != nil || !slices.Equal(ids, []string{"idem-a"}) {
		t.Errorf("List = %v, %v", ids, err)
	}
}

func TestDetachLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "vessel-test-detach", "10.231.4.0/24")
	sn := e.sandbox("detach-a", 2)
	path := e.attach(t, sn)
	tap, err := e.m.AttachTap(context.Background(), sn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		if err := e.m.Detach(ctx, sn.ID); err != nil {
			t.Fatalf("Detach: %v", err)
		}
	}
	for _, name := range []string{HostVethName(sn.ID), tap} {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("%s still exists", name)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("netns file still there: %v", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), path) {
		t.Errorf("netns %s still mounted", path)
	}
	if ids, _ := e.m.List(ctx); len(ids) != 0 {
		t.Errorf("List after Detach = %v", ids)
	}
}

func TestAttachRejectsBadInput(t *testing.T) {
	m, _ := New(Config{NetnsDir: "/nonexistent-vessel"})
	_, err := m.Attach(context.Background(), SandboxNet{ID: "../x"})
	if err == nil || !strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("Attach with bad id: %v", err)
	}
}
