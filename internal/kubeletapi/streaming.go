package kubeletapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// exec serves /exec/{ns}/{pod}[/{uid}]/{container}?command=…&stdin=…: SPDY
// (remotecommand v1–v4, what the apiserver uses towards kubelets) and
// WebSocket (channel.k8s.io v1–v5, v5 adding stdin half-close, which
// client-go's WebSocket executor requires).
func (s *Server) exec(w http.ResponseWriter, req *http.Request) {
	cmd := req.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command", http.StatusBadRequest)
		return
	}
	s.remoteCommand(w, req, func(ctx context.Context, pod *corev1.Pod, container string, st Streams) (int, error) {
		return s.cfg.Provider.Exec(ctx, pod, container, cmd, st)
	}, cmd)
}

// attach serves /attach/{ns}/{pod}[/{uid}]/{container}.
func (s *Server) attach(w http.ResponseWriter, req *http.Request) {
	s.remoteCommand(w, req, func(ctx context.Context, pod *corev1.Pod, container string, st Streams) (int, error) {
		return 0, s.cfg.Provider.Attach(ctx, pod, container, st)
	}, nil)
}

type runFunc func(ctx context.Context, pod *corev1.Pod, container string, st Streams) (exitCode int, err error)

func (s *Server) remoteCommand(w http.ResponseWriter, req *http.Request, run runFunc, cmd []string) {
	pod, container := podFrom(req), req.PathValue("container")
	if !hasContainer(pod, container) {
		http.Error(w, fmt.Sprintf("container %q not found in pod %s/%s", container, pod.Namespace, pod.Name), http.StatusNotFound)
		return
	}
	opts, err := remotecommandserver.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.session(w, req, func(w http.ResponseWriter, req *http.Request) {
		ctx := req.Context()
		if wsstream.IsWebSocketRequestWithStreamCloseProtocol(req) {
			s.serveWebSocketV5(w, req, opts, func(st Streams) (int, error) { return run(ctx, pod, container, st) })
			return
		}
		r := runner{ctx: ctx, pod: pod, run: run}
		if cmd != nil {
			remotecommandserver.ServeExec(w, req, r, pod.Name, pod.UID, container, cmd, opts,
				s.cfg.StreamIdleTimeout, s.cfg.StreamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
		} else {
			remotecommandserver.ServeAttach(w, req, r, pod.Name, pod.UID, container, opts,
				s.cfg.StreamIdleTimeout, s.cfg.StreamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
		}
	})
}

// portForward serves /portForward/{ns}/{pod}[/{uid}]: SPDY
// (portforward.k8s.io, what the apiserver uses) and the v4 WebSocket
// protocol (?port=…).
func (s *Server) portForward(w http.ResponseWriter, req *http.Request) {
	pod := podFrom(req)
	opts, err := portforward.NewV4Options(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.session(w, req, func(w http.ResponseWriter, req *http.Request) {
		portforward.ServePortForward(w, req, forwarder{ctx: req.Context(), pod: pod, p: s.cfg.Provider}, pod.Name, pod.UID, opts,
			s.cfg.StreamIdleTimeout, s.cfg.StreamCreationTimeout, portforward.SupportedProtocols)
	})
}

// session runs a handler that upgrades its connection. Its request context
// is cancelled when the client goes away (the hijacked connection fails a
// read), when the server shuts down, or when the handler returns; the
// connection is closed then, which ends every stream of the session.
func (s *Server) session(w http.ResponseWriter, req *http.Request, serve http.HandlerFunc) {
	s.sessions.Add(1)
	defer s.sessions.Done()
	ctx, cancel := s.longRunning(req)
	defer cancel()
	serve(&hijackWriter{ResponseWriter: w, ctx: ctx, cancel: cancel}, req.WithContext(ctx))
}

// runner adapts the provider to the upstream Executor and Attacher, whose
// context is the request's (not cancelled on disconnect after a hijack), so
// it carries the session's own.
type runner struct {
	ctx context.Context
	pod *corev1.Pod
	run runFunc
}

func (r runner) ExecInContainer(_ context.Context, _ string, _ types.UID, container string, _ []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	code, err := r.run(r.ctx, r.pod, container, streams(in, out, errw, tty, resize))
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (r runner) AttachContainer(_ context.Context, _ string, _ types.UID, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	_, err := r.run(r.ctx, r.pod, container, streams(in, out, errw, tty, resize))
	return err
}

// streams turns possibly typed-nil streams into Streams with plain nils.
func streams(in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) Streams {
	st := Streams{TTY: tty, Resize: resize}
	if !isNil(in) {
		st.Stdin = in
	}
	if !isNil(out) {
		st.Stdout = out
	}
	if !isNil(errw) && !tty {
		st.Stderr = errw
	}
	return st
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

type forwarder struct {
	ctx context.Context
	pod *corev1.Pod
	p   Provider
}

func (f forwarder) PortForward(_ context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	return f.p.PortForward(f.ctx, f.pod, port, stream)
}

// serveWebSocketV5 serves remotecommand over WebSocket with the
// v5.channel.k8s.io protocol: channels 0–4 are stdin, stdout, stderr,
// error (the final metav1.Status) and resize; the client half-closes stdin
// with the close signal (255, channel), which wsstream turns into EOF.
func (s *Server) serveWebSocketV5(w http.ResponseWriter, req *http.Request, opts *remotecommandserver.Options, run func(Streams) (int, error)) {
	ch := func(want bool, t wsstream.ChannelType) wsstream.ChannelType {
		if want {
			return t
		}
		return wsstream.IgnoreChannel
	}
	channels := []wsstream.ChannelType{
		ch(opts.Stdin, wsstream.ReadChannel),
		ch(opts.Stdout, wsstream.WriteChannel),
		ch(opts.Stderr && !opts.TTY, wsstream.WriteChannel),
		wsstream.WriteChannel,
		ch(opts.TTY, wsstream.ReadChannel),
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommandconsts.StreamProtocolV5Name: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(s.cfg.StreamIdleTimeout)
	_, chans, err := conn.Open(w, req)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "path", req.URL.Path, "err", err)
		return
	}
	defer conn.Close()
	st := Streams{TTY: opts.TTY}
	if opts.Stdin {
		st.Stdin = chans[0]
	}
	if opts.Stdout {
		st.Stdout = chans[1]
	}
	if opts.Stderr && !opts.TTY {
		st.Stderr = chans[2]
	}
	// Tell the client the session is established, as the upstream server
	// does: an empty message on the first writable channel.
	switch {
	case st.Stdout != nil:
		st.Stdout.Write(nil)
	case st.Stderr != nil:
		st.Stderr.Write(nil)
	default:
		chans[3].Write(nil)
	}
	if opts.TTY {
		resize := make(chan remotecommand.TerminalSize)
		st.Resize = resize
		go decodeResizes(req.Context(), chans[4], resize)
	}
	code, err := run(st)
	var status *metav1.Status
	switch {
	case err != nil:
		status = &apierrors.NewInternalError(fmt.Errorf("error executing command in container: %w", err)).ErrStatus
	case code != 0:
		status = exitStatus(code)
	default:
		status = &metav1.Status{Status: metav1.StatusSuccess}
	}
	status.Kind, status.APIVersion = "Status", "v1"
	b, _ := json.Marshal(status)
	chans[3].Write(b)
}

// exitStatus is the status with which kubelets report a non-zero exit code,
// which client-go turns into an exec.CodeExitError.
func exitStatus(code int) *metav1.Status {
	return &metav1.Status{
		Status: metav1.StatusFailure,
		Reason: remotecommandconsts.NonZeroExitCodeReason,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{
			{Type: remotecommandconsts.ExitCodeCauseType, Message: strconv.Itoa(code)},
		}},
		Message: fmt.Sprintf("command terminated with non-zero exit code: command terminated with exit code %d", code),
	}
}

// decodeResizes forwards the JSON terminal sizes read from r until r ends
// or ctx is done, then closes out.
func decodeResizes(ctx context.Context, r io.Reader, out chan<- remotecommand.TerminalSize) {
	defer close(out)
	dec := json.NewDecoder(r)
	for {
		var size remotecommand.TerminalSize
		if err := dec.Decode(&size); err != nil {
			return
		}
		select {
		case out <- size:
		case <-ctx.Done():
			return
		}
	}
}

// hijackWriter hands out connections that report the client going away:
// a failed read (the SPDY and WebSocket servers read continuously) or a
// close cancels the session's context, and the context ending closes the
// connection.
type hijackWriter struct {
	http.ResponseWriter
	ctx    context.Context
	cancel context.CancelFunc
}

func (w *hijackWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	conn, rw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	sc := &sessionConn{Conn: conn, cancel: w.cancel}
	context.AfterFunc(w.ctx, func() { conn.Close() })
	// Bytes the server already buffered are read first, then the wrapper.
	var r io.Reader = sc
	if n := rw.Reader.Buffered(); n > 0 {
		buffered, _ := rw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), sc)
	}
	return sc, bufio.NewReadWriter(bufio.NewReader(r), rw.Writer), nil
}

type sessionConn struct {
	net.Conn
	cancel context.CancelFunc
	once   sync.Once
}

func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(c.cancel)
	}
	return n, err
}

func (c *sessionConn) Close() error {
	c.once.Do(c.cancel)
	return c.Conn.Close()
}
