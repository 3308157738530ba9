package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/hostagent"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/registry"
	"github.com/vessel-dev/vessel/internal/runtime"
	"github.com/vessel-dev/vessel/internal/runtime/oci"
	"github.com/vessel-dev/vessel/internal/testenv"
)

// hostFixture is one host agent with the real oci runtime and networking, over a subnet and a
// registry holding a busybox + vessel-demo image that this test built.
type hostFixture struct {
	env      *testenv.Env
	c        client.Client
	dir      string
	netnsDir string
	nets     *network.Manager
	images   *image.Store
	subnet   vesselv1.Subnet
	image    string // reference of the test image

	mu     sync.Mutex
	nextIP byte
	rt     *oci.Runtime
	cancel context.CancelFunc
	done   chan error
}

const (
	hostName   = "e2e-host"
	subnetName = "e2e-hostagent"
)

func newHostFixture(t *testing.T) *hostFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: run the suite as root (see README)")
	}
	for _, bin := range []string{"runc", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("needs %s: .ci/run installs it", bin)
		}
	}
	env := testenv.Get(t)
	scheme := k8sruntime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	vesselv1.AddToScheme(scheme)
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &hostFixture{env: env, c: c, dir: dir, netnsDir: filepath.Join(dir, "netns"), nextIP: 10}
	ctx := context.Background()
	// Runs last: the netns directory's own mount, and the Host and its Lease, which later
	// tests' schedulers would otherwise see as a (lost) host.
	t.Cleanup(func() {
		forceCleanHost(dir)
		_ = c.Delete(context.Background(), &vesselv1.Host{ObjectMeta: metav1.ObjectMeta{Name: hostName}})
		_ = env.Client.CoordinationV1().Leases(vesselv1.SystemNamespace).Delete(context.Background(), hostName, metav1.DeleteOptions{})
	})

	reg, err := registry.New(filepath.Join(dir, "registry"), registry.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	img := testImage(t)
	refs, err := registry.Push(ctx, reg.Addr(), []registry.Artifact{{Name: "e2e/busybox-demo:v1", Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	f.image = reg.Addr() + "/e2e/busybox-demo:v1"
	t.Logf("test image %s", refs[0])

	if f.nets, err = network.New(network.Config{NetnsDir: f.netnsDir}); err != nil {
		t.Fatal(err)
	}
	if f.images, err = image.Open(filepath.Join(dir, "images"), image.Options{}); err != nil {
		t.Fatal(err)
	}
	f.subnet = vesselv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: subnetName},
		Spec: vesselv1.SubnetSpec{CIDR: "10.231.20.0/24", Gateway: "10.231.20.1"}}
	if err := c.Create(ctx, &f.subnet); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	f.startAgent(t)
	t.Cleanup(func() {
		// Delete what is left through the agent, then clean the host.
		var sbs vesselv1.SandboxList
		c.List(ctx, &sbs, client.InNamespace(vesselv1.SystemNamespace))
		for _, sb := range sbs.Items {
			// A graceful delete lets the agent finish it; the Sandbox delete stands in for the
			// scheduler's garbage collection when the pod is already gone.
			env.Client.CoreV1().Pods(sb.Spec.Owner.Namespace).Delete(ctx, sb.Spec.Owner.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(1))})
			c.Delete(ctx, &sb)
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			c.List(ctx, &sbs, client.InNamespace(vesselv1.SystemNamespace))
			if len(sbs.Items) == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		f.stopAgent(t)
		if infos, err := f.rt.ListSandboxes(ctx); err == nil {
			for _, info := range infos {
				t.Logf("cleanup: removing leftover sandbox %s", info.ID)
				f.rt.RemoveSandbox(ctx, info.ID)
			}
		}
		f.nets.RemoveSubnet(ctx, subnetName)
		unix.Unmount(f.netnsDir, unix.MNT_DETACH)
		c.Delete(ctx, &f.subnet)
	})
	return f
}

