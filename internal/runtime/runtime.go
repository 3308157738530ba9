// Package runtime is the seam between the host agent and what actually runs
// a sandbox: the microvm runtime (one VM per sandbox) and the oci runtime
// (namespaces + cgroups via runc/crun). The agent speaks only this interface.
package runtime

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/vessel-dev/vessel/internal/network"
)

// Error categories. Implementations wrap them with %w so callers decide
// retry vs give up with errors.Is.
var (
	// ErrNotFound: the sandbox or container does not exist on this host.
	ErrNotFound = errors.New("not found")
	// ErrInvalidArgument: the request can never succeed as given.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the object is in a state that forbids the call
	// (e.g. starting a container in a sandbox being removed).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnsupported: this runtime does not implement the operation.
	ErrUnsupported = errors.New("unsupported")
)

// Runtime runs sandboxes and their containers on one host.
//
// Contracts common to all methods:
//   - Every method may block for as long as the work takes (runc calls, VM
//     boot, a stop's grace period) and honours ctx cancellation between steps;
//     callers run them off any latency-sensitive loop.
//   - Methods are safe for concurrent use, also on the same sandbox.
//   - State lives on the host, not in the Runtime value: a new Runtime over
//     the same root directory (e.g. after the agent restarted) sees every
//     sandbox and container the previous one created, and containers keep
//     running while no Runtime exists.
//   - Returned values are copies owned by the caller.
//   - Create/Start calls are idempotent on the identifiers they are given;
//     Remove calls on something already gone return nil.
type Runtime interface {
	// CreateSandbox prepares the sandbox: network attachment, cgroup with the
	// sandbox's size as limits, scratch directory, hostname, /etc/hosts and
	// /etc/resolv.conf. No container runs afterwards. Calling it again with
	// the same ID converges to the same state (a changed size is applied);
	// the network identity must not change for an existing sandbox.
	CreateSandbox(ctx context.Context, spec SandboxSpec) error

	// RemoveSandbox kills every container of the sandbox without grace
	// (callers stop them gracefully first), then removes containers, cgroup,
	// mounts, scratch data and network. Idempotent.
	RemoveSandbox(ctx context.Context, sandboxID string) error

	// ListSandboxes returns every sandbox with state on this host, including
	// ones whose creation did not finish, sorted by ID.
	ListSandboxes(ctx context.Context) ([]SandboxInfo, error)

	// StartContainer creates and starts one container instance and returns
	// once its process runs (or failed to start). The instance is identified
	// by (sandbox, spec.Name, spec.Attempt): calling again with the same
	// triple returns the same ContainerID without starting anything. A
	// restart is a new Attempt. ErrNotFound if the sandbox does not exist.
	StartContainer(ctx context.Context, sandboxID string, spec ContainerSpec) (ContainerID, error)

	// StopContainer sends SIGTERM, waits up to grace for the container to
	// exit, then sends SIGKILL and waits for it to be gone. It returns once
	// the container has exited. Stopping an exited container is a no-op.
	StopContainer(ctx context.Context, id ContainerID, grace time.Duration) error

	// ContainerStatus reports the instance's current state. It does not block
	// on the container. ErrNotFound for an unknown ID.
	ContainerStatus(ctx context.Context, id ContainerID) (ContainerStatus, error)

	// ListContainers returns the status of every container instance of the
	// sandbox, sorted by ID.
	ListContainers(ctx context.Context, sandboxID string) ([]ContainerStatus, error)

	// RemoveContainer kills the instance if it still runs and deletes its
	// state and root filesystem. A log file the caller chose (LogPath) is
	// left for the caller; a default one is removed. Idempotent.
	RemoveContainer(ctx context.Context, id ContainerID) error

	// Exec runs argv inside a running container with the container's
	// environment, user and working directory and blocks until it exits,
	// returning its exit code. Stdio streams may be nil. Cancelling ctx kills
	// the exec'd process. Runtimes without TTY support return ErrUnsupported
	// when tty is set.
	//
	// With tty the process runs on a new pseudo-terminal as its controlling
	// terminal: Stdin is written to the terminal, its output goes to Stdout
	// (Stderr is unused), and sizes received on Stdio.Resize are applied to
	// it. Without tty, Resize is ignored. Exec may return while a Read on
	// Stdin is still blocked (an io.Reader cannot be interrupted); it never
	// uses any stream after returning, so the caller ends that Read by
	// closing the stream's source.
	Exec(ctx context.Context, id ContainerID, argv []string, stdio Stdio, tty bool) (exitCode int, err error)

	// OpenStdin returns a writer to the stdin of the running container's
	// main process, for attach. Only containers started with Stdin have one
	// (ErrFailedPrecondition otherwise, and once the container has exited).
	// Several writers may be open at once; closing one does not close the
	// process's stdin, which stays open (never at EOF) for the container's
	// life. The caller closes the writer.
	OpenStdin(ctx context.Context, id ContainerID) (io.WriteCloser, error)
}

// ContainerID names one container instance on a host.
type ContainerID string

