package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// PodsOptions configures the pod start benchmark.
type PodsOptions struct {
	REST      *rest.Config
	Namespace string
	// Image is what every benchmark pod runs; it should be cached on the host already (the
	// numbers are meant to exclude a cold pull, like the Kubernetes start-up SLO).
	Image   string
	Command []string
	// Serial pods are started one after the other; then Burst pods at once.
	Serial, Burst int
}

// timeline is when the benchmark first saw each step of one pod, all measured client-side from
// the moment before its create call (server timestamps have only second resolution).
type timeline struct {
	start, admitted, scheduled, ready time.Time
	uid                               types.UID
	// steps are the host agent's own measurements of its steps (Sandbox.status.startup).
	steps map[string]time.Duration
}

// Pods measures pod create → Ready through the API, as a user sees it, for Serial pods one at a
// time and then Burst pods at once, with a per-phase breakdown:
//
//	admit           create call round trip (admission webhook included)
//	schedule        created → bound to a node (host choice, IP, Sandbox and Node objects)
//	network         the host agent's network and runtime sandbox set-up  ┐ measured by the
//	volumes         writing the pod's volumes (service-account token)    │ host agent
//	image           resolving the image (cache, or registry for :latest) │ (Sandbox.status
//	container start creating and starting the container                  ┘ .startup)
//	ready           the rest of bound → Ready: the agent picking the sandbox up, status
//	                writes, the watch reaching the client
func Pods(ctx context.Context, w io.Writer, o PodsOptions) error {
	cfg := rest.CopyConfig(o.REST)
	cfg.QPS, cfg.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := vesselv1.AddToScheme(scheme); err != nil {
		return err
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	tr := newTracker()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := tr.watch(wctx, cs, o.Namespace, "vessel-bench="+run); err != nil {
		return err
	}
	defer func() { // delete every benchmark pod, whatever happened
		_ = cs.CoreV1().Pods(o.Namespace).DeleteCollection(context.Background(), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "vessel-bench=" + run})
	}()

	create := func(name string) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"vessel-bench": run}},
			Spec: corev1.PodSpec{
				Containers:                    []corev1.Container{{Name: "c", Image: o.Image, Command: o.Command}},
				TerminationGracePeriodSeconds: new(int64),
			},
		}
		tr.started(name)
		if _, err := cs.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		tr.admitted(name)
		return nil
	}

	var serial []string
	for i := range o.Serial {
		name := fmt.Sprintf("bench-%s-s%d", run, i)
		if err := create(name); err != nil {
			return err
		}
		if err := tr.waitReady(ctx, name, 2*time.Minute); err != nil {
			return err
		}
		if err := tr.readSteps(ctx, cl, name); err != nil {
			return err
		}
		serial = append(serial, name)
		_ = cs.CoreV1().Pods(o.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
	if o.Serial > 0 {
		fmt.Fprintf(w, "serial: %d pods, one at a time (image %s, cached)\n", o.Serial, o.Image)
		tr.report(w, serial)
	}
	if o.Burst == 0 {
		return nil
	}
	// Let the serial pods' teardown finish so the burst has the host to itself.
	time.Sleep(3 * time.Second)
	var burst []string
	var wg sync.WaitGroup
	errs := make(chan error, o.Burst)
	begin := time.Now()
	for i := range o.Burst {
		name := fmt.Sprintf("bench-%s-b%d", run, i)
		burst = append(burst, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := create(name); err != nil {
				errs <- err
				return
			}
			if err := tr.waitReady(ctx, name, 3*time.Minute); err != nil {
				errs <- err
				return
			}
			errs <- tr.readSteps(ctx, cl, name)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "burst: %d pods at once: all Ready after %s\n", o.Burst, time.Since(begin).Round(time.Millisecond))
	tr.report(w, burst)
	return nil
}

type tracker struct {
	mu    sync.Mutex
	pods  map[string]*timeline
	ready map[string]chan struct{}
}

func newTracker() *tracker {
	return &tracker{pods: map[string]*timeline{}, ready: map[string]chan struct{}{}}
}

func (t *tracker) entry(name string) (*timeline, chan struct{}) {
	if t.pods[name] == nil {
		t.pods[name] = &timeline{}
		t.ready[name] = make(chan struct{})
	}
	return t.pods[name], t.ready[name]
}

func (t *tracker) started(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tl, _ := t.entry(name)
	tl.start = time.Now()
}

func (t *tracker) admitted(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tl, _ := t.entry(name)
	tl.admitted = time.Now()
}

func (t *tracker) watch(ctx context.Context, cs kubernetes.Interface, ns, selector string) error {
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("watch benchmark pods: %w", err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			t.observe(pod, time.Now())
		}
	}()
	return nil
}

func (t *tracker) observe(pod *corev1.Pod, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tl, ready := t.entry(pod.Name)
	mark := func(at *time.Time, cond bool) {
		if cond && at.IsZero() {
			*at = now
		}
	}
	tl.uid = pod.UID
	mark(&tl.scheduled, pod.Spec.NodeName != "")
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && tl.ready.IsZero() {
			tl.ready = now
			close(ready)
		}
	}
}

func (t *tracker) waitReady(ctx context.Context, name string, timeout time.Duration) error {
	t.mu.Lock()
	_, ready := t.entry(name)
	t.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("pod %s not Ready after %s", name, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readSteps copies the host agent's step durations for a Ready pod from its Sandbox.
func (t *tracker) readSteps(ctx context.Context, cl client.Client, name string) error {
	t.mu.Lock()
	uid := t.pods[name].uid
	t.mu.Unlock()
	var sb vesselv1.Sandbox
	key := client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: vesselv1.SandboxNameForPod(uid)}
	// The Sandbox's status is written just after the pod's; give it a moment.
	for range 50 {
		if err := cl.Get(ctx, key, &sb); err != nil {
			return fmt.Errorf("read sandbox of pod %s: %w", name, err)
		}
		if len(sb.Status.Startup) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tl := t.pods[name]
	tl.steps = map[string]time.Duration{}
	for _, s := range sb.Status.Startup {
		tl.steps[s.Step] = s.Duration.Duration
	}
	return nil
}

func (t *tracker) report(w io.Writer, names []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hostSteps := []struct{ step, label string }{
		{vesselv1.StepNetwork, "  network"},
		{vesselv1.StepVolumes, "  volumes"},
		{vesselv1.StepImage, "  image"},
		{vesselv1.StepContainerStart, "  container start"},
	}
	var total, admit, sched, ready Durations
	host := make([]Durations, len(hostSteps))
	for _, n := range names {
		tl := t.pods[n]
		total = append(total, tl.ready.Sub(tl.start))
		admit = append(admit, tl.admitted.Sub(tl.start))
		sched = append(sched, nonNegative(tl.scheduled.Sub(tl.admitted)))
		rest := tl.ready.Sub(tl.scheduled)
		for i, s := range hostSteps {
			host[i] = append(host[i], tl.steps[s.step])
			rest -= tl.steps[s.step]
		}
		ready = append(ready, nonNegative(rest))
	}
	total.Report(w, "  create → Ready")
	admit.Report(w, "  admit")
	sched.Report(w, "  schedule")
	for i, s := range hostSteps {
		host[i].Report(w, s.label)
	}
	ready.Report(w, "  ready (rest)")
}

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }
