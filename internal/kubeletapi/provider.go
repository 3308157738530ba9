// Package kubeletapi serves the kubelet's HTTPS API for the pods a Vessel
// host runs, so `kubectl logs/exec/attach/port-forward` and metrics scrapes
// reach them through the apiserver exactly as they reach a kubelet.
//
// Every Vessel pod has its own Node, and every such Node's kubelet endpoint
// (InternalIP + daemonEndpoints.kubeletEndpoint.Port) is the host agent that
// runs it; one Server therefore answers for many Nodes. Requests name the
// pod, and the pod names its Node (spec.nodeName), which is what requests
// are authorized against (see docs/decisions/kubelet-api.md).
//
// The host agent implements Provider and starts the Server; this package
// knows nothing about runtimes beyond the error categories of
// internal/runtime.
package kubeletapi

import (
	"context"
	"io"
	"net"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/remotecommand"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Provider is what the host agent gives the Server: its pods, their logs,
// their processes and their ports.
//
// Contracts common to all methods:
//   - Safe for concurrent use; called from many requests at once.
//   - Pod values passed in come from Pod or Pods and are only read.
//   - Errors wrapping runtime.ErrNotFound become 404, runtime.ErrInvalidArgument
//     400, runtime.ErrUnsupported 501, runtime.ErrFailedPrecondition 409,
//     anything else 500. For Exec, Attach and PortForward the streams are
//     already upgraded when the error arrives, so it reaches the client as
//     the session's error status instead (kubectl prints it).
type Provider interface {
	// Pod returns the pod namespace/name if this host runs it (it has a
	// Sandbox here), with its UID and spec.nodeName set. It must not block
	// on I/O: it is called for every request, before authorization, and
	// should be answered from the agent's informer cache. The caller does
	// not modify the pod.
	Pod(namespace, name string) (*corev1.Pod, bool)

	// Pods returns every pod this host runs (for /pods). Same rules as Pod.
	Pods() []*corev1.Pod

	// ContainerLog locates the CRI-format log of a container of pod (one of
	// spec.containers, initContainers or ephemeralContainers; the server
	// checks the name first). previous selects the instance before the
	// current one (the last terminated one): ErrNotFound when there is none.
	// It should return promptly; the server reads the files itself with
	// internal/crilog.
	ContainerLog(ctx context.Context, pod *corev1.Pod, container string, previous bool) (LogFile, error)

	// Exec runs cmd (argv, exactly as the client sent it) in the running
	// container and blocks until the process exits, returning its exit code
	// (128+signal when killed). err is for failures to run at all (no such
	// container: ErrNotFound; TTY on a runtime without it: ErrUnsupported).
	// ctx is cancelled when the client disconnects or the server shuts
	// down: the process must then be killed and Exec must return. See
	// Streams for stream ownership.
	Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, s Streams) (exitCode int, err error)

	// Attach connects s to the running container's main process (its stdin
	// if the container has stdin: true, and its output from now on) and
	// blocks until the container exits, the client closes stdin or ctx is
	// cancelled. It never stops the container.
	Attach(ctx context.Context, pod *corev1.Pod, container string, s Streams) error

	// PortForward copies bytes both ways between stream and TCP port of the
	// pod (its sandbox's network namespace / IP), for one client
	// connection, and blocks until both directions are done or ctx is
	// cancelled. It must not close stream: the server does, after
	// PortForward returns. ProxyStream implements the copying given a
	// dialled connection. Many calls run at once for one pod (one per
	// forwarded connection, and several ports per session).
	PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error

	// Stats returns the host's summary: Node = the host itself, Pods = every
	// pod it runs, with CPU and memory for the pods and their containers
	// (UsageCoreNanoSeconds cumulative, WorkingSetBytes, StartTime, Time of
	// the sample). It may block while reading cgroups but should return
	// within a second or two. /metrics/resource is derived from it.
	Stats(ctx context.Context) (*statsv1alpha1.Summary, error)
}

// Streams are the client's streams of an exec or attach session.
//
// Stdin, Stdout and Stderr are nil when the client did not ask for them;
// with TTY, Stderr is always nil (a terminal has one output) and Resize
// delivers the client's terminal size, first the initial one; otherwise
// Resize is nil. Stdin returns io.EOF when the client closes it: the
// provider should then close the process's stdin. The provider must not use
// the streams after its method returns and need not close them: the server
// closes the connection and with it every stream.
type Streams struct {
	Stdin  io.Reader
	Stdout io.WriteCloser
	Stderr io.WriteCloser
	TTY    bool
	Resize <-chan remotecommand.TerminalSize
}

// LogFile is where a container instance's CRI log is.
type LogFile struct {
	// Path of the current log file; rotated files are Path.1, Path.2, …
	// (higher is older, as crilog.RotatingFile writes them).
	Path string
	// Running reports whether the instance may still write to the log: a
	// follow ends once it returns false and the file is drained. It is
	// called about every 100 ms during a follow, so it must be cheap (e.g.
	// a cached container state). Nil: the instance has exited.
	Running func() bool
}

// ProxyStream copies between a port-forward stream and conn (a connection
// the provider dialled to the pod's port), as PortForward needs: client
// bytes go to conn and, when the client half-closes, conn's write side is
// closed (for *net.TCPConn and anything else with CloseWrite); pod bytes go
// to the stream. It returns when the pod side reaches EOF or fails, or when
// ctx is done, and always closes conn; it does not close stream. The copy
// from the client ends by itself once the server closes the stream.
func ProxyStream(ctx context.Context, stream io.ReadWriter, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		if _, err := io.Copy(conn, stream); err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
				return
			}
		}
		// The client is gone (or conn cannot half-close): whatever the pod
		// still sends has no reader.
		conn.Close()
	}()
	_, err := io.Copy(stream, conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
