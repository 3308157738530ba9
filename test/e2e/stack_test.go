package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/controller"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/testenv"
)

// stack is a whole `vessel up` in a child process: control plane, controller, scheduler, local
// registry and this machine as its host, with its own data directory.
type stack struct {
	t             testing.TB // the test owning the stack (not a subtest), which cleans it up
	dir, registry string
	args          []string
	up            *upProcess
	cs            kubernetes.Interface
	ctrl          client.Client
}

func startStack(t testing.TB) *stack {
	t.Helper()
	dir := t.TempDir()
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, registry: "127.0.0.1:" + strconv.Itoa(ports[0])}
	s.args = append(upArgs(t, dir), "--registry-port", strconv.Itoa(ports[0]))
	// Registered first, so it runs last, even when the cleanup below fails half-way.
	t.Cleanup(func() {
		if s.up != nil {
			_ = s.up.cmd.Process.Kill()
		}
		forceCleanHost(dir)
		// The default Subnet's bridge and NAT rule outlive vessel up on purpose (the Subnet does);
		// the stack's Subnet goes with its data directory.
		if nets, err := network.New(network.Config{NetnsDir: filepath.Join(dir, "run", "netns")}); err == nil {
			if err := nets.RemoveSubnet(context.Background(), "default"); err != nil {
				t.Errorf("remove the default subnet's bridge: %v", err)
			}
		}
	})
	if s.up, err = launchUp(t, s.args...); err != nil {
		t.Fatal(err)
	}
	s.cs = clientFor(t, dir)
	cfg := restConfigFor(t, dir)
	if s.ctrl, err = client.New(cfg, client.Options{Scheme: controller.Scheme()}); err != nil {
		t.Fatal(err)
	}
	// Leave nothing running: pods first (their sandboxes live on after vessel up stops, by
	// design, to be adopted by the next start), then vessel up, then the netns directory mount.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_ = s.cs.AppsV1().Deployments("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = s.cs.BatchV1().Jobs("default").DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}, metav1.ListOptions{})
		_ = s.cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		for ctx.Err() == nil {
			var sbs vesselv1.SandboxList
			if err := s.ctrl.List(ctx, &sbs); err != nil || len(sbs.Items) == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if s.up != nil {
			s.up.stop(t)
		}
	})
	return s
}

// restart kills vessel up without letting it clean anything (as a crash would) and starts it
// again on the same data directory.
func (s *stack) restart(t *testing.T) {
	t.Helper()
	_ = s.up.cmd.Process.Kill()
	<-s.up.exited
	s.up = nil
	up, err := launchUp(t, s.args...) // ended by the stack's cleanup, not when a subtest ends
	if err != nil {
		t.Fatal(err)
	}
	s.up = up
}

// pushTestImage pushes busybox + the demo server (see testImage) to the stack's registry.
func (s *stack) pushTestImage(t testing.TB) string {
	t.Helper()
	ref := s.registry + "/e2e/toolbox:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, testImage(t)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func demoDeployment(image string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: image, Command: []string{"/vessel-demo"},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}}},
			},
		},
	}
}

