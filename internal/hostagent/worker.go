package hostagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime"
)

// worker owns one Sandbox: every change to it goes through its goroutine, so steps for one
// sandbox never race and a slow step (pull, grace period) never holds up another sandbox.
// Its in-memory state is a cache of what is on the host and in the API; losing it (agent
// restart) only costs a re-pull check and resets back-off timers.
type worker struct {
	a    *Agent
	name string
	kick chan struct{}
	log  *slog.Logger

	created  bool
	vols     map[string]string
	images   map[string]*image.Image
	waiting  map[string]*corev1.ContainerStateWaiting
	restarts map[string]*backoff
	pulls    map[string]*backoff
	probes   map[runtime.ContainerID]*probeEntry
	// reported remembers events already emitted for an instance (BackOff, Killing).
	reported  map[string]bool
	recorder  record.EventRecorder
	recNode   string
	startTime time.Time
	startup   startupClock
}

type probeEntry struct {
	cancel context.CancelFunc
	res    *probeResults
}

func newWorker(a *Agent, name string) *worker {
	return &worker{
		a: a, name: name, kick: make(chan struct{}, 1), log: a.log.With("sandbox", name),
		images: map[string]*image.Image{}, waiting: map[string]*corev1.ContainerStateWaiting{},
		restarts: map[string]*backoff{}, pulls: map[string]*backoff{}, probes: map[runtime.ContainerID]*probeEntry{},
		reported: map[string]bool{},
	}
}

func (w *worker) run(ctx context.Context) {
	defer w.stopProbes()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		next, done := w.sync(ctx)
		if done {
			return
		}
		if next <= 0 {
			next = w.a.cfg.PollInterval
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.kick:
			t.Stop()
		case <-t.C:
		}
		// Re-arm so the loop syncs once per wake-up.
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

func (w *worker) event(obj *corev1.Pod, typ, reason, msgFmt string, args ...any) {
	if obj == nil || w.recorder == nil {
		return
	}
	w.recorder.Eventf(obj, typ, reason, msgFmt, args...)
}

// sync converges the sandbox one step; it returns when to look again and whether the worker
// is finished (the Sandbox is gone).
func (w *worker) sync(ctx context.Context) (time.Duration, bool) {
	a := w.a
	sb, err := a.sandbox(ctx, w.name)
	if err != nil {
		w.log.WarnContext(ctx, "read sandbox", "err", err)
		return time.Second, false
	}
	if sb == nil || sb.Spec.Host != a.cfg.HostName {
		// Gone (or moved away) without us seeing the deletion: clean the host.
		if err := w.teardown(ctx, nil, nil, 0); err != nil {
			w.log.WarnContext(ctx, "teardown", "err", err)
			return 2 * time.Second, false
		}
		return 0, true
	}
	if sb.Spec.Owner.Kind != vesselv1.OwnerPod {
		return time.Minute, false // Tasks are run by the ECS front end's path (not yet)
	}
	pod, err := a.pod(ctx, sb.Spec.Owner.Namespace, sb.Spec.Owner.Name)
	if err != nil {
		return time.Second, false
	}
	if pod != nil && pod.UID != sb.Spec.Owner.UID {
		pod = nil
	}
	if pod != nil {
		node := nodeName(sb.Spec.Network.IP)
		if w.recNode != node {
			w.recorder = a.broadcaster.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: Component, Host: node})
			w.recNode = node
		}
	}

	switch {
	case sb.DeletionTimestamp != nil:
		if err := w.teardown(ctx, sb, pod, gracePeriod(pod, sb)); err != nil {
			w.log.WarnContext(ctx, "teardown", "err", err)
			return 2 * time.Second, false
		}
		if err := w.removeFinalizer(ctx, sb); err != nil {
			return time.Second, false
		}
		return 0, true
	case pod != nil && pod.DeletionTimestamp != nil:
		if err := w.teardown(ctx, sb, pod, gracePeriod(pod, sb)); err != nil {
			w.log.WarnContext(ctx, "teardown", "err", err)
			return 2 * time.Second, false
		}
		if err := a.client.Delete(ctx, sb); err != nil && !apierrors.IsNotFound(err) {
			return time.Second, false
		}
		if err := a.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID},
		}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.WarnContext(ctx, "delete pod", "err", err)
			return time.Second, false
		}
		if err := w.removeFinalizer(ctx, sb); err != nil {
			return time.Second, false
		}
		w.log.InfoContext(ctx, "pod deleted", "pod", pod.Namespace+"/"+pod.Name)
		return 0, true
	case pod == nil:
		// The owner is gone; the scheduler deletes the Sandbox. Stop the containers meanwhile.
		if err := w.teardown(ctx, sb, nil, gracePeriod(nil, sb)); err != nil {
			w.log.WarnContext(ctx, "teardown", "err", err)
		}
		return 10 * time.Second, false
	}
	if !controllerutil.ContainsFinalizer(sb, vesselv1.FinalizerSandbox) {
		patch := client.MergeFrom(sb.DeepCopy())
		controllerutil.AddFinalizer(sb, vesselv1.FinalizerSandbox)
		if err := a.client.Patch(ctx, sb, patch); err != nil {
			return time.Second, false
		}
	}
	return w.runPod(ctx, sb, pod)
}

