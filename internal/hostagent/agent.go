// Package hostagent runs the Sandboxes assigned to one host: it registers the Host, reconciles
// every Sandbox whose spec.host names it through a runtime.Runtime (pulls, volumes, env, init
// containers, restarts with back-off, probes, graceful termination), mirrors the result into
// Sandbox.status and the Pod's status, keeps the pods' Nodes Ready and finishes pod deletion,
// like a kubelet for one-pod nodes. See docs/decisions/pod-lifecycle.md for who writes what.
package hostagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/image"
	"github.com/vessel-dev/vessel/internal/network"
	"github.com/vessel-dev/vessel/internal/runtime"
)

// Config configures an Agent. Zero values take the documented defaults.
type Config struct {
	// HostName names the Host object and its Lease; required.
	HostName string
	// Address is this host's IP: the pods' hostIP and where the kubelet API listens; required.
	Address string
	// KubeletPort is the kubelet API port advertised on the Host (default 10250).
	KubeletPort int32
	// Zone is the Host's topology zone.
	Zone string
	// Isolation is the runtime kind (default oci).
	Isolation vesselv1.Isolation
	// Capacity overrides the measured capacity per resource (cpu, memory, ephemeral-storage,
	// pods). Missing entries come from the machine: all CPUs, memory minus MemoryReserve, the
	// size of DataDir's filesystem, MaxSandboxes.
	Capacity corev1.ResourceList
	// MemoryReserve is kept for the host itself (default 1 GiB, at most half the memory).
	MemoryReserve int64
	// MaxSandboxes is the default "pods" capacity (default 110).
	MaxSandboxes int64
	// CPUOvercommit multiplies the machine's CPUs in the measured capacity (default 1: every
	// sandbox can use its whole size at once, as on Fargate). CPU is compressible, so a
	// single-machine cluster may trade that guarantee for more sandboxes; memory never is.
	CPUOvercommit float64
	// MemoryOvercommit multiplies the memory in the measured capacity (default 1). Above 1,
	// sandboxes can be OOM-killed by the host rather than by their own limit; for dense test
	// and benchmark machines only.
	MemoryOvercommit float64
	// DiskOvercommit multiplies the data directory's filesystem size in the ephemeral-storage
	// capacity (default 1). Sandbox scratch space is sparse, so a host running small pods that
	// write little may accept far more than its disk holds.
	DiskOvercommit float64
	// DataDir holds pod volumes and logs (see names.go); required.
	DataDir string
	// ClusterDNS are the nameservers put in sandboxes' resolv.conf (cluster DNS); empty: none
	// unless the pod's dnsConfig names some.
	ClusterDNS []netip.Addr
	// ClusterDomain is the DNS domain of the cluster (default cluster.local).
	ClusterDomain string

	// PollInterval is how often a sandbox's containers are checked for exits (default 1 s).
	PollInterval time.Duration
	// LeaseInterval is how often the Host Lease and node heartbeats are renewed (default 10 s).
	LeaseInterval time.Duration
	// LeaseDuration is the Host Lease and node Lease duration (default 40 s).
	LeaseDuration time.Duration
	// GCInterval is how often runtime sandboxes without a Sandbox are removed (default 1 min).
	GCInterval time.Duration
	// BackoffBase and BackoffMax shape restart and image pull back-off (default 10 s, 5 min).
	BackoffBase, BackoffMax time.Duration

	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.HostName == "" || c.Address == "" || c.DataDir == "" {
		return fmt.Errorf("host agent: HostName, Address and DataDir are required")
	}
	if _, err := netip.ParseAddr(c.Address); err != nil {
		return fmt.Errorf("host agent: address %q: %w", c.Address, err)
	}
	setDefault(&c.KubeletPort, 10250)
	setDefault(&c.Isolation, vesselv1.IsolationOCI)
	setDefault(&c.MemoryReserve, 1<<30)
	setDefault(&c.MaxSandboxes, 110)
	if c.CPUOvercommit < 1 {
		c.CPUOvercommit = 1
	}
	if c.MemoryOvercommit < 1 {
		c.MemoryOvercommit = 1
	}
	if c.DiskOvercommit < 1 {
		c.DiskOvercommit = 1
	}
	setDefault(&c.ClusterDomain, "cluster.local")
	setDefault(&c.PollInterval, time.Second)
	setDefault(&c.LeaseInterval, 10*time.Second)
	setDefault(&c.LeaseDuration, 40*time.Second)
	setDefault(&c.GCInterval, time.Minute)
	setDefault(&c.BackoffBase, backoffBase)
	setDefault(&c.BackoffMax, backoffMax)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Subnets is the part of network.Manager the agent needs: the subnet's bridge must exist on
// this host before the runtime attaches a sandbox to it. Idempotent.
type Subnets interface {
	EnsureSubnet(ctx context.Context, sc network.SubnetConfig) error
}

// Agent is the host agent of one host.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	rest    *rest.Config
	kube    kubernetes.Interface
	client  client.Client // uncached, for writes and authoritative reads
	scheme  *k8sruntime.Scheme
	rt      runtime.Runtime
	images  *image.Store
	nets    Subnets
	dirs    layout
	hooks   *handlers
	objs    Objects
	metrics *metrics

	cache       cache.Cache
	broadcaster record.EventBroadcaster

	ctx     context.Context
	mu      sync.Mutex
	workers map[string]*worker
	wg      sync.WaitGroup
	ready   chan struct{}
}