func (f *hostFixture) startAgent(t *testing.T) {
	t.Helper()
	rt, err := oci.New(oci.Config{Root: filepath.Join(f.dir, "oci"), Network: f.nets, ShimArgv: testenv.ShimArgv(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := hostagent.New(hostagent.Config{
		HostName: hostName, Address: "127.0.0.1", DataDir: filepath.Join(f.dir, "host"),
		PollInterval: 300 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, f.env.Config, rt, f.images, f.nets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	select {
	case <-agent.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("agent stopped before ready: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("agent not ready after 60s")
	}
	f.mu.Lock()
	f.rt, f.cancel, f.done = rt, cancel, done
	f.mu.Unlock()
}

func (f *hostFixture) stopAgent(t *testing.T) {
	t.Helper()
	f.cancel()
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("agent Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("agent did not stop within 30s")
	}
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// testImage is busybox-static with its applets plus the vessel-demo server, built here.
func testImage(t testing.TB) v1.Image {
	t.Helper()
	bbPath, _ := exec.LookPath("busybox")
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(t.TempDir(), "vessel-demo")
	build := exec.Command("go", "build", "-trimpath", "-o", demo, "./cmd/vessel-demo")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vessel-demo: %v\n%s", err, out)
	}
	demoBin, err := os.ReadFile(demo)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) {
		tw.WriteHeader(&tar.Header{Name: name + "/", Mode: mode, Typeflag: tar.TypeDir})
	}
	file := func(name string, mode int64, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "root"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, bb)
	for _, applet := range []string{"sh", "echo", "cat", "sleep", "touch", "rm", "ls", "dd", "true", "false", "env", "wget", "head", "test", "nc", "printf"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777})
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	file("etc/group", 0o644, []byte("root:x:0:\n"))
	file("vessel-demo", 0o755, demoBin)
	tw.Close()
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin:/"}
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// runPod does what the scheduler would: picks an IP, creates the Node, creates the pod bound
// to it and the Sandbox vessel-system/p-<uid>. It returns the created pod.
func (f *hostFixture) runPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	f.mu.Lock()
	f.nextIP++
	ip := fmt.Sprintf("10.231.20.%d", f.nextIP)
	f.mu.Unlock()
	nodeName := vesselv1.NodeNameForIP(netip.MustParseAddr(ip))
	pod.Namespace = ns
	pod.Spec.NodeName = nodeName
	pod.Spec.SchedulerName = vesselv1.SchedulerName
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Key: vesselv1.LabelComputeType, Operator: corev1.TolerationOpExists})
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Image == "" {
			pod.Spec.Containers[i].Image = f.image
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Image == "" {
			pod.Spec.InitContainers[i].Image = f.image
		}
	}
	var created *corev1.Pod
	testenv.Eventually(t, 30*time.Second, "create pod "+pod.Name, func(ctx context.Context) error {
		var err error
		created, err = f.env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err // the default ServiceAccount appears shortly after the namespace
	})
	sbName := vesselv1.SandboxNameForPod(created.UID)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName,
		Labels:      map[string]string{vesselv1.LabelComputeType: vesselv1.ComputeTypeVessel},
		Annotations: map[string]string{vesselv1.AnnotationSandbox: vesselv1.SystemNamespace + "/" + sbName}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: vesselv1.LabelComputeType, Value: vesselv1.ComputeTypeVessel, Effect: corev1.TaintEffectNoSchedule}}}}
	if _, err := f.env.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	t.Cleanup(func() { f.env.Client.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{}) })
	sb := &vesselv1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: sbName, Namespace: vesselv1.SystemNamespace, Finalizers: []string{vesselv1.FinalizerSandbox},
			Labels: map[string]string{vesselv1.LabelHost: hostName, vesselv1.LabelPodNamespace: ns, vesselv1.LabelPodName: pod.Name, vesselv1.LabelPodUID: string(created.UID)}},
		Spec: vesselv1.SandboxSpec{
			Owner:     vesselv1.SandboxOwner{Kind: vesselv1.OwnerPod, Namespace: ns, Name: created.Name, UID: created.UID},
			Size:      vesselv1.SandboxSize{MilliVCPU: 500, MemoryMiB: 512, DiskGiB: 20},
			Host:      hostName,
			Network:   vesselv1.SandboxNetwork{Subnet: subnetName, IP: ip, Gateway: "10.231.20.1", PrefixLength: 24},
			Isolation: vesselv1.IsolationOCI, InitContainers: created.Spec.InitContainers, Containers: created.Spec.Containers,
			Volumes: created.Spec.Volumes, RestartPolicy: created.Spec.RestartPolicy,
			TerminationGracePeriodSeconds: created.Spec.TerminationGracePeriodSeconds, ServiceAccountName: created.Spec.ServiceAccountName,
		},
	}
	if err := f.c.Create(ctx, sb); err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	return created
}

