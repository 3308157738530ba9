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
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
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
	start, admitted, scheduled, addressed, running, ready time.Time
}

// Pods measures pod create → Ready through the API, as a user sees it, for Serial pods one at a
// time and then Burst pods at once, with a per-phase breakdown:
//
//	admit      create call round trip (admission webhook included)
//	schedule   created → bound to a node (host choice, IP, Sandbox and Node objects)
//	sandbox    bound → pod IP reported (network namespace, runtime sandbox)
//	containers pod IP → container running (image from cache, create, start)
//	ready      running → Ready condition
func Pods(ctx context.Context, w io.Writer, o PodsOptions) error {
	cfg := rest.CopyConfig(o.REST)
	cfg.QPS, cfg.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(cfg)
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
			errs <- tr.waitReady(ctx, name, 3*time.Minute)
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
	mark(&tl.scheduled, pod.Spec.NodeName != "")
	mark(&tl.addressed, pod.Status.PodIP != "")
	running := false
	for _, cs := range pod.Status.ContainerStatuses {
		running = running || cs.State.Running != nil
	}
	mark(&tl.running, running)
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

func (t *tracker) report(w io.Writer, names []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var total, admit, sched, sandbox, containers, ready Durations
	for _, n := range names {
		tl := t.pods[n]
		// A step reported in the same status update as the next one gets zero time.
		addressed, running := orLater(tl.addressed, tl.running), orLater(tl.running, tl.ready)
		total = append(total, tl.ready.Sub(tl.start))
		admit = append(admit, tl.admitted.Sub(tl.start))
		sched = append(sched, nonNegative(tl.scheduled.Sub(tl.admitted)))
		sandbox = append(sandbox, nonNegative(addressed.Sub(tl.scheduled)))
		containers = append(containers, nonNegative(running.Sub(addressed)))
		ready = append(ready, nonNegative(tl.ready.Sub(running)))
	}
	total.Report(w, "  create → Ready")
	admit.Report(w, "  admit")
	sched.Report(w, "  schedule")
	sandbox.Report(w, "  sandbox (network, runtime)")
	containers.Report(w, "  containers (image, start)")
	ready.Report(w, "  ready")
}

func orLater(t, later time.Time) time.Time {
	if t.IsZero() {
		return later
	}
	return t
}

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }
