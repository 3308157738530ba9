package kubeletapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/request"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// Defaults of the kubelet's streaming server.
const (
	DefaultStreamIdleTimeout     = 4 * time.Hour
	DefaultStreamCreationTimeout = 30 * time.Second
	// DefaultShutdownGrace is how long Serve lets requests finish after its
	// context is done before closing every connection. Only short requests
	// (stats, metrics, a container log read) are left by then, as follows and
	// streaming sessions are ended at once; but a connection a client has
	// opened without a request yet also holds net/http's Shutdown, for up to
	// 5 s, so the grace is what bounds a host agent's stop.
	DefaultShutdownGrace = 500 * time.Millisecond
)

// Config configures a Server.
type Config struct {
	// Provider answers for the host's pods. Required.
	Provider Provider
	// TLS is the serving configuration: the serving certificate (see
	// ServingCertificate) and, for client-certificate authentication,
	// ClientAuth at least tls.RequestClientCert. Serve uses it as is;
	// NewTLSConfig builds the usual one.
	TLS *tls.Config
	// Authenticator identifies the caller (client certificate, bearer
	// token). Required; see DelegatingAuth for the kubelet's.
	Authenticator authenticator.Request
	// Authorizer decides with the kubelet's attributes (nodes/proxy, …).
	// Required; see DelegatingAuth.
	Authorizer authorizer.Authorizer
	// Metrics, when set, serves GET /metrics (the host's own metrics in the Prometheus text
	// format, as the kubelet serves its own there).
	Metrics http.Handler
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Streaming timeouts; the kubelet's defaults when zero.
	StreamIdleTimeout     time.Duration
	StreamCreationTimeout time.Duration
	ShutdownGrace         time.Duration
}

// Server is the kubelet API of one host. Create it with New, run it with
// Serve; Handler serves the same routes for callers with their own
// listener (requests must then carry TLS state for certificate auth).
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	ready   chan struct{}

	// base is the parent of every request context; cancelling it ends
	// follows and streaming sessions (at shutdown).
	base       context.Context
	cancelBase context.CancelFunc
	// long is cancelled when shutdown starts: follows and streaming
	// sessions derive from it as well as from their request.
	long       context.Context
	cancelLong context.CancelFunc
	// sessions counts handlers that hijacked their connection, which
	// http.Server.Shutdown does not wait for.
	sessions sync.WaitGroup
}

// New validates cfg and builds the Server.
func New(cfg Config) (*Server, error) {
	if cfg.Provider == nil || cfg.Authenticator == nil || cfg.Authorizer == nil {
		return nil, errors.New("kubeletapi: Provider, Authenticator and Authorizer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if cfg.StreamCreationTimeout <= 0 {
		cfg.StreamCreationTimeout = DefaultStreamCreationTimeout
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.long, s.cancelLong = context.WithCancel(s.base)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /pods", s.pods)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", s.containerLogs)
	for _, m := range []string{"GET", "POST"} {
		mux.HandleFunc(m+" /exec/{ns}/{pod}/{container}", s.exec)
		mux.HandleFunc(m+" /exec/{ns}/{pod}/{uid}/{container}", s.exec)
		mux.HandleFunc(m+" /attach/{ns}/{pod}/{container}", s.attach)
		mux.HandleFunc(m+" /attach/{ns}/{pod}/{uid}/{container}", s.attach)
		mux.HandleFunc(m+" /portForward/{ns}/{pod}", s.portForward)
		mux.HandleFunc(m+" /portForward/{ns}/{pod}/{uid}", s.portForward)
	}
	mux.HandleFunc("GET /stats/summary", s.statsSummary)
	mux.HandleFunc("GET /metrics/resource", s.metricsResource)
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	s.handler = s.withAuth(mux)
	return s, nil
}

// Handler returns the authenticated, authorized routes.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready is closed once Serve accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Serve serves HTTPS on ln until ctx is done, then shuts down: it stops
// accepting, gives requests ShutdownGrace to finish, then ends follows and
// streaming sessions (their provider calls see their context cancelled) and
// returns once every handler has returned. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("kubeletapi: Config.TLS is required to Serve")
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	close(s.ready)
	select {
	case err := <-errc:
		s.cancelBase()
		s.cancelLong()
		s.sessions.Wait()
		return fmt.Errorf("serve kubelet API: %w", err)
	case <-ctx.Done():
	}
	// Follows and streaming sessions never finish by themselves: end them
	// now. Other requests get the grace period.
	s.cancelLong()
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	stop := context.AfterFunc(grace, s.cancelBase)
	defer stop()
	err := srv.Shutdown(grace)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	s.cancelBase()
	s.sessions.Wait()
	<-errc
	return err
}

