package hostagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/crilog"
	"github.com/vessel-dev/vessel/internal/kubeletapi"
	"github.com/vessel-dev/vessel/internal/runtime"
)

// KubeletProvider serves the kubelet API for the pods of this host. Valid once Ready is closed.
func (a *Agent) KubeletProvider() kubeletapi.Provider { return kubeletProvider{a} }

type kubeletProvider struct{ a *Agent }

var _ kubeletapi.Provider = kubeletProvider{}

// Pod answers from the cache: only pods whose Sandbox this host runs.
func (p kubeletProvider) Pod(namespace, name string) (*corev1.Pod, bool) {
	var pod corev1.Pod
	if err := p.a.cache.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
		return nil, false
	}
	return &pod, p.onThisHost(&pod)
}

func (p kubeletProvider) onThisHost(pod *corev1.Pod) bool {
	var sb vesselv1.Sandbox
	key := client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(pod.UID)}
	return p.a.cache.Get(context.Background(), key, &sb) == nil && sb.Spec.Host == p.a.cfg.HostName
}

func (p kubeletProvider) Pods() []*corev1.Pod {
	var list corev1.PodList
	if err := p.a.cache.List(context.Background(), &list); err != nil {
		return nil
	}
	var out []*corev1.Pod
	for i := range list.Items {
		if p.onThisHost(&list.Items[i]) {
			out = append(out, &list.Items[i])
		}
	}
	return out
}