func gracePeriod(pod *corev1.Pod, sb *vesselv1.Sandbox) time.Duration {
	secs := int64(30)
	switch {
	case pod != nil && pod.DeletionGracePeriodSeconds != nil:
		secs = *pod.DeletionGracePeriodSeconds
	case pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil:
		secs = *pod.Spec.TerminationGracePeriodSeconds
	case sb != nil && sb.Spec.TerminationGracePeriodSeconds != nil:
		secs = *sb.Spec.TerminationGracePeriodSeconds
	}
	// As the kubelet: at least 2 s so preStop hooks and SIGTERM get a chance.
	return time.Duration(max(secs, 2)) * time.Second
}

func (w *worker) removeFinalizer(ctx context.Context, sb *vesselv1.Sandbox) error {
	if !controllerutil.ContainsFinalizer(sb, vesselv1.FinalizerSandbox) {
		return nil
	}
	patch := client.MergeFrom(sb.DeepCopy())
	controllerutil.RemoveFinalizer(sb, vesselv1.FinalizerSandbox)
	if err := w.a.client.Patch(ctx, sb, patch); err != nil && !apierrors.IsNotFound(err) {
		w.log.WarnContext(ctx, "remove finalizer", "err", err)
		return err
	}
	return nil
}

func (w *worker) facts(sb *vesselv1.Sandbox) podFacts {
	return podFacts{PodIP: sb.Spec.Network.IP, HostIP: w.a.cfg.Address, NodeName: nodeName(sb.Spec.Network.IP), Size: sb.Spec.Size}
}

// ensureSandbox prepares the runtime sandbox (network included) once per worker lifetime.
func (w *worker) ensureSandbox(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod) error {
	if w.created {
		return nil
	}
	a := w.a
	var subnet vesselv1.Subnet
	if err := a.client.Get(ctx, client.ObjectKey{Name: sb.Spec.Network.Subnet}, &subnet); err != nil {
		return fmt.Errorf("subnet %s: %w", sb.Spec.Network.Subnet, err)
	}
	cidr, err := netip.ParsePrefix(subnet.Spec.CIDR)
	if err != nil {
		return fmt.Errorf("subnet %s: %w", subnet.Name, err)
	}
	gw, err := netip.ParseAddr(subnet.Spec.Gateway)
	if err != nil {
		return fmt.Errorf("subnet %s: %w", subnet.Name, err)
	}
	if err := a.nets.EnsureSubnet(ctx, network.SubnetConfig{Name: subnet.Name, CIDR: cidr.Masked(), Gateway: gw}); err != nil {
		return err
	}
	spec, err := w.sandboxSpec(sb, pod)
	if err != nil {
		return err
	}
	if err := a.rt.CreateSandbox(ctx, spec); err != nil {
		return err
	}
	w.created = true
	return nil
}

func (w *worker) sandboxSpec(sb *vesselv1.Sandbox, pod *corev1.Pod) (runtime.SandboxSpec, error) {
	ip, err := netip.ParseAddr(sb.Spec.Network.IP)
	if err != nil {
		return runtime.SandboxSpec{}, fmt.Errorf("sandbox ip: %w", err)
	}
	gw, err := netip.ParseAddr(sb.Spec.Network.Gateway)
	if err != nil {
		return runtime.SandboxSpec{}, fmt.Errorf("sandbox gateway: %w", err)
	}
	var mac net.HardwareAddr
	if sb.Spec.Network.MAC != "" {
		if mac, err = net.ParseMAC(sb.Spec.Network.MAC); err != nil {
			return runtime.SandboxSpec{}, fmt.Errorf("sandbox mac: %w", err)
		}
	}
	hostname := sb.Spec.Hostname
	if hostname == "" {
		hostname = pod.Name
		if pod.Spec.Hostname != "" {
			hostname = pod.Spec.Hostname
		}
	}
	spec := runtime.SandboxSpec{
		ID: sb.Name, Hostname: hostname,
		Network:   network.SandboxNet{ID: sb.Name, Subnet: sb.Spec.Network.Subnet, IP: ip, PrefixLen: int(sb.Spec.Network.PrefixLength), MAC: mac, Gateway: gw},
		Resources: runtime.Resources{MilliCPU: sb.Spec.Size.MilliVCPU, MemoryBytes: sb.Spec.Size.MemoryMiB << 20},
		DNS:       dnsConfig(pod, w.a.cfg.ClusterDNS, w.a.cfg.ClusterDomain),
		Labels: map[string]string{runtimeLabelSandboxUID: string(sb.UID), runtimeLabelPodUID: string(sb.Spec.Owner.UID),
			vesselv1.LabelPodNamespace: sb.Spec.Owner.Namespace, vesselv1.LabelPodName: sb.Spec.Owner.Name},
	}
	for _, ha := range pod.Spec.HostAliases {
		if ip, err := netip.ParseAddr(ha.IP); err == nil {
			spec.HostAliases = append(spec.HostAliases, runtime.HostAlias{IP: ip, Hostnames: ha.Hostnames})
		}
	}
	return spec, nil
}