// readyPods waits until deployment web has n Ready pods and returns them.
func (s *stack) readyPods(t testing.TB, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("%d Ready pods of web", n), func(ctx context.Context) error {
		list, err := s.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		pods = nil
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podCondition(&p, corev1.PodReady) == corev1.ConditionTrue {
				pods = append(pods, p)
			}
		}
		if len(pods) != n || len(list.Items) != n {
			return fmt.Errorf("%d of %d pods Ready", len(pods), len(list.Items))
		}
		return nil
	})
	return pods
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestVesselUpRunsPods(t *testing.T) {
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	deployments := s.cs.AppsV1().Deployments("default")
	if _, err := deployments.Create(ctx, demoDeployment(image, 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := s.readyPods(t, 3)

	t.Run("one vessel node per pod, named after its IP", func(t *testing.T) {
		nodes, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: vesselv1.LabelComputeType + "=vessel"})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 3 {
			t.Fatalf("%d vessel nodes, want 3", len(nodes.Items))
		}
		for _, p := range pods {
			want := "vessel-" + strings.ReplaceAll(p.Status.PodIP, ".", "-")
			if p.Spec.NodeName != want {
				t.Errorf("pod %s with IP %s is on node %q, want %q", p.Name, p.Status.PodIP, p.Spec.NodeName, want)
			}
		}
	})

	t.Run("each pod answers HTTP from the host", func(t *testing.T) {
		for _, p := range pods {
			body, err := httpGet("http://" + p.Status.PodIP + ":8080/")
			if err != nil || !strings.Contains(body, p.Name) {
				t.Errorf("GET pod %s at %s: %q, %v", p.Name, p.Status.PodIP, body, err)
			}
		}
	})

	t.Run("another pod reaches them", func(t *testing.T) {
		var script strings.Builder
		for _, p := range pods {
			// nc, not wget: Debian's static busybox wget crashes in its resolver.
			fmt.Fprintf(&script, "out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s 8080) || exit 1; case \"$out\" in *%s*) ;; *) exit 2;; esac\n", p.Status.PodIP, p.Name)
		}
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "reach"},
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr.To[int32](0),
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "wget", Image: image, Command: []string{"/bin/sh", "-c", script.String()}}},
				}},
			},
		}
		if _, err := s.cs.BatchV1().Jobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, "job reach Succeeded", func(ctx context.Context) error {
			j, err := s.cs.BatchV1().Jobs("default").Get(ctx, "reach", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if j.Status.Failed > 0 {
				pods, _ := s.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=reach"})
				for _, p := range pods.Items {
					t.Logf("job pod %s: %s", p.Name, brief(p.Status.ContainerStatuses))
				}
				t.Fatalf("job reach failed: a pod could not reach the others (exit 1: no answer, 2: wrong answer)")
			}
			if j.Status.Succeeded != 1 {
				return fmt.Errorf("succeeded %d", j.Status.Succeeded)
			}
			return nil
		})
	})

	t.Run("host agent reports each start step, in the Sandbox and on the node's /metrics", func(t *testing.T) {
		p := pods[0]
		// The agent writes the Sandbox's status just after the pod's, and observes the histogram
		// once that write has landed.
		var sb vesselv1.Sandbox
		testenv.Eventually(t, 20*time.Second, "start steps in the Sandbox's status", func(ctx context.Context) error {
			if err := s.ctrl.Get(ctx, client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(p.UID)}, &sb); err != nil {
				return err
			}
			if len(sb.Status.Startup) == 0 {
				return fmt.Errorf("no status.startup yet")
			}
			return nil
		})
		var steps []string
		for _, st := range sb.Status.Startup {
			steps = append(steps, st.Step)
			// Every step of this pod does real work: a netns, a token volume, an image lookup, runc.
			if st.Duration.Duration <= 0 {
				t.Errorf("step %s took %v", st.Step, st.Duration.Duration)
			}
		}
		want := []string{vesselv1.StepNetwork, vesselv1.StepVolumes, vesselv1.StepImage, vesselv1.StepContainerStart}
		if !slices.Equal(steps, want) {
			t.Errorf("startup steps %v, want %v", steps, want)
		}
		// Three pods started on this host so far (the restart subtest comes later).
		re := regexp.MustCompile(`(?m)^vessel_sandbox_start_step_duration_seconds_count\{step="containerStart"\} (\d+)$`)
		testenv.Eventually(t, 20*time.Second, "containerStart histogram on the node's /metrics", func(ctx context.Context) error {
			raw, err := s.cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", p.Spec.NodeName, "proxy/metrics").DoRaw(ctx)
			if err != nil {
				return fmt.Errorf("node metrics: %w: %s", err, raw)
			}
			m := re.FindSubmatch(raw)
			if m == nil {
				return fmt.Errorf("no containerStart histogram in:\n%s", raw)
			}
			if n, _ := strconv.Atoi(string(m[1])); n < 3 {
				return fmt.Errorf("containerStart observed %d times, want at least 3", n)
			}
			return nil
		})
	})

	t.Run("size annotation and sandbox limits follow the size table", func(t *testing.T) {
		p := pods[0]
		if got := p.Annotations[vesselv1.AnnotationCapacityProvisioned]; got != "0.25vCPU 0.5GB" {
			t.Errorf("capacity annotation %q, want 0.25vCPU 0.5GB", got)
		}
		sb := vesselv1.SandboxNameForPod(p.UID)
		mem := readCgroup(t, "memory", sb, "memory.limit_in_bytes")
		if mem != strconv.Itoa(512<<20) {
			t.Errorf("sandbox memory limit %s, want %d (0.5 GB)", mem, 512<<20)
		}
		quota, period := readCgroup(t, "cpu", sb, "cpu.cfs_quota_us"), readCgroup(t, "cpu", sb, "cpu.cfs_period_us")
		if q, _ := strconv.Atoi(quota); period != "100000" || q != 25000 {
			t.Errorf("sandbox cpu quota %s/%s, want 25000/100000 (0.25 vCPU)", quota, period)
		}
	})

	t.Run("pods survive a crash and restart of vessel up", func(t *testing.T) {
		if _, err := deployments.Patch(ctx, "web", "application/merge-patch+json", []byte(`{"spec":{"replicas":5}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		before := map[string]string{}
		for _, p := range s.readyPods(t, 5) {
			before[p.Name] = p.Status.ContainerStatuses[0].ContainerID + " " + p.Status.PodIP
		}
		s.restart(t)
		after := s.readyPods(t, 5)
		for _, p := range after {
			got := p.Status.ContainerStatuses[0].ContainerID + " " + p.Status.PodIP
			if before[p.Name] != got {
				t.Errorf("pod %s: container and IP %q before the restart, %q after", p.Name, before[p.Name], got)
			}
			if body, err := httpGet("http://" + p.Status.PodIP + ":8080/"); err != nil || !strings.Contains(body, p.Name) {
				t.Errorf("pod %s after restart: %q, %v", p.Name, body, err)
			}
		}
	})

	t.Run("scale to zero leaves nothing behind", func(t *testing.T) {
		if _, err := deployments.Patch(ctx, "web", "application/merge-patch+json", []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		_ = s.cs.BatchV1().Jobs("default").Delete(ctx, "reach", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
		s.expectEmpty(t)
	})
}

// TestVesselUpCreateDeleteCycles creates and deletes 100 pods, ten at a time, and then checks
// the host, not only the API, for anything left behind.
func TestVesselUpCreateDeleteCycles(t *testing.T) {
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	for round := range 10 {
		for i := range 10 {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cycle-%d-%d", round, i), Labels: map[string]string{"app": "cycle"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image, Command: []string{"/vessel-demo"}}},
					TerminationGracePeriodSeconds: ptr.To[int64](5)},
			}
			if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("round %d: 10 pods Running", round), func(ctx context.Context) error {
			list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=cycle"})
			if err != nil {
				return err
			}
			running := 0
			for _, p := range list.Items {
				if p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
			if running != 10 {
				return fmt.Errorf("%d Running", running)
			}
			return nil
		})
		if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app=cycle"}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("round %d: pods gone", round), func(ctx context.Context) error {
			list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=cycle"})
			if err == nil && len(list.Items) > 0 {
				err = fmt.Errorf("%d pods left", len(list.Items))
			}
			return err
		})
	}
	s.expectEmpty(t)
}

// expectEmpty waits until the cluster has no pods, Sandboxes or Vessel nodes and no address is
// allocated, then checks the host for leftovers of any sandbox.
func (s *stack) expectEmpty(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, "no pods, sandboxes, vessel nodes or allocated IPs", func(ctx context.Context) error {
		pods, err := s.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		nodes, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: vesselv1.LabelComputeType + "=vessel"})
		if err != nil {
			return err
		}
		var sbs vesselv1.SandboxList
		if err := s.ctrl.List(ctx, &sbs); err != nil {
			return err
		}
		var subnet vesselv1.Subnet
		if err := s.ctrl.Get(ctx, client.ObjectKey{Name: "default"}, &subnet); err != nil {
			return err
		}
		if n := len(pods.Items) + len(nodes.Items) + len(sbs.Items); n > 0 || subnet.Status.Allocated != 0 {
			return fmt.Errorf("%d pods, %d nodes, %d sandboxes, %d addresses allocated", len(pods.Items), len(nodes.Items), len(sbs.Items), subnet.Status.Allocated)
		}
		return nil
	})
	entries, _ := os.ReadDir(filepath.Join(s.dir, "run", "netns"))
	for _, e := range entries {
		t.Errorf("network namespace %s left", e.Name())
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, "vsv") || strings.HasPrefix(i.Name, "vst") {
			t.Errorf("interface %s left", i.Name)
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/vessel/p-*")
	for _, c := range cgroups {
		t.Errorf("cgroup %s left", c)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, s.dir) && !strings.Contains(line, filepath.Join(s.dir, "run", "netns")) {
			t.Errorf("mount left: %s", line)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(filepath.Join(s.dir, "run"))) {
			t.Errorf("process left: %q", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	for _, d := range []string{filepath.Join(s.dir, "run", "oci", "sandboxes"), filepath.Join(s.dir, "host", "pods")} {
		if left, _ := os.ReadDir(d); len(left) > 0 {
			t.Errorf("%d state directories left in %s", len(left), d)
		}
	}
}

func readCgroup(t *testing.T, controller, sandbox, file string) string {
	t.Helper()
	matches, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/%s/vessel/%s/%s", controller, sandbox, file))
	if len(matches) == 0 {
		t.Fatalf("no %s cgroup file %s for sandbox %s", controller, file, sandbox)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// forceCleanHost removes whatever a stack under dir left on the host after a failure that kept
// it from tearing its sandboxes down: processes, mounts and, with them, network namespaces.
// Passing tests leave nothing for it to do (expectEmpty checks that separately).
func forceCleanHost(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(dir)) {
			if pid, err := strconv.Atoi(strings.Split(p, "/")[2]); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/vessel/p-*")
	for _, c := range cgroups {
		_ = os.Remove(c) // only empty ones go; live sandboxes of other tests stay
	}
}