// New returns an agent. restCfg is the identity the agent uses against the API server; rt,
// images and subnets are this host's runtime, image cache and networking. Nothing is started
// until Run.
func New(cfg Config, restCfg *rest.Config, rt runtime.Runtime, images *image.Store, subnets Subnets) (*Agent, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if rt == nil || images == nil || subnets == nil || restCfg == nil {
		return nil, fmt.Errorf("host agent: need a rest config, runtime, image store and subnets")
	}
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := vesselv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("host agent: %w", err)
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("host agent: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("host", cfg.HostName), rest: restCfg, kube: kube, client: c, scheme: scheme,
		rt: rt, images: images, nets: subnets, dirs: layout{root: cfg.DataDir},
		hooks: &handlers{rt: rt, client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}},
		objs:  apiObjects{kube}, metrics: newMetrics(),
		workers: map[string]*worker{}, ready: make(chan struct{}),
	}
	return a, nil
}

// Ready is closed once the agent registered, synced its caches and adopted what runs on the host.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run registers the host and reconciles until ctx ends. Containers keep running after it
// returns; a new Agent over the same runtime adopts them.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.ctx = ctx
	a.broadcaster = record.NewBroadcaster(record.WithContext(ctx))
	a.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.kube.CoreV1().Events("")})
	defer a.broadcaster.Shutdown()

	if err := a.register(ctx); err != nil {
		return err
	}
	c, err := cache.New(a.rest, cache.Options{
		Scheme: a.scheme,
		ByObject: map[client.Object]cache.ByObject{
			// Sandboxes are few per namespace-wide watch; spec.host is not selectable, so the
			// filter is applied on receipt.
			&vesselv1.Sandbox{}: {Namespaces: map[string]cache.Config{vesselv1.SystemNamespace: {}}},
			&corev1.Pod{}:       {Field: fields.OneTermEqualSelector("spec.schedulerName", vesselv1.SchedulerName)},
			&corev1.Node{}:      {Label: labels.SelectorFromSet(labels.Set{vesselv1.LabelComputeType: vesselv1.ComputeTypeVessel})},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("host agent: cache: %w", err)
	}
	a.cache = c
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("host agent: caches did not sync")
	}
	if err := a.watch(ctx); err != nil {
		return err
	}
	if err := a.collectGarbage(ctx, true); err != nil {
		a.log.WarnContext(ctx, "garbage collection at start", "err", err)
	}
	// Workers for every Sandbox of this host, including those the previous agent ran.
	var list vesselv1.SandboxList
	if err := c.List(ctx, &list, client.InNamespace(vesselv1.SystemNamespace)); err != nil {
		return fmt.Errorf("host agent: list sandboxes: %w", err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.Host == a.cfg.HostName {
			a.kick(list.Items[i].Name)
		}
	}
	close(a.ready)
	a.log.InfoContext(ctx, "host agent running", "sandboxes", len(list.Items))

	go a.loop(ctx, a.cfg.LeaseInterval, a.renewHost)
	go a.loop(ctx, a.cfg.LeaseInterval, a.heartbeatNodes)
	go a.loop(ctx, a.cfg.GCInterval, func(ctx context.Context) error { return a.collectGarbage(ctx, false) })

	select {
	case <-ctx.Done():
	case err := <-cacheErr:
		if err != nil && ctx.Err() == nil {
			cancel()
			a.wg.Wait()
			return fmt.Errorf("host agent: cache: %w", err)
		}
	}
	a.wg.Wait()
	return nil
}

func (a *Agent) loop(ctx context.Context, every time.Duration, fn func(context.Context) error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				a.log.WarnContext(ctx, "periodic task failed", "err", err)
			}
		}
	}
}

// watch wires informer events to sandbox workers.
func (a *Agent) watch(ctx context.Context) error {
	sbInf, err := a.cache.GetInformer(ctx, &vesselv1.Sandbox{})
	if err != nil {
		return err
	}
	onSandbox := func(obj any) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if sb, ok := obj.(*vesselv1.Sandbox); ok && (sb.Spec.Host == a.cfg.HostName || a.hasWorker(sb.Name)) {
			a.kick(sb.Name)
		}
	}
	if _, err := sbInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onSandbox, UpdateFunc: func(_, n any) { onSandbox(n) }, DeleteFunc: onSandbox,
	}); err != nil {
		return err
	}
	podInf, err := a.cache.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return err
	}
	onPod := func(obj any) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok && a.hasWorker(vesselv1.SandboxNameForPod(p.UID)) {
			a.kick(vesselv1.SandboxNameForPod(p.UID))
		}
	}
	if _, err := podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) }, DeleteFunc: onPod,
	}); err != nil {
		return err
	}
	nodeInf, err := a.cache.GetInformer(ctx, &corev1.Node{})
	if err != nil {
		return err
	}
	// A new Node gets its Lease at once, and its Ready condition too unless the scheduler created
	// it Ready a moment ago.
	_, err = nodeInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			go func() {
				if sb := a.nodeSandbox(ctx, n); sb != nil {
					if err := a.heartbeat(ctx, n); err != nil && ctx.Err() == nil {
						a.log.WarnContext(ctx, "node heartbeat", "node", n.Name, "err", err)
					}
				}
			}()
		}
	}})
	return err
}

func (a *Agent) hasWorker(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.workers[name] != nil
}

// kick makes the sandbox's worker sync soon, starting one if none runs.
func (a *Agent) kick(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() != nil {
		return
	}
	w := a.workers[name]
	if w == nil {
		w = newWorker(a, name)
		a.workers[name] = w
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.run(a.ctx)
			a.mu.Lock()
			if a.workers[name] == w {
				delete(a.workers, name)
			}
			a.mu.Unlock()
		}()
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// sandbox returns the cached Sandbox or nil when it does not exist.
func (a *Agent) sandbox(ctx context.Context, name string) (*vesselv1.Sandbox, error) {
	var sb vesselv1.Sandbox
	err := a.cache.Get(ctx, client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: name}, &sb)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &sb, nil
}

// pod returns the cached pod or nil.
func (a *Agent) pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var p corev1.Pod
	err := a.cache.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// nodeSandbox returns the Sandbox of this host a Vessel node belongs to, or nil.
func (a *Agent) nodeSandbox(ctx context.Context, n *corev1.Node) *vesselv1.Sandbox {
	ann := n.Annotations[vesselv1.AnnotationSandbox]
	if ann == "" {
		return nil
	}
	sb, err := a.sandbox(ctx, path.Base(ann))
	if err != nil || sb == nil || sb.Spec.Host != a.cfg.HostName || sb.DeletionTimestamp != nil {
		return nil
	}
	return sb
}

// apiObjects reads ConfigMaps and Secrets straight from the API server.
type apiObjects struct{ kube kubernetes.Interface }

func (o apiObjects) ConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return o.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (o apiObjects) Secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return o.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

// collectGarbage removes runtime sandboxes and pod directories that no Sandbox of this host
// owns. At start it also drops image leases of sandboxes that are gone.
func (a *Agent) collectGarbage(ctx context.Context, atStart bool) error {
	infos, err := a.rt.ListSandboxes(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	var errs []error
	for _, info := range infos {
		if a.hasWorker(info.ID) && !atStart {
			keep[info.ID] = true
			continue
		}
		var sb vesselv1.Sandbox
		err := a.client.Get(ctx, client.ObjectKey{Namespace: vesselv1.SystemNamespace, Name: info.ID}, &sb)
		switch {
		case err == nil && sb.Spec.Host == a.cfg.HostName &&
			(info.Labels[runtimeLabelSandboxUID] == "" || info.Labels[runtimeLabelSandboxUID] == string(sb.UID)):
			keep[info.ID] = true
			continue
		case err != nil && !apierrors.IsNotFound(err):
			errs = append(errs, err)
			continue
		}
		a.log.InfoContext(ctx, "removing sandbox nobody owns", "sandbox", info.ID)
		if err := a.rt.RemoveSandbox(ctx, info.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removePodDir(a.dirs.pod(info.ID)); err != nil {
			errs = append(errs, err)
		}
		a.releaseImages(info.ID)
	}
	if atStart {
		if err := a.images.PruneLeases(func(holder string) bool { return keep[holder] || a.hasWorker(holder) }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Agent) releaseImages(holder string) {
	leases, err := a.images.Leases()
	if err != nil {
		return
	}
	for d, holders := range leases {
		for _, h := range holders {
			if h == holder {
				a.images.Release(d, holder)
			}
		}
	}
}