// dnsConfig is the pod's resolv.conf following dnsPolicy ClusterFirst/None semantics.
func dnsConfig(pod *corev1.Pod, clusterDNS []netip.Addr, domain string) runtime.DNSConfig {
	var d runtime.DNSConfig
	if pod.Spec.DNSPolicy != corev1.DNSNone {
		d.Nameservers = slices.Clone(clusterDNS)
		d.Searches = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
		d.Options = []string{"ndots:5"}
	}
	if c := pod.Spec.DNSConfig; c != nil {
		for _, ns := range c.Nameservers {
			if a, err := netip.ParseAddr(ns); err == nil {
				d.Nameservers = append(d.Nameservers, a)
			}
		}
		d.Searches = append(d.Searches, c.Searches...)
		for _, o := range c.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			d.Options = append(d.Options, opt)
		}
	}
	return d
}

// runPod is one step of running a live pod.
func (w *worker) runPod(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod) (time.Duration, bool) {
	a := w.a
	now := time.Now()
	if w.startTime.IsZero() {
		w.startTime = now
		if sb.Status.StartTime != nil {
			w.startTime = sb.Status.StartTime.Time
		}
	}
	facts := w.facts(sb)
	terminal := sb.Status.Phase == vesselv1.SandboxSucceeded || sb.Status.Phase == vesselv1.SandboxFailed
	next := a.cfg.PollInterval
	if len(sb.Status.Startup) > 0 {
		w.startup.done = true
	}
	// The network and the volumes do not depend on each other: on a first start they are
	// prepared at the same time.
	var netErr, volErr error
	var prepared sync.WaitGroup
	if w.vols == nil {
		prepared.Go(func() {
			var vols map[string]string
			volErr = w.startup.time(vesselv1.StepVolumes, func() (err error) {
				vols, err = (&volumePreparer{kube: a.kube, objs: a.objs, dirs: a.dirs}).prepare(ctx, w.name, pod, sb.Spec.Volumes, facts)
				return err
			})
			if volErr == nil {
				w.vols = vols
			}
		})
	}
	netErr = w.startup.time(vesselv1.StepNetwork, func() error { return w.ensureSandbox(ctx, sb, pod) })
	prepared.Wait()
	sandboxErr := errors.Join(netErr, volErr)
	if netErr != nil {
		w.event(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", netErr)
		w.log.WarnContext(ctx, "create sandbox", "err", netErr)
	}
	if volErr != nil {
		w.event(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", volErr)
	}
	if sandboxErr != nil {
		next = 5 * time.Second
	}

	var list []runtime.ContainerStatus
	if sandboxErr == nil {
		var err error
		list, err = a.rt.ListContainers(ctx, w.name)
		if errors.Is(err, runtime.ErrNotFound) {
			w.created = false // removed under us: recreate next time
			return time.Second, false
		}
		if err != nil {
			w.log.WarnContext(ctx, "list containers", "err", err)
			return time.Second, false
		}
	}
	views := w.buildViews(sb, list)

	if sandboxErr == nil {
		w.handleLiveness(ctx, pod, views, gracePeriod(pod, sb))
		if terminal {
			w.stopAll(ctx, pod, views, gracePeriod(pod, sb))
		} else if d := w.startWhatIsDue(ctx, sb, pod, views, facts); d > 0 && d < next {
			next = d
		}
		w.ensureProbers(ctx, pod, views, facts)
		w.pruneInstances(ctx, views)
	}
	for _, v := range views {
		if e := w.probeEntry(v.Cur); e != nil {
			started, ready, _ := e.res.get()
			v.Started, v.Ready = started, ready
		}
	}
	w.writeStatus(ctx, sb, pod, views, sandboxErr == nil, now)
	return next, false
}

// buildViews joins specs, host instances and the last reported status. Init containers come
// first, in order.
func (w *worker) buildViews(sb *vesselv1.Sandbox, list []runtime.ContainerStatus) []*containerView {
	latest := map[string][]runtime.ContainerStatus{}
	for _, s := range list {
		latest[s.Name] = append(latest[s.Name], s)
	}
	mk := func(c corev1.Container, init bool, last []corev1.ContainerStatus) *containerView {
		v := &containerView{Spec: c, Init: init, Waiting: w.waiting[c.Name]}
		v.Sidecar = init && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		inst := latest[c.Name]
		sort.Slice(inst, func(i, j int) bool { return inst[i].Attempt < inst[j].Attempt })
		if n := len(inst); n > 0 {
			v.Cur = &inst[n-1]
			if n > 1 {
				v.Prev = &inst[n-2]
			}
		}
		for i := range last {
			if last[i].Name == c.Name {
				v.Last = &last[i]
			}
		}
		if img := w.images[c.Name]; img != nil {
			v.ImageID = imageID(img)
		}
		return v
	}
	var out []*containerView
	for _, c := range sb.Spec.InitContainers {
		out = append(out, mk(c, true, sb.Status.InitContainerStatuses))
	}
	for _, c := range sb.Spec.Containers {
		out = append(out, mk(c, false, sb.Status.ContainerStatuses))
	}
	return out
}

func imageID(img *image.Image) string {
	if r, err := name.ParseReference(img.Ref); err == nil {
		return r.Context().Name() + "@" + img.Digest.String()
	}
	return img.Digest.String()
}

// nextAttempt numbers a new instance so restart counts continue across agent restarts and even
// host reboots (from the last reported status).
func nextAttempt(v *containerView) uint32 {
	if v.Cur != nil {
		return v.Cur.Attempt + 1
	}
	if v.Last != nil && v.Last.ContainerID != "" {
		return uint32(v.Last.RestartCount) + 1
	}
	return 0
}

// startWhatIsDue starts init containers in order, then the regular containers, and restarts
// exited ones whose back-off has passed. It returns the time until the earliest pending
// back-off ends (0 if none).
func (w *worker) startWhatIsDue(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod, views []*containerView, facts podFacts) time.Duration {
	policy := sb.Spec.RestartPolicy
	var wake time.Duration
	note := func(d time.Duration) {
		if d > 0 && (wake == 0 || d < wake) {
			wake = d
		}
	}
	nInit := len(sb.Spec.InitContainers)
	// step handles one container; it reports whether later init containers may proceed.
	step := func(v *containerView, isInit bool) bool {
		switch {
		case v.Cur == nil:
			note(w.start(ctx, sb, pod, v, 0, facts))
			return false
		case running(v.Cur):
			if v.Sidecar {
				e := w.probeEntry(v.Cur)
				if e == nil {
					return false
				}
				started, _, _ := e.res.get()
				return started
			}
			return false
		case v.Cur.State == runtime.ContainerCreated:
			return false
		}
		// Exited.
		if isInit && !v.Sidecar && v.Cur.ExitCode == 0 && v.Cur.State == runtime.ContainerExited {
			return true
		}
		restartPolicy := policy
		if isInit && !v.Sidecar && policy == corev1.RestartPolicyAlways {
			restartPolicy = corev1.RestartPolicyOnFailure // init containers never rerun after success
		}
		if !shouldRestart(restartPolicy, v.Sidecar, v.Cur.ExitCode) {
			return false
		}
		note(w.restart(ctx, sb, pod, v, facts))
		return false
	}
	for i := range nInit {
		if !step(views[i], true) {
			return wake
		}
	}
	if _, failed, _ := initDone(sb.Spec.InitContainers, renderStatuses(views[:nInit]), policy); failed {
		return wake
	}
	for _, v := range views[nInit:] {
		step(v, false)
	}
	return wake
}

func renderStatuses(views []*containerView) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, len(views))
	for i, v := range views {
		out[i] = containerStatus(*v)
	}
	return out
}