type ctxKey int

const podKey ctxKey = 0

// withAuth authenticates every request but /healthz, authorizes it with the
// kubelet's attributes and, for pod routes, resolves the pod (404 when this
// host does not run it or the URL's UID differs).
func (s *Server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/healthz" {
			next.ServeHTTP(w, req)
			return
		}
		resp, ok, err := s.cfg.Authenticator.AuthenticateRequest(req)
		if err != nil || !ok {
			if err != nil {
				s.log.Debug("kubelet API authentication failed", "path", req.URL.Path, "err", err)
			}
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		ns, name, uid, podRoute := podOfPath(req.URL.Path)
		var pod *corev1.Pod
		if podRoute {
			if p, found := s.cfg.Provider.Pod(ns, name); found && (uid == "" || string(p.UID) == uid) {
				pod = p
			}
		}
		attrs := Attributes(resp.User, req, pod)
		decision, reason, err := s.cfg.Authorizer.Authorize(req.Context(), attrs)
		if err != nil {
			s.log.Warn("kubelet API authorization failed", "user", resp.User.GetName(), "path", req.URL.Path, "err", err)
		}
		if decision != authorizer.DecisionAllow {
			msg := fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=%s, subresource=%s, name=%q)",
				resp.User.GetName(), attrs.GetVerb(), attrs.GetResource(), attrs.GetSubresource(), attrs.GetName())
			if reason != "" {
				msg += ": " + reason
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		if podRoute && pod == nil {
			http.Error(w, fmt.Sprintf("pod %s/%s not found on this host", ns, name), http.StatusNotFound)
			return
		}
		ctx := request.WithUser(req.Context(), resp.User)
		if pod != nil {
			ctx = context.WithValue(ctx, podKey, pod)
		}
		next.ServeHTTP(w, req.WithContext(ctx))
	})
}

// podOfPath extracts the pod a pod-scoped kubelet path names.
func podOfPath(path string) (ns, name, uid string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch parts[0] {
	case "containerLogs", "exec", "attach", "run":
		if len(parts) == 5 {
			uid = parts[3]
		}
	case "portForward":
		if len(parts) == 4 {
			uid = parts[3]
		}
	default:
		return "", "", "", false
	}
	if len(parts) < 3 {
		return "", "", "", false
	}
	return parts[1], parts[2], uid, true
}

// Attributes are the kubelet's authorization attributes for req: resource
// nodes, subresource from the path (/stats → stats, /metrics → metrics,
// /logs → log, anything else → proxy), verb from the method, name = the
// Node of pod, or "" (every node) for host-wide paths and unknown pods.
func Attributes(u user.Info, req *http.Request, pod *corev1.Pod) authorizer.AttributesRecord {
	subresource := "proxy"
	switch {
	case isSubpath(req.URL.Path, "/stats"):
		subresource = "stats"
	case isSubpath(req.URL.Path, "/metrics"):
		subresource = "metrics"
	case isSubpath(req.URL.Path, "/logs"):
		subresource = "log"
	}
	name := ""
	if pod != nil {
		name = pod.Spec.NodeName
	}
	return authorizer.AttributesRecord{
		User:            u,
		Verb:            verb(req.Method),
		APIGroup:        "",
		APIVersion:      "v1",
		Resource:        "nodes",
		Subresource:     subresource,
		Name:            name,
		ResourceRequest: true,
		Path:            req.URL.Path,
	}
}

func isSubpath(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func verb(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(method)
}

// longRunning derives the context of a follow or streaming session: done
// when the request's is, or when the server starts shutting down.
func (s *Server) longRunning(req *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(s.long, cancel)
	return ctx, func() { stop(); cancel() }
}

func podFrom(req *http.Request) *corev1.Pod {
	p, _ := req.Context().Value(podKey).(*corev1.Pod)
	return p
}

// hasContainer reports whether pod declares a container of that name.
func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// httpError answers with the status of err's category.
func httpError(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), statusOf(err))
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, runtime.ErrInvalidArgument):
		return http.StatusBadRequest
	case errors.Is(err, runtime.ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, runtime.ErrFailedPrecondition):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (s *Server) pods(w http.ResponseWriter, _ *http.Request) {
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	for _, p := range s.cfg.Provider.Pods() {
		list.Items = append(list.Items, *p)
	}
	writeJSON(w, list)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
