package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestLeafIsKeptAcrossRunsAndReissuedWhenNamesChange(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	leaf := Leaf{CommonName: "srv", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}
	if wrote, err := ca.EnsureLeaf(cert, key, leaf); err != nil || !wrote {
		t.Fatalf("first EnsureLeaf: wrote=%v err=%v", wrote, err)
	}
	before, _ := os.ReadFile(cert)

	// Reloading the CA from disk and asking again must keep the same certificate.
	ca2, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := ca2.EnsureLeaf(cert, key, leaf); err != nil || wrote {
		t.Fatalf("second EnsureLeaf: wrote=%v err=%v, want kept", wrote, err)
	}
	if after, _ := os.ReadFile(cert); string(after) != string(before) {
		t.Fatal("certificate changed although nothing about it did")
	}

	leaf.IPs = append(leaf.IPs, net.ParseIP("192.0.2.7"))
	if wrote, err := ca2.EnsureLeaf(cert, key, leaf); err != nil || !wrote {
		t.Fatalf("EnsureLeaf with a new IP: wrote=%v err=%v, want reissued", wrote, err)
	}
	data, _ := os.ReadFile(cert)
	c, err := parseCert(data)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Fatalf("reissued certificate does not verify against the CA: %v", err)
	}
	if err := c.VerifyHostname("192.0.2.7"); err != nil {
		t.Fatalf("new IP not in certificate: %v", err)
	}
}

func TestHalfPresentCAIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "ca"); err == nil {
		t.Fatal("a CA certificate without its key was silently replaced")
	}
}

func TestKeyFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "ca"); err != nil {
		t.Fatal(err)
	}
	if err := EnsureRSAKey(filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.key", "sa.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}
