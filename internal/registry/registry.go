// Package registry serves the OCI distribution API from a directory, so Vessel works offline: images
// imported with `vessel image import` or built with `vessel image build-demo` are pulled by hosts
// from here like from any registry.
//
// All state is on disk and every write is a temp-file-then-rename, so the registry survives
// restarts and several processes may serve or fill one directory at once (the CLI imports into
// the data dir of a running registry). go-containerregistry's pkg/registry was not used: its disk
// blob handler keeps manifests and tags in memory only, which a restart would lose.
//
// Layout under the data dir:
//
//	blobs/sha256/<hex>                      content, verified against its digest on upload
//	repositories/<name>/manifests/<hex>     media type of a manifest in this repository
//	repositories/<name>/tags/<tag>          digest the tag points at
//	uploads/<id>                            uploads in progress
//
// Blobs are global: any repository may read any blob. That suits a loopback registry for one
// machine; it is not a multi-tenant registry.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultAddr is where `vessel up` serves the local registry.
const DefaultAddr = "127.0.0.1:5000"

// Options configure a Server.
type Options struct {
	// Addr to listen on; default DefaultAddr. Use "127.0.0.1:0" for an ephemeral port. Binding a
	// non-loopback address exposes an unauthenticated registry: only do it on a trusted network.
	Addr   string
	Logger *slog.Logger
}

// Server is a local registry listening on one address.
type Server struct {
	handler *Handler
	addr    string
	ln      net.Listener
	srv     *http.Server
	done    chan struct{}
}

// New prepares a server over dataDir (created if missing). It does not listen until Start.
func New(dataDir string, opts Options) (*Server, error) {
	h, err := NewHandler(dataDir, opts.Logger)
	if err != nil {
		return nil, err
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	return &Server{handler: h, addr: opts.Addr}, nil
}

// Start listens and serves in the background. It returns once the listener is bound, so Addr is
// valid and requests succeed as soon as it returns.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("start local registry: %w", err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.handler.log.Error("local registry stopped", "err", err)
		}
	}()
	s.handler.log.Info("local registry listening", "addr", ln.Addr().String(), "dir", s.handler.dir)
	return nil
}

// Addr is the bound "host:port" (after Start), e.g. for image references "ADDR/vessel/demo:latest".
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.addr
	}
	return s.ln.Addr().String()
}

// closeGrace is how long Close lets requests in flight finish.
const closeGrace = 500 * time.Millisecond

// Handler returns the http.Handler, for embedding in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the server, giving requests in flight half a second and then cutting them (an
// interrupted push leaves no blob: uploads are verified by digest before they are stored).
// Idempotent.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	// Shutdown also waits up to 5 s for connections that have not sent a request yet; past
	// the grace, Close ends those too.
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	<-s.done
	s.srv = nil
	return err
}
