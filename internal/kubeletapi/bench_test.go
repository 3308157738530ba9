package kubeletapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"k8s.io/client-go/tools/remotecommand"
)

// BenchmarkExecRoundTrip measures one `kubectl exec`-style session over
// SPDY: TLS handshake, authn/authz (cached), upgrade, streams, a command
// writing a few bytes, exit status.
func BenchmarkExecRoundTrip(b *testing.B) {
	ts := startServer(b)
	u := ts.execURL("exec", []string{"argv", "x"}, false, true, true, false)
	for b.Loop() {
		e, err := remotecommand.NewSPDYExecutor(ts.restConfig(), "POST", u)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPortForwardThroughput pulls 64 MiB per iteration from a pod port
// through an established SPDY port-forward (client-go's forwarder → TLS →
// server → ProxyStream → TCP).
func BenchmarkPortForwardThroughput(b *testing.B) {
	const size = 64 << 20
	ts := startServer(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		chunk := make([]byte, 256<<10)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for sent := 0; sent < size; sent += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	ts.provider.ports[7070] = ln.Addr().String()
	local := forwardPorts(b, ts, []string{"0:7070"})
	b.SetBytes(size)
	for b.Loop() {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local[0]))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes, %v", n, err)
		}
	}
}