// instances returns the container's instances on the host, newest attempt first.
func (p kubeletProvider) instances(ctx context.Context, pod *corev1.Pod, container string) ([]runtime.ContainerStatus, error) {
	all, err := p.a.rt.ListContainers(ctx, string(vesselv1.SandboxNameForPod(pod.UID)))
	if err != nil {
		return nil, fmt.Errorf("list containers of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	var out []runtime.ContainerStatus
	for _, c := range all {
		if c.Name == container {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(x, y runtime.ContainerStatus) int { return int(y.Attempt) - int(x.Attempt) })
	return out, nil
}

func (p kubeletProvider) current(ctx context.Context, pod *corev1.Pod, container string) (runtime.ContainerStatus, error) {
	inst, err := p.instances(ctx, pod, container)
	if err != nil {
		return runtime.ContainerStatus{}, err
	}
	if len(inst) == 0 {
		return runtime.ContainerStatus{}, fmt.Errorf("container %s of pod %s/%s has not started: %w", container, pod.Namespace, pod.Name, runtime.ErrNotFound)
	}
	return inst[0], nil
}

func (p kubeletProvider) ContainerLog(ctx context.Context, pod *corev1.Pod, container string, previous bool) (kubeletapi.LogFile, error) {
	inst, err := p.instances(ctx, pod, container)
	if err != nil {
		return kubeletapi.LogFile{}, err
	}
	i := 0
	if previous {
		i = 1
	}
	if len(inst) <= i {
		what := "has no log yet"
		if previous {
			what = "has no previous terminated instance"
		}
		return kubeletapi.LogFile{}, fmt.Errorf("container %s of pod %s/%s %s: %w", container, pod.Namespace, pod.Name, what, runtime.ErrNotFound)
	}
	c := inst[i]
	return kubeletapi.LogFile{Path: c.LogPath, Running: func() bool {
		st, err := p.a.rt.ContainerStatus(context.Background(), c.ID)
		return err == nil && st.State == runtime.ContainerRunning
	}}, nil
}

func (p kubeletProvider) Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, s kubeletapi.Streams) (int, error) {
	c, err := p.current(ctx, pod, container)
	if err != nil {
		return 0, err
	}
	stdio := runtime.Stdio{Stdin: s.Stdin}
	if s.Stdout != nil {
		stdio.Stdout = s.Stdout
	}
	if s.Stderr != nil {
		stdio.Stderr = s.Stderr
	}
	if s.TTY && s.Resize != nil {
		resize := make(chan runtime.TerminalSize)
		stdio.Resize = resize
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go forwardResizes(ctx, s.Resize, resize)
	}
	return p.a.rt.Exec(ctx, c.ID, cmd, stdio, s.TTY)
}

// forwardResizes converts the client's terminal sizes for the runtime until ctx ends or in
// closes.
func forwardResizes(ctx context.Context, in <-chan remotecommand.TerminalSize, out chan<- runtime.TerminalSize) {
	for {
		select {
		case size, ok := <-in:
			if !ok {
				return
			}
			select {
			case out <- runtime.TerminalSize{Width: size.Width, Height: size.Height}:
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// Attach streams the container's output from now on, read from its CRI log (the oci
// runtime's shim writes the main process's stdout/stderr there), and, for containers with
// stdin: true, writes the client's stdin to the process's stdin, which the runtime keeps
// open across attaches (stdinOnce is not honoured: the process never sees EOF). When the
// client closes stdin the session ends after a short linger for the replies. Containers with
// tty: true get ErrUnsupported: the runtime keeps no terminal for the main process.
func (p kubeletProvider) Attach(ctx context.Context, pod *corev1.Pod, container string, s kubeletapi.Streams) error {
	spec := containerSpec(pod, container)
	if spec != nil && spec.TTY {
		return fmt.Errorf("attach to %s/%s container %s: a container terminal (tty: true) is not kept by this runtime: %w", pod.Namespace, pod.Name, container, runtime.ErrUnsupported)
	}
	c, err := p.current(ctx, pod, container)
	if err != nil {
		return err
	}
	if c.State != runtime.ContainerRunning {
		return fmt.Errorf("attach to %s/%s container %s: not running: %w", pod.Namespace, pod.Name, container, runtime.ErrFailedPrecondition)
	}
	// Output is what the container writes from now on. "Now" is a timestamp, not the log's
	// current end: the followers below start after stdin is already being forwarded, and the
	// container's reply to it must not fall in between.
	since := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.Stdin != nil && spec != nil && spec.Stdin {
		w, err := p.a.rt.OpenStdin(ctx, c.ID)
		if err != nil {
			return fmt.Errorf("attach to %s/%s container %s: %w", pod.Namespace, pod.Name, container, err)
		}
		// Closing w ends a write blocked on a full pipe (w is on the poller); a Read on the
		// client's stdin ends when the server closes the connection after Attach returns.
		defer w.Close()
		go func() {
			io.Copy(w, s.Stdin)
			select {
			case <-time.After(attachLinger):
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	running := func() bool {
		st, err := p.a.rt.ContainerStatus(context.Background(), c.ID)
		return err == nil && st.State == runtime.ContainerRunning
	}
	follow := func(w io.Writer, stream crilog.Stream) error {
		err := crilog.Copy(ctx, w, c.LogPath, crilog.Options{Follow: true, Since: since, Stream: stream, Running: running})
		if ctx.Err() != nil {
			return nil // ended by the client or by its stdin closing
		}
		return err
	}
	switch {
	case s.Stdout != nil && s.Stderr != nil:
		errc := make(chan error, 1)
		go func() { errc <- follow(s.Stderr, crilog.StreamStderr) }()
		err := follow(s.Stdout, crilog.StreamStdout)
		if err2 := <-errc; err == nil {
			err = err2
		}
		return err
	case s.Stdout != nil:
		// With a terminal the client has one output, which gets both streams.
		stream := crilog.StreamStdout
		if s.TTY {
			stream = crilog.StreamAll
		}
		return follow(s.Stdout, stream)
	case s.Stderr != nil:
		return follow(s.Stderr, crilog.StreamStderr)
	}
	return follow(io.Discard, crilog.StreamAll) // still ends when the container does
}

// attachLinger is how long an attach keeps streaming output after the client closed stdin,
// so replies to its last input still reach it.
const attachLinger = time.Second

func containerSpec(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// PortForward connects from the host to the pod's IP, which the host reaches on its subnet
// bridge; a port the pod serves only on its loopback is not reachable this way.
func (p kubeletProvider) PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	if pod.Status.PodIP == "" {
		return fmt.Errorf("port-forward to pod %s/%s: no pod IP yet: %w", pod.Namespace, pod.Name, runtime.ErrFailedPrecondition)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s/%s port %d: %w", pod.Namespace, pod.Name, port, err)
	}
	return kubeletapi.ProxyStream(ctx, stream, conn)
}

// Stats reads CPU and memory of every sandbox from its cgroup (v1 here: cpuacct and memory
// controllers under the runtime's "vessel" parent).
func (p kubeletProvider) Stats(ctx context.Context) (*statsv1alpha1.Summary, error) {
	now := metav1.NewTime(time.Now())
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.a.cfg.HostName, StartTime: now}}
	for _, pod := range p.Pods() {
		sb := vesselv1.SandboxNameForPod(pod.UID)
		ps := statsv1alpha1.PodStats{
			PodRef:    statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)},
			StartTime: now,
			CPU:       cgroupCPU(sb, now),
			Memory:    cgroupMemory(sb, now),
		}
		if pod.Status.StartTime != nil {
			ps.StartTime = *pod.Status.StartTime
		}
		for _, c := range pod.Spec.Containers {
			ps.Containers = append(ps.Containers, statsv1alpha1.ContainerStats{Name: c.Name, StartTime: ps.StartTime, CPU: ps.CPU, Memory: ps.Memory})
			break // one process tree per sandbox cgroup: attributed to the first container
		}
		sum.Pods = append(sum.Pods, ps)
	}
	return sum, nil
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

func cgroupCPU(sandbox string, now metav1.Time) *statsv1alpha1.CPUStats {
	for _, dir := range []string{"cpuacct", "cpu,cpuacct"} {
		if ns, ok := readUint(filepath.Join("/sys/fs/cgroup", dir, "vessel", sandbox, "cpuacct.usage")); ok {
			return &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: &ns}
		}
	}
	return nil
}

func cgroupMemory(sandbox string, now metav1.Time) *statsv1alpha1.MemoryStats {
	dir := filepath.Join("/sys/fs/cgroup/memory/vessel", sandbox)
	usage, ok := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
	if !ok {
		return nil
	}
	ws := usage
	if b, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "total_inactive_file "); ok {
				if inactive, err := strconv.ParseUint(v, 10, 64); err == nil && inactive < ws {
					ws -= inactive
				}
			}
		}
	}
	return &statsv1alpha1.MemoryStats{Time: now, UsageBytes: &usage, WorkingSetBytes: &ws}
}