func (f *hostFixture) getPod(ctx context.Context, p *corev1.Pod) (*corev1.Pod, error) {
	return f.env.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// expectPod waits until check accepts the pod.
func (f *hostFixture) expectPod(t *testing.T, p *corev1.Pod, timeout time.Duration, what string, check func(*corev1.Pod) error) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	testenv.Eventually(t, timeout, p.Name+": "+what, func(ctx context.Context) error {
		var err error
		if got, err = f.getPod(ctx, p); err != nil {
			return err
		}
		if err := check(got); err != nil {
			return fmt.Errorf("%w; status: phase=%s containers=%s", err, got.Status.Phase, brief(got.Status.ContainerStatuses))
		}
		return nil
	})
	return got
}

func brief(ss []corev1.ContainerStatus) string {
	var parts []string
	for _, s := range ss {
		state := "?"
		switch {
		case s.State.Running != nil:
			state = "running"
		case s.State.Waiting != nil:
			state = "waiting:" + s.State.Waiting.Reason + ":" + s.State.Waiting.Message
		case s.State.Terminated != nil:
			state = fmt.Sprintf("terminated:%s:%d", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
		parts = append(parts, fmt.Sprintf("%s[%s ready=%v restarts=%d]", s.Name, state, s.Ready, s.RestartCount))
	}
	return strings.Join(parts, " ")
}

func expectRunningReady(p *corev1.Pod) error {
	if p.Status.Phase != corev1.PodRunning || podCondition(p, corev1.PodReady) != corev1.ConditionTrue {
		return fmt.Errorf("not Running and Ready")
	}
	return nil
}

func (f *hostFixture) exec(t *testing.T, p *corev1.Pod, container string, argv ...string) string {
	t.Helper()
	p, err := f.getPod(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			id := runtime.ContainerID(strings.TrimPrefix(s.ContainerID, hostagent.ContainerIDPrefix))
			var out bytes.Buffer
			code, err := f.rt.Exec(context.Background(), id, argv, runtime.Stdio{Stdout: &out, Stderr: &out}, false)
			if err != nil || code != 0 {
				t.Fatalf("exec %v in %s: code %d, err %v: %s", argv, id, code, err, out.String())
			}
			return out.String()
		}
	}
	t.Fatalf("no container %s", container)
	return ""
}

func TestHostAgent(t *testing.T) {
	f := newHostFixture(t)
	env := f.env
	ns := env.Namespace(t)
	ctx := context.Background()

	// Host registration and its Lease.
	testenv.Eventually(t, 20*time.Second, "Host registered with a Lease", func(ctx context.Context) error {
		var h vesselv1.Host
		if err := f.c.Get(ctx, client.ObjectKey{Name: hostName}, &h); err != nil {
			return err
		}
		if h.Spec.Capacity.Cpu().IsZero() || h.Spec.Capacity.Memory().IsZero() || h.Spec.Capacity.Pods().Value() == 0 {
			return fmt.Errorf("capacity %v", h.Spec.Capacity)
		}
		_, err := env.Client.CoordinationV1().Leases(vesselv1.SystemNamespace).Get(ctx, hostName, metav1.GetOptions{})
		return err
	})

	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Data: map[string]string{"greeting": "hi", "file.txt": "from-configmap"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"},
		Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var web *corev1.Pod
	var webRunning time.Duration
	t.Run("pods", func(t *testing.T) {
		t.Run("web server runs, is Ready and answers on its pod IP", func(t *testing.T) {
			t.Parallel()
			begin := time.Now()
			web = f.runPod(t, ns, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(5)),
					Volumes: []corev1.Volume{
						{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
						{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
						{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
						{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
							{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
					},
					InitContainers: []corev1.Container{{Name: "init", Command: []string{"sh", "-c", "echo initialized > /work/init"},
						VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}}},
					Containers: []corev1.Container{{
						Name: "web", Command: []string{"/vessel-demo"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
							{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
							{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
							{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
							{Name: "COMBINED", Value: "$(GREETING)-$(POD_NAME)"},
						},
						EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/work"}, {Name: "mem", MountPath: "/mem"},
							{Name: "cfg", MountPath: "/etc/cfg"}, {Name: "sec", MountPath: "/etc/sec"}, {Name: "info", MountPath: "/etc/info"}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
						LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1, FailureThreshold: 5},
					}},
				},
			})
			got := f.expectPod(t, web, 90*time.Second, "Running and Ready", expectRunningReady)
			webRunning = time.Since(begin)
			t.Logf("web: create → Running+Ready in %s", webRunning.Round(time.Millisecond))
			sbIP := got.Status.PodIP
			if !strings.HasPrefix(sbIP, "10.231.20.") || got.Status.HostIP != "127.0.0.1" || got.Status.StartTime == nil {
				t.Errorf("podIP %q hostIP %q startTime %v", sbIP, got.Status.HostIP, got.Status.StartTime)
			}
			cs := got.Status.ContainerStatuses[0]
			if !cs.Ready || cs.Started == nil || !*cs.Started || cs.RestartCount != 0 || !strings.HasPrefix(cs.ContainerID, "vessel://") ||
				!strings.Contains(cs.ImageID, "@sha256:") || cs.Image != f.image || cs.State.Running == nil {
				t.Errorf("container status %+v", cs)
			}
			if ic := got.Status.InitContainerStatuses; len(ic) != 1 || ic[0].State.Terminated == nil || ic[0].State.Terminated.Reason != "Completed" {
				t.Errorf("init container status %+v", ic)
			}
			for _, c := range []corev1.PodConditionType{corev1.PodInitialized, corev1.ContainersReady, "PodReadyToStartContainers"} {
				if podCondition(got, c) != corev1.ConditionTrue {
					t.Errorf("condition %s = %q", c, podCondition(got, c))
				}
			}
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + net.JoinHostPort(sbIP, "8080") + "/")
			if err != nil {
				t.Fatalf("GET from the host: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) != "hello from web" {
				t.Errorf("body %q", body)
			}
			out := f.exec(t, got, "web", "sh", "-c",
				`echo "$POD_IP|$GREETING|$PASSWORD|$MEM_LIMIT|$COMBINED|$CM_greeting"; cat /work/init /etc/cfg/file.txt; echo; cat /etc/sec/password; echo; cat /etc/info/labels; echo; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token`)
			want := sbIP + "|hi|s3cret|512|hi-web|hi\ninitialized\nfrom-configmap\ns3cret\napp=\"web\"\n" + ns + "\ntoken\n"
			if out != want {
				t.Errorf("inside the container:\n%s\nwant:\n%s", out, want)
			}
			// The pod's node is kept Ready with a Lease.
			testenv.Eventually(t, 20*time.Second, "node Ready with a lease", func(ctx context.Context) error {
				n, err := env.Client.CoreV1().Nodes().Get(ctx, got.Spec.NodeName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				ready := false
				for _, c := range n.Status.Conditions {
					ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
				}
				if !ready {
					return fmt.Errorf("node conditions %v", n.Status.Conditions)
				}
				_, err = env.Client.CoordinationV1().Leases(hostagent.NodeLeaseNamespace).Get(ctx, n.Name, metav1.GetOptions{})
				return err
			})
			f.expectEvents(t, got, "Pulled", "Created", "Started")
		})

		t.Run("crashing container goes into CrashLoopBackOff", func(t *testing.T) {
			t.Parallel()
			p := f.runPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash"}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "crash", Command: []string{"sh", "-c", "echo dying; exit 3"}}}}})
			got := f.expectPod(t, p, 90*time.Second, "CrashLoopBackOff after 2 restarts", func(p *corev1.Pod) error {
				s := p.Status.ContainerStatuses
				if len(s) != 1 || s[0].RestartCount < 2 || s[0].State.Waiting == nil || s[0].State.Waiting.Reason != "CrashLoopBackOff" {
					return fmt.Errorf("not yet")
				}
				if t := s[0].LastTerminationState.Terminated; t == nil || t.ExitCode != 3 || t.Reason != "Error" {
					return fmt.Errorf("lastState %+v", s[0].LastTerminationState)
				}
				return nil
			})
			if got.Status.Phase != corev1.PodRunning || podCondition(got, corev1.PodReady) != corev1.ConditionFalse {
				t.Errorf("phase %s ready %s", got.Status.Phase, podCondition(got, corev1.PodReady))
			}
			f.expectEvents(t, got, "BackOff")

			// The back-off grows: the wait before restart 3 is longer than before restart 2
			// (10 s, then 20 s by default; seen from here, so with a margin, not exact).
			seen := map[int32]time.Time{}
			f.expectPod(t, p, 2*time.Minute, "restart 3", func(p *corev1.Pod) error {
				if s := p.Status.ContainerStatuses; len(s) == 1 {
					if _, ok := seen[s[0].RestartCount]; !ok {
						seen[s[0].RestartCount] = time.Now()
					}
					if s[0].RestartCount >= 3 {
						return nil
					}
				}
				return fmt.Errorf("not yet")
			})
			if t2, t3 := seen[2], seen[3]; !t2.IsZero() && !t3.IsZero() && t3.Sub(t2) < 15*time.Second {
				t.Errorf("restart 3 came %s after restart 2; the back-off should have grown to 20 s", t3.Sub(t2).Round(time.Second))
			}
		})

		t.Run("memory hog is OOMKilled", func(t *testing.T) {
			t.Parallel()
			p := f.runPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "oom"}, Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "hog", Command: []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}}}}}})
			f.expectPod(t, p, 60*time.Second, "Failed with OOMKilled", func(p *corev1.Pod) error {
				s := p.Status.ContainerStatuses
				if p.Status.Phase != corev1.PodFailed || len(s) != 1 || s[0].State.Terminated == nil || s[0].State.Terminated.Reason != "OOMKilled" {
					return fmt.Errorf("not yet")
				}
				return nil
			})
		})

		t.Run("restartPolicy Never pod that exits 0 Succeeds", func(t *testing.T) {
			t.Parallel()
			p := f.runPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job"}, Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "job", Command: []string{"sh", "-c", "echo done"}}}}})
			got := f.expectPod(t, p, 60*time.Second, "Succeeded", func(p *corev1.Pod) error {
				if p.Status.Phase != corev1.PodSucceeded {
					return fmt.Errorf("not yet")
				}
				return nil
			})
			s := got.Status.ContainerStatuses[0]
			if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 || s.State.Terminated.Reason != "Completed" || s.RestartCount != 0 {
				t.Errorf("status %s", brief(got.Status.ContainerStatuses))
			}
			if c := podCondition(got, corev1.PodReady); c != corev1.ConditionFalse {
				t.Errorf("Ready %s", c)
			}
		})

		t.Run("failing liveness probe restarts the container", func(t *testing.T) {
			t.Parallel()
			p := f.runPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "live"}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To(int64(2)),
				Containers: []corev1.Container{{Name: "live", Command: []string{"sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 600"},
					LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
						PeriodSeconds: 1, FailureThreshold: 2}}}}})
			got := f.expectPod(t, p, 90*time.Second, "restarted by liveness", func(p *corev1.Pod) error {
				s := p.Status.ContainerStatuses
				if len(s) != 1 || s[0].RestartCount < 1 {
					return fmt.Errorf("not yet")
				}
				return nil
			})
			f.expectEvents(t, got, "Unhealthy", "Killing")
		})

		t.Run("readiness probe gates Ready", func(t *testing.T) {
			t.Parallel()
			p := f.runPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ready"}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To(int64(2)),
				Containers: []corev1.Container{{Name: "app", Command: []string{"sh", "-c", "sleep 600"},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
						PeriodSeconds: 1}}}}})
			got := f.expectPod(t, p, 60*time.Second, "Running, not Ready", func(p *corev1.Pod) error {
				if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
					return fmt.Errorf("not running")
				}
				return nil
			})
			time.Sleep(3 * time.Second)
			if got, _ = f.getPod(ctx, got); podCondition(got, corev1.PodReady) != corev1.ConditionFalse || got.Status.ContainerStatuses[0].Ready {
				t.Fatalf("Ready before the probe passes: %s", brief(got.Status.ContainerStatuses))
			}
			f.exec(t, got, "app", "touch", "/tmp/ready")
			f.expectPod(t, p, 20*time.Second, "Ready once the probe passes", expectRunningReady)
		})
	})
	if t.Failed() || web == nil {
		return
	}

	t.Run("a new agent adopts running pods", func(t *testing.T) {
		before, err := f.getPod(ctx, web)
		if err != nil {
			t.Fatal(err)
		}
		f.stopAgent(t)
		f.startAgent(t)
		time.Sleep(3 * time.Second)
		after := f.expectPod(t, web, 30*time.Second, "still Running and Ready", expectRunningReady)
		b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
		if a.ContainerID != b.ContainerID || a.RestartCount != b.RestartCount || !a.State.Running.StartedAt.Equal(&b.State.Running.StartedAt) {
			t.Errorf("container changed across agent restart: before %+v after %+v", b, a)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + net.JoinHostPort(after.Status.PodIP, "8080") + "/")
		if err != nil {
			t.Fatalf("GET after restart: %v", err)
		}
		resp.Body.Close()
	})

	t.Run("deleting the pod tears everything down", func(t *testing.T) {
		got, err := f.getPod(ctx, web)
		if err != nil {
			t.Fatal(err)
		}
		sbID := vesselv1.SandboxNameForPod(got.UID)
		begin := time.Now()
		if err := env.Client.CoreV1().Pods(ns).Delete(ctx, web.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 60*time.Second, "pod and sandbox gone", func(ctx context.Context) error {
			if _, err := f.getPod(ctx, web); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod still there (%v)", err)
			}
			var sb vesselv1.Sandbox
			if err := f.c.Get(ctx, client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: sbID}, &sb); !apierrors.IsNotFound(err) {
				return fmt.Errorf("sandbox still there (%v)", err)
			}
			return nil
		})
		t.Logf("delete → pod gone in %s", time.Since(begin).Round(time.Millisecond))
		f.expectHostClean(t, sbID, got.Status.PodIP)
	})
}