// restart starts the next instance of an exited container once its back-off allows.
func (w *worker) restart(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod, v *containerView, facts podFacts) time.Duration {
	b := w.restarts[v.Spec.Name]
	if b == nil {
		b = &backoff{}
		w.restarts[v.Spec.Name] = b
	}
	finished := v.Cur.FinishedAt
	if finished.IsZero() {
		finished = time.Now()
	}
	until := b.next(string(v.Cur.ID), v.Cur.StartedAt, finished, w.a.cfg.BackoffBase, w.a.cfg.BackoffMax)
	if wait := time.Until(until); wait > 0 {
		delay := until.Sub(finished).Round(time.Second)
		v.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, v.Spec.Name, pod.Name, pod.Namespace, pod.UID)}
		w.waiting[v.Spec.Name] = v.Waiting
		if key := "backoff/" + string(v.Cur.ID); !w.reported[key] {
			w.reported[key] = true
			w.event(pod, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", v.Spec.Name, pod.Name, pod.Namespace, pod.UID)
		}
		return wait
	}
	return w.start(ctx, sb, pod, v, nextAttempt(v), facts)
}

// start pulls the image, builds the container and starts instance attempt. On failure the
// container's waiting reason says why and the return value is when to retry.
func (w *worker) start(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod, v *containerView, attempt uint32, facts podFacts) time.Duration {
	a := w.a
	c := &v.Spec
	setWaiting := func(reason, msg string) {
		v.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		w.waiting[c.Name] = v.Waiting
	}
	var (
		img   *image.Image
		retry time.Duration
	)
	w.startup.time(vesselv1.StepImage, func() error { img, retry = w.pull(ctx, pod, c, setWaiting); return nil })
	if img == nil {
		return retry
	}
	v.ImageID = imageID(img)
	env, err := resolveEnv(ctx, c, pod, facts, a.objs)
	if err != nil {
		setWaiting("CreateContainerConfigError", err.Error())
		w.event(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return 5 * time.Second
	}
	readOnly := map[string]bool{}
	for _, vol := range sb.Spec.Volumes {
		if vol.ConfigMap != nil || vol.Secret != nil || vol.DownwardAPI != nil || vol.Projected != nil {
			readOnly[vol.Name] = true
		}
	}
	mounts, err := containerMounts(c, w.vols, readOnly)
	if err != nil {
		setWaiting("CreateContainerConfigError", err.Error())
		w.event(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return 5 * time.Second
	}
	spec := runtime.ContainerSpec{
		Name: c.Name, Attempt: attempt,
		Image: runtime.Image{RootfsDir: img.RootFS, Config: runtime.ImageConfig{
			User: img.Config.User, Env: img.Config.Env, Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd, WorkingDir: img.Config.WorkingDir}},
		Command: c.Command, Args: c.Args, Env: env, WorkingDir: c.WorkingDir, Mounts: mounts,
		Limits:          containerLimits(c),
		SecurityContext: securityContext(pod, c),
		LogPath:         a.dirs.log(w.name, c.Name, attempt),
		Stdin:           c.Stdin,
	}
	if err := a.images.Acquire(img.Digest, w.name); err != nil {
		w.log.WarnContext(ctx, "image lease", "err", err)
	}
	var id runtime.ContainerID
	err = w.startup.time(vesselv1.StepContainerStart, func() (err error) {
		id, err = a.rt.StartContainer(ctx, w.name, spec)
		return err
	})
	if st, serr := a.rt.ContainerStatus(ctx, id); serr == nil && id != "" {
		v.Cur, v.Prev = &st, v.Cur
	}
	if err != nil {
		w.event(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		w.log.WarnContext(ctx, "start container", "container", c.Name, "attempt", attempt, "err", err)
		if v.Cur == nil || v.Cur.Attempt != attempt {
			setWaiting("CreateContainerError", err.Error())
			return 5 * time.Second
		}
		delete(w.waiting, c.Name)
		v.Waiting = nil
		return a.cfg.PollInterval
	}
	delete(w.waiting, c.Name)
	v.Waiting = nil
	w.event(pod, corev1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	w.event(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		hctx, cancel := context.WithTimeout(ctx, gracePeriod(pod, sb))
		if err := a.hooks.run(hctx, hookAction(c.Lifecycle.PostStart), id, c, facts.PodIP); err != nil {
			w.event(pod, corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: %v", err)
			a.rt.StopContainer(ctx, id, gracePeriod(pod, sb))
		}
		cancel()
	}
	return 0
}

// pull makes the container's image available, with events and pull back-off.
func (w *worker) pull(ctx context.Context, pod *corev1.Pod, c *corev1.Container, setWaiting func(reason, msg string)) (*image.Image, time.Duration) {
	a := w.a
	policy := c.ImagePullPolicy
	if policy == "" {
		policy = corev1.PullIfNotPresent
		if r, err := name.ParseReference(c.Image); err == nil {
			if t, ok := r.(name.Tag); ok && t.TagStr() == "latest" {
				policy = corev1.PullAlways
			}
		}
	}
	if img := w.images[c.Name]; img != nil && policy != corev1.PullAlways {
		return img, 0
	}
	if policy != corev1.PullAlways {
		if img, err := a.images.Get(c.Image); err == nil {
			w.event(pod, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
			w.images[c.Name] = img
			return img, 0
		}
	}
	if policy == corev1.PullNever {
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		setWaiting("ErrImageNeverPull", msg)
		w.event(pod, corev1.EventTypeWarning, "ErrImageNeverPull", "%s", msg)
		return nil, 10 * time.Second
	}
	b := w.pulls[c.Name]
	if b != nil && time.Now().Before(b.until) {
		setWaiting("ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", c.Image))
		if key := fmt.Sprintf("pullbackoff/%s/%d", c.Name, b.n); !w.reported[key] {
			w.reported[key] = true
			w.event(pod, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
		}
		return nil, time.Until(b.until)
	}
	var secrets []corev1.Secret
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := a.objs.Secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			w.log.InfoContext(ctx, "image pull secret unavailable", "secret", ref.Name, "err", err)
			continue
		}
		secrets = append(secrets, *s)
	}
	w.event(pod, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	begin := time.Now()
	opts := image.PullOptions{Secrets: secrets}
	if policy == corev1.PullAlways {
		opts.Policy = image.PullAlways
	}
	img, err := a.images.Pull(ctx, c.Image, opts)
	if err != nil {
		if b == nil {
			b = &backoff{}
			w.pulls[c.Name] = b
		}
		now := time.Now()
		b.instance = ""
		b.next(fmt.Sprint(now.UnixNano()), time.Time{}, now, a.cfg.BackoffBase, a.cfg.BackoffMax)
		if b.until.Equal(now) { // the first retry waits too
			b.until = now.Add(a.cfg.BackoffBase)
		}
		reason := "ErrImagePull"
		if errors.Is(err, image.ErrInvalidReference) {
			reason = "InvalidImageName"
		}
		setWaiting(reason, err.Error())
		w.event(pod, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %v", c.Image, err)
		w.event(pod, corev1.EventTypeWarning, "Failed", "Error: %s", reason)
		return nil, time.Until(b.until)
	}
	delete(w.pulls, c.Name)
	w.images[c.Name] = img
	w.event(pod, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s. Image size: %d bytes.", c.Image, time.Since(begin).Round(time.Millisecond), img.Size)
	return img, 0
}

func containerLimits(c *corev1.Container) runtime.Resources {
	var r runtime.Resources
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.MilliCPU = q.MilliValue()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryBytes = q.Value()
	}
	return r
}

func securityContext(pod *corev1.Pod, c *corev1.Container) runtime.SecurityContext {
	var s runtime.SecurityContext
	if p := pod.Spec.SecurityContext; p != nil {
		s.RunAsUser, s.RunAsGroup = p.RunAsUser, p.RunAsGroup
		s.SupplementalGroups = p.SupplementalGroups
		if p.FSGroup != nil {
			s.SupplementalGroups = append(s.SupplementalGroups, *p.FSGroup)
		}
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			s.RunAsUser = cs.RunAsUser
		}
		if cs.RunAsGroup != nil {
			s.RunAsGroup = cs.RunAsGroup
		}
		if cs.Capabilities != nil {
			for _, c := range cs.Capabilities.Add {
				s.CapAdd = append(s.CapAdd, strings.TrimPrefix(string(c), "CAP_"))
			}
			for _, c := range cs.Capabilities.Drop {
				s.CapDrop = append(s.CapDrop, strings.TrimPrefix(string(c), "CAP_"))
			}
		}
		s.ReadOnlyRootFilesystem = cs.ReadOnlyRootFilesystem != nil && *cs.ReadOnlyRootFilesystem
	}
	return s
}

func (w *worker) probeEntry(s *runtime.ContainerStatus) *probeEntry {
	if s == nil {
		return nil
	}
	return w.probes[s.ID]
}

// ensureProbers runs probes for each running current instance and stops the rest.
func (w *worker) ensureProbers(ctx context.Context, pod *corev1.Pod, views []*containerView, facts podFacts) {
	want := map[runtime.ContainerID]bool{}
	for _, v := range views {
		if !running(v.Cur) {
			continue
		}
		want[v.Cur.ID] = true
		if w.probes[v.Cur.ID] != nil {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		e := &probeEntry{cancel: cancel, res: &probeResults{}}
		w.probes[v.Cur.ID] = e
		c := v.Spec
		if v.Init && !v.Sidecar {
			c.StartupProbe, c.LivenessProbe, c.ReadinessProbe = nil, nil, nil
		}
		p := &prober{h: w.a.hooks, id: v.Cur.ID, c: &c, podIP: facts.PodIP, res: e.res,
			onChange: func() {
				select {
				case w.kick <- struct{}{}:
				default:
				}
			},
			unhealthy: func(kind probeKind, err error) {
				w.event(pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind, err)
			}}
		p.start(pctx)
	}
	for id, e := range w.probes {
		if !want[id] {
			e.cancel()
			delete(w.probes, id)
		}
	}
}

func (w *worker) stopProbes() {
	for id, e := range w.probes {
		e.cancel()
		delete(w.probes, id)
	}
}

// handleLiveness kills containers whose liveness (or startup) probe failed; the restart
// policy then decides what happens next.
func (w *worker) handleLiveness(ctx context.Context, pod *corev1.Pod, views []*containerView, grace time.Duration) {
	for _, v := range views {
		e := w.probeEntry(v.Cur)
		if e == nil || !running(v.Cur) {
			continue
		}
		_, _, failed := e.res.get()
		if failed == "" {
			continue
		}
		w.event(pod, corev1.EventTypeNormal, "Killing", "%s", failed)
		w.stopContainer(ctx, pod, v, grace)
		if st, err := w.a.rt.ContainerStatus(ctx, v.Cur.ID); err == nil {
			v.Cur = &st
		}
		e.cancel()
		delete(w.probes, v.Cur.ID)
	}
}

// stopContainer runs the preStop hook, then stops the instance within grace.
func (w *worker) stopContainer(ctx context.Context, pod *corev1.Pod, v *containerView, grace time.Duration) {
	begin := time.Now()
	if h := v.Spec.Lifecycle; h != nil && h.PreStop != nil && running(v.Cur) {
		hctx, cancel := context.WithTimeout(ctx, grace)
		podIP := ""
		if pod != nil {
			podIP = pod.Status.PodIP
		}
		if podIP == "" {
			if sb, _ := w.a.sandbox(ctx, w.name); sb != nil {
				podIP = sb.Spec.Network.IP
			}
		}
		if err := w.a.hooks.run(hctx, hookAction(h.PreStop), v.Cur.ID, &v.Spec, podIP); err != nil {
			w.event(pod, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
		}
		cancel()
	}
	left := max(grace-time.Since(begin), 0)
	if err := w.a.rt.StopContainer(ctx, v.Cur.ID, left); err != nil {
		w.log.WarnContext(ctx, "stop container", "container", v.Cur.ID, "err", err)
	}
}

// stopAll stops every running container in parallel (pod terminal or being deleted).
func (w *worker) stopAll(ctx context.Context, pod *corev1.Pod, views []*containerView, grace time.Duration) {
	var wg sync.WaitGroup
	for _, v := range views {
		if !running(v.Cur) {
			continue
		}
		if e := w.probeEntry(v.Cur); e != nil {
			e.cancel()
			delete(w.probes, v.Cur.ID)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.event(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", v.Spec.Name)
			w.stopContainer(ctx, pod, v, grace)
		}()
	}
	wg.Wait()
}

// pruneInstances keeps the current and the previous instance of each container (for logs
// --previous and lastState) and removes older ones.
func (w *worker) pruneInstances(ctx context.Context, views []*containerView) {
	list, err := w.a.rt.ListContainers(ctx, w.name)
	if err != nil {
		return
	}
	keep := map[runtime.ContainerID]bool{}
	for _, v := range views {
		if v.Cur != nil {
			keep[v.Cur.ID] = true
		}
		if v.Prev != nil {
			keep[v.Prev.ID] = true
		}
	}
	for _, s := range list {
		if !keep[s.ID] && s.State != runtime.ContainerRunning {
			if err := w.a.rt.RemoveContainer(ctx, s.ID); err != nil {
				w.log.WarnContext(ctx, "remove old container", "container", s.ID, "err", err)
			}
		}
	}
}

// teardown stops every container gracefully and removes the sandbox from the host. sb and pod
// may be nil (object gone); it is idempotent.
func (w *worker) teardown(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod, grace time.Duration) error {
	a := w.a
	w.stopProbes()
	list, err := a.rt.ListContainers(ctx, w.name)
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return err
	}
	if len(list) > 0 {
		var views []*containerView
		if sb != nil {
			views = w.buildViews(sb, list)
		} else {
			for i := range list {
				views = append(views, &containerView{Spec: corev1.Container{Name: list[i].Name}, Cur: &list[i]})
			}
		}
		for _, s := range list {
			found := false
			for _, v := range views {
				if v.Cur != nil && v.Cur.ID == s.ID {
					found = true
				}
			}
			if !found && s.State == runtime.ContainerRunning {
				s := s
				views = append(views, &containerView{Spec: corev1.Container{Name: s.Name}, Cur: &s})
			}
		}
		w.stopAll(ctx, pod, views, grace)
	}
	if err := a.rt.RemoveSandbox(ctx, w.name); err != nil {
		return err
	}
	w.created = false
	if err := removePodDir(a.dirs.pod(w.name)); err != nil {
		return err
	}
	w.vols = nil
	a.releaseImages(w.name)
	return nil
}

// writeStatus renders the views into Sandbox.status and the pod's status, writing only what
// changed.
func (w *worker) writeStatus(ctx context.Context, sb *vesselv1.Sandbox, pod *corev1.Pod, views []*containerView, sandboxReady bool, now time.Time) {
	a := w.a
	nInit := len(sb.Spec.InitContainers)
	initStatuses := renderStatuses(views[:nInit])
	statuses := renderStatuses(views[nInit:])
	policy := sb.Spec.RestartPolicy
	if policy == "" {
		policy = corev1.RestartPolicyAlways
	}
	phase := podPhase(sb.Spec.InitContainers, initStatuses, statuses, policy)
	// Terminal phases are final.
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		phase = pod.Status.Phase
	}
	conds := podConditions(pod.Status.Conditions, phase, sandboxReady, sb.Spec.InitContainers, initStatuses, statuses, policy, pod.Spec.ReadinessGates, now)

	newPod := pod.DeepCopy()
	st := &newPod.Status
	st.Phase = phase
	st.Conditions = conds
	st.InitContainerStatuses = initStatuses
	st.ContainerStatuses = statuses
	st.HostIP = a.cfg.Address
	st.HostIPs = []corev1.HostIP{{IP: a.cfg.Address}}
	st.PodIP = sb.Spec.Network.IP
	st.PodIPs = []corev1.PodIP{{IP: sb.Spec.Network.IP}}
	start := metav1.NewTime(w.startTime.Truncate(time.Second))
	if st.StartTime == nil {
		st.StartTime = &start
	}
	if phase == corev1.PodFailed && st.Reason == "" {
		st.Message = "Pod failed"
	}
	if err := w.patchPodStatus(ctx, pod, newPod); err != nil {
		w.log.WarnContext(ctx, "update pod status", "err", err)
	}

	// The Sandbox mirrors it.
	newSB := sb.DeepCopy()
	newSB.Status.Phase = vesselv1.SandboxPhase(phase)
	newSB.Status.InitContainerStatuses = initStatuses
	newSB.Status.ContainerStatuses = statuses
	newSB.Status.StartTime = st.StartTime
	newSB.Status.Reason, newSB.Status.Message = "", ""
	for _, v := range views {
		if v.Waiting != nil && v.Waiting.Reason != "ContainerCreating" {
			newSB.Status.Reason, newSB.Status.Message = v.Waiting.Reason, v.Spec.Name+": "+v.Waiting.Message
			break
		}
	}
	ready := metav1.ConditionFalse
	for _, c := range conds {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = metav1.ConditionTrue
		}
	}
	meta.SetStatusCondition(&newSB.Status.Conditions, metav1.Condition{Type: "Ready", Status: ready, Reason: "Pod" + string(phase), ObservedGeneration: sb.Generation})
	firstStart := !w.startup.done && allStarted(views)
	if firstStart {
		newSB.Status.Startup = w.startup.report()
	}
	if !sameJSON(sb.Status, newSB.Status) {
		err := a.client.Status().Update(ctx, newSB)
		if err != nil && !apierrors.IsConflict(err) {
			w.log.WarnContext(ctx, "update sandbox status", "err", err)
		}
		if err == nil && firstStart {
			w.startup.done = true
			for _, s := range newSB.Status.Startup {
				a.metrics.startStep.WithLabelValues(s.Step).Observe(s.Duration.Seconds())
			}
		}
	}
}

// allStarted reports whether every container has run at least once: the end of a first start.
func allStarted(views []*containerView) bool {
	for _, v := range views {
		if v.Cur == nil {
			return false
		}
	}
	return len(views) > 0
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// patchPodStatus sends a strategic merge patch of the status with a UID precondition, as the
// kubelet does, so concurrent writers of other fields are not clobbered.
func (w *worker) patchPodStatus(ctx context.Context, old, updated *corev1.Pod) error {
	if sameJSON(old.Status, updated.Status) {
		return nil
	}
	oldJSON, err := json.Marshal(corev1.Pod{Status: old.Status})
	if err != nil {
		return err
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: updated.Status})
	if err != nil {
		return err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return err
	}
	patch, err = addUIDPrecondition(patch, old.UID)
	if err != nil {
		return err
	}
	_, err = w.a.kube.CoreV1().Pods(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

func addUIDPrecondition(patch []byte, uid types.UID) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	m["metadata"] = map[string]any{"uid": uid}
	return json.Marshal(m)
}
