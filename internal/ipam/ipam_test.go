package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

func mustSubnet(t *testing.T, cidr, gw string) Subnet {
	t.Helper()
	s, err := ParseSubnet(cidr, gw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSubnet(t *testing.T) {
	for _, tc := range []struct {
		cidr, gw string
		ok       bool
	}{
		{"10.0.1.0/24", "10.0.1.1", true},
		{"10.0.1.0/30", "10.0.1.1", true},
		{"10.0.1.5/24", "10.0.1.1", false}, // host bits
		{"10.0.1.0/24", "10.0.2.1", false}, // gateway outside
		{"fd00::/64", "fd00::1", false},    // IPv6
		{"nonsense", "10.0.1.1", false},
		{"10.0.1.0/24", "", false},
	} {
		_, err := ParseSubnet(tc.cidr, tc.gw)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSubnet(%q, %q) error = %v, want ok=%v", tc.cidr, tc.gw, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSubnet(%q, %q) error %v does not match ErrInvalid", tc.cidr, tc.gw, err)
		}
	}
}

func TestAllocateSkipsReservedAddressesAndExhausts(t *testing.T) {
	for _, tc := range []struct {
		name, cidr, gw string
		want           []string // every address handed out, in order, then exhaustion
	}{
		{"/30 gateway first", "10.0.0.0/30", "10.0.0.1", []string{"10.0.0.2"}},
		{"/30 gateway last", "10.0.0.0/30", "10.0.0.2", []string{"10.0.0.1"}},
		{"/29", "192.168.7.8/29", "192.168.7.9", []string{"192.168.7.10", "192.168.7.11", "192.168.7.12", "192.168.7.13", "192.168.7.14"}},
		{"/29 gateway in the middle", "192.168.7.8/29", "192.168.7.12", []string{"192.168.7.9", "192.168.7.10", "192.168.7.11", "192.168.7.13", "192.168.7.14"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSubnet(t, tc.cidr, tc.gw)
			if s.Size() != len(tc.want) {
				t.Errorf("Size() = %d, want %d", s.Size(), len(tc.want))
			}
			a := New()
			for i, w := range tc.want {
				got, err := a.Allocate(s)
				if err != nil || got.String() != w {
					t.Fatalf("allocation %d = %v, %v; want %s", i, got, err, w)
				}
			}
			if got, err := a.Allocate(s); !errors.Is(err, ErrExhausted) {
				t.Fatalf("allocation after exhaustion = %v, %v; want ErrExhausted", got, err)
			}
			if a.Free(s) != 0 || a.Used(s) != len(tc.want) {
				t.Errorf("Free/Used = %d/%d, want 0/%d", a.Free(s), a.Used(s), len(tc.want))
			}
		})
	}
}

func TestTooSmallPrefixesAreInvalid(t *testing.T) {
	for _, cidr := range []string{"10.0.0.0/31", "10.0.0.4/32"} {
		s := Subnet{Prefix: netip.MustParsePrefix(cidr), Gateway: netip.MustParsePrefix(cidr).Addr()}
		if _, err := New().Allocate(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Allocate(%s) error = %v, want ErrInvalid", cidr, err)
		}
		if s.Size() != 0 {
			t.Errorf("%s Size() = %d, want 0", cidr, s.Size())
		}
	}
}

func TestNeverTheSameAddressTwice(t *testing.T) {
	s := mustSubnet(t, "10.1.0.0/22", "10.1.0.1")
	a := New()
	seen := map[netip.Addr]bool{}
	for i := 0; i < s.Size(); i++ {
		addr, err := a.Allocate(s)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if seen[addr] {
			t.Fatalf("allocation %d: %s handed out twice", i, addr)
		}
		if addr == s.Gateway || addr == s.Prefix.Addr() || addr.String() == "10.1.3.255" {
			t.Fatalf("allocation %d: handed out reserved address %s", i, addr)
		}
		seen[addr] = true
	}
	if len(seen) != 1021 {
		t.Fatalf("handed out %d addresses, want 1021", len(seen))
	}
}

func TestReserveAndRelease(t *testing.T) {
	s := mustSubnet(t, "10.0.0.0/29", "10.0.0.1")
	a := New()
	// Rebuild: addresses held by existing sandboxes are reserved first.
	for _, r := range []string{"10.0.0.2", "10.0.0.4"} {
		if err := a.Reserve(netip.MustParseAddr(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Reserve(netip.MustParseAddr("10.0.0.2")); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Reserve of 10.0.0.2 = %v, want ErrInUse", err)
	}
	var got []string
	for {
		addr, err := a.Allocate(s)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, addr.String())
	}
	want := []string{"10.0.0.3", "10.0.0.5", "10.0.0.6"}
	if len(got) != len(want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocated %v, want %v", got, want)
		}
	}
	a.Release(netip.MustParseAddr("10.0.0.4"))
	a.Release(netip.MustParseAddr("10.0.0.4")) // idempotent
	if addr, err := a.Allocate(s); err != nil || addr.String() != "10.0.0.4" {
		t.Fatalf("allocation after release = %v, %v; want 10.0.0.4", addr, err)
	}
}

func TestNextFitDelaysReuse(t *testing.T) {
	s := mustSubnet(t, "10.0.0.0/24", "10.0.0.1")
	a := New()
	first, _ := a.Allocate(s)
	a.Release(first)
	second, _ := a.Allocate(s)
	if second == first {
		t.Fatalf("released %s was handed out again at once; next-fit should move on", first)
	}
}

func TestMAC(t *testing.T) {
	for _, tc := range []struct{ ip, mac string }{
		{"10.0.1.23", "02:56:0a:00:01:17"},
		{"192.168.255.254", "02:56:c0:a8:ff:fe"},
	} {
		mac := MAC(netip.MustParseAddr(tc.ip))
		if mac.String() != tc.mac {
			t.Errorf("MAC(%s) = %s, want %s", tc.ip, mac, tc.mac)
		}
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("MAC(%s) = %s is not locally administered unicast", tc.ip, mac)
		}
	}
}