func (f *hostFixture) expectEvents(t *testing.T, p *corev1.Pod, reasons ...string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "events "+strings.Join(reasons, ","), func(ctx context.Context) error {
		evs, err := f.env.Client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, e := range evs.Items {
			if e.Source.Component == hostagent.Component && e.Source.Host == p.Spec.NodeName {
				have[e.Reason] = true
			}
		}
		for _, r := range reasons {
			if !have[r] {
				return fmt.Errorf("no %s event (have %v)", r, have)
			}
		}
		return nil
	})
}

// expectHostClean checks the host has nothing left of a sandbox: netns, veth, cgroups, mounts,
// processes, state.
func (f *hostFixture) expectHostClean(t *testing.T, sbID, ip string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(f.netnsDir, sbID)); !os.IsNotExist(err) {
		t.Errorf("netns file still there (%v)", err)
	}
	if _, err := net.InterfaceByName(network.HostVethName(sbID)); err == nil {
		t.Errorf("veth %s still there", network.HostVethName(sbID))
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/vessel/" + sbID)
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/unified/vessel/" + sbID)
	if len(cgs)+len(cgs2) > 0 {
		t.Errorf("cgroups left: %v %v", cgs, cgs2)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, sbID) {
			t.Errorf("mount left: %s", line)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(sbID)) {
			t.Errorf("process left: %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	for _, d := range []string{filepath.Join(f.dir, "oci", "sandboxes", sbID), filepath.Join(f.dir, "host", "pods", sbID)} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("state dir %s still there", d)
		}
	}
	if addr, err := netip.ParseAddr(ip); err == nil {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(addr.String(), "8080"), 500*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("pod IP %s still answers", ip)
		}
	}
}
