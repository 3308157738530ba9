package server

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/vessel-dev/vessel/internal/controller"
)

func TestListenMetrics(t *testing.T) {
	if ln, err := listenMetrics(Config{HostAddress: "127.0.0.1"}); ln != nil || err != nil {
		t.Fatalf("loopback host address: %v, %v; want no listener and no error", ln, err)
	}
	addr := hostAddress(Config{})
	if ip := net.ParseIP(addr); ip == nil || ip.IsLoopback() {
		t.Skipf("no non-loopback address (%s)", addr)
	}
	busy, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	_, err = listenMetrics(Config{HostAddress: addr, MetricsPort: port})
	var perr *controller.MetricsPortError
	if !errors.As(err, &perr) || perr.Addr != net.JoinHostPort(addr, strconv.Itoa(port)) {
		t.Fatalf("busy port: %v; want a MetricsPortError for %s:%d", err, addr, port)
	}
	ln, err := listenMetrics(Config{HostAddress: addr})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}