// Stdio are the streams of an exec session.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Resize delivers terminal sizes for a tty session, the initial size
	// first; nil means the terminal keeps its default size. The runtime
	// reads it until Exec returns and never closes it; the sender must not
	// block on it after Exec returned (a closed channel is fine).
	Resize <-chan TerminalSize
}

// TerminalSize is a terminal's size in character cells.
type TerminalSize struct {
	Width, Height uint16
}

// SandboxSpec is what a sandbox needs on the host before containers start.
type SandboxSpec struct {
	// ID is the sandbox's identity on the host: letters, digits, '-', '_'
	// (no '.', which separates the parts of a ContainerID).
	ID       string
	Hostname string
	// Network is the sandbox's interface; the runtime attaches it (veth for
	// oci, tap for microvm) so the caller need not know which kind is used.
	Network network.SandboxNet
	// Resources is the sandbox's provisioned size: the hard ceiling for all
	// its containers together.
	Resources Resources
	DNS       DNSConfig
	// HostAliases are extra /etc/hosts entries (pod.spec.hostAliases).
	HostAliases []HostAlias
	// Labels are stored with the sandbox and returned by ListSandboxes so an
	// agent can map host state back to API objects (e.g. owner UID).
	Labels map[string]string
}

// Resources in absolute units. Zero means unlimited.
type Resources struct {
	// MilliCPU is CPU time in thousandths of a core (1000 = one core).
	MilliCPU    int64
	MemoryBytes int64
}

// DNSConfig is written to /etc/resolv.conf.
type DNSConfig struct {
	Nameservers []netip.Addr
	Searches    []string
	Options     []string
}

// HostAlias maps an IP to extra host names in /etc/hosts.
type HostAlias struct {
	IP        netip.Addr
	Hostnames []string
}

// SandboxInfo describes a sandbox found on the host.
type SandboxInfo struct {
	ID        string
	Labels    map[string]string
	CreatedAt time.Time
	// NetnsPath is the sandbox's network namespace (oci); empty for runtimes
	// without one on the host.
	NetnsPath string
}

// ContainerSpec is one container of a sandbox, with everything resolved by
// the caller: the image is unpacked, env values from ConfigMaps/Secrets and
// the downward API are filled in, volumes are prepared as host directories.
type ContainerSpec struct {
	// Name is the container's name in the pod (a DNS label).
	Name string
	// Attempt distinguishes successive instances (restarts) of one container.
	Attempt uint32
	Image   Image
	// Command and Args follow Kubernetes semantics: Command replaces the
	// image Entrypoint and drops its Cmd; Args replaces Cmd. $(VAR)
	// references to Env are expanded as the kubelet does.
	Command    []string
	Args       []string
	Env        []EnvVar
	WorkingDir string
	Mounts     []Mount
	// Limits apply to this container inside the sandbox's own limits.
	Limits          Resources
	SecurityContext SecurityContext
	// Stdin keeps a stdin open for the main process, which OpenStdin
	// writes to (pod spec stdin: true). Without it stdin is /dev/null.
	Stdin bool
	// LogPath is the host file receiving stdout/stderr in CRI log format.
	// Empty: a file in the container's state directory.
	LogPath string
}

// Image is an unpacked image: its root filesystem (used read-only as the
// lower layer of the container's overlay) and its config.
type Image struct {
	RootfsDir string
	Config    ImageConfig
}

// ImageConfig is the part of the OCI image config that shapes a container
// (field meanings as in the OCI image spec).
type ImageConfig struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
}

// EnvVar is a resolved environment variable.
type EnvVar struct {
	Name  string
	Value string
}

// Mount bind-mounts a prepared host path into the container.
type Mount struct {
	HostPath      string
	ContainerPath string
	ReadOnly      bool
}

// SecurityContext is the subset of the Kubernetes container security
// context a sandbox honours; admission has already rejected privileged pods.
type SecurityContext struct {
	RunAsUser          *int64
	RunAsGroup         *int64
	SupplementalGroups []int64
	// CapAdd/CapDrop name capabilities without the CAP_ prefix; "ALL" in
	// CapDrop drops the default set.
	CapAdd                 []string
	CapDrop                []string
	ReadOnlyRootFilesystem bool
}

// ContainerState is the lifecycle state of a container instance.
type ContainerState string

const (
	ContainerCreated ContainerState = "created"
	ContainerRunning ContainerState = "running"
	ContainerExited  ContainerState = "exited"
	// ContainerUnknown: state on the host is inconsistent (e.g. the process
	// vanished without an exit record after a host crash).
	ContainerUnknown ContainerState = "unknown"
)

// ContainerStatus is a snapshot of one container instance.
type ContainerStatus struct {
	ID        ContainerID
	SandboxID string
	Name      string
	Attempt   uint32
	State     ContainerState
	Pid       int
	// ExitCode follows the shell convention: 128+signal when killed.
	ExitCode  int
	OOMKilled bool
	// Reason is a short machine-readable cause for Exited/Unknown
	// ("Completed", "Error", "OOMKilled", "StartError").
	Reason     string
	Message    string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	LogPath    string
}
