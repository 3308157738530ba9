// Package scheduler places pending Vessel pods: for each pod with
// spec.schedulerName vessel-scheduler it picks a Host and a subnet address,
// creates the pod's Sandbox and Node and binds the pod
// (docs/decisions/pod-lifecycle.md). It also collects what no pod owns any
// more (Sandboxes, Nodes, addresses) and fails the pods of lost hosts.
//
// It is built on controller-runtime: one manager, a cache of Pods (only
// Vessel's, by field selector), Sandboxes and Leases (only in vessel-system),
// Vessel Nodes (by label), Hosts, Subnets and VesselProfiles, and four
// level-triggered reconcilers. Every step is idempotent, so a scheduler that
// is killed at any point converges when it starts again.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// Name is the scheduler's name: pods' spec.schedulerName, the source
// component of its events, the field manager of its writes.
const Name = vesselv1.SchedulerName

// Config configures a Scheduler.
type Config struct {
	// RESTConfig reaches the cluster's apiserver. Required.
	RESTConfig *rest.Config
	// Logger receives structured logs with the keys pod, sandbox, host and
	// node. Defaults to slog.Default().
	Logger *slog.Logger
	// LeaderElection lets several replicas (`vessel controller`) run with
	// one active at a time, through the Lease vessel-system/vessel-scheduler.
	// Off for `vessel up`, where exactly one scheduler runs.
	LeaderElection bool
	// InitialBackoff and MaxBackoff bound the delay before an unschedulable
	// pod is tried again (it doubles each time); 1 s and 1 min by default.
	// Host and Sandbox changes retry all waiting pods at once anyway.
	InitialBackoff, MaxBackoff time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Scheduler is Vessel's pod scheduler. Create it with New and Run it once.
type Scheduler struct {
	cfg       Config
	log       *slog.Logger
	mgr       manager.Manager
	client    client.Client // cached reads, direct writes
	apiReader client.Reader // uncached reads, to confirm before deleting
	clientset kubernetes.Interface
	recorder  record.EventRecorder
	state     *state
	ready     chan struct{}

	backoffMu sync.Mutex
	attempts  map[types.NamespacedName]int

	// subnetWritten is when each Subnet's status was last written; only the subnets
	// reconciler, which has one worker, uses it.
	subnetWritten map[string]time.Time
}

// New prepares a Scheduler; nothing talks to the cluster before Run.
func New(cfg Config) (*Scheduler, error) {
	if cfg.RESTConfig == nil {
		return nil, errors.New("scheduler: RESTConfig is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With("component", Name)

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("scheduler: scheme: %w", err)
	}
	if err := vesselv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("scheduler: scheme: %w", err)
	}
	restCfg := rest.CopyConfig(cfg.RESTConfig)
	if restCfg.UserAgent == "" {
		restCfg.UserAgent = Name
	}
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme:                        scheme,
		Logger:                        logr.FromSlogHandler(log.Handler()),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                cfg.LeaderElection,
		LeaderElectionID:              Name,
		LeaderElectionNamespace:       vesselv1.SystemNamespace,
		LeaderElectionReleaseOnCancel: true,
		// Several schedulers may live in one process one after another
		// (tests, restarts); controller names need not be unique.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:           {Field: fields.OneTermEqualSelector("spec.schedulerName", Name)},
			&vesselv1.Sandbox{}:     {Namespaces: map[string]cache.Config{vesselv1.SystemNamespace: {}}},
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{vesselv1.SystemNamespace: {}}},
			&corev1.Node{}:          {Label: labels.SelectorFromSet(labels.Set{vesselv1.LabelComputeType: vesselv1.ComputeTypeVessel})},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: manager: %w", err)
	}
	clientset, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("scheduler: clientset: %w", err)
	}
	s := &Scheduler{
		cfg:       cfg,
		log:       log,
		mgr:       mgr,
		client:    mgr.GetClient(),
		apiReader: mgr.GetAPIReader(),
		clientset: clientset,
		recorder:  mgr.GetEventRecorderFor(Name),
		state:     newState(log),
		ready:     make(chan struct{}),
		attempts:  map[types.NamespacedName]int{},

		subnetWritten: map[string]time.Time{},
	}
	if err := mgr.Add(manager.RunnableFunc(s.rebuild)); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if err := s.setupControllers(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	return s, nil
}

// Run schedules until ctx ends, then returns nil, or returns the error that
// stopped it earlier. Call it once.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.ensureNamespace(ctx); err != nil {
		return err
	}
	s.log.Info("starting", "leaderElection", s.cfg.LeaderElection)
	if err := s.mgr.Start(ctx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	return nil
}

// Ready is closed once the scheduler has rebuilt its view of every existing
// Sandbox and starts placing pods (as leader, with leader election).
func (s *Scheduler) Ready() <-chan struct{} { return s.ready }

// ensureNamespace creates vessel-system, where Sandboxes live, if needed.
func (s *Scheduler) ensureNamespace(ctx context.Context) error {
	_, err := s.clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: vesselv1.SystemNamespace},
	}, metav1.CreateOptions{FieldManager: Name})
	if err != nil && !apierrors.IsAlreadyExists(err) && !apierrors.IsForbidden(err) {
		return fmt.Errorf("scheduler: create namespace %s: %w", vesselv1.SystemNamespace, err)
	}
	return nil
}

// rebuild fills the state from every existing Sandbox before any pod is
// placed, and keeps it in step with the Sandbox informer afterwards: an
// address is taken while its Sandbox exists and free once it is gone.
func (s *Scheduler) rebuild(ctx context.Context) error {
	informer, err := s.mgr.GetCache().GetInformer(ctx, &vesselv1.Sandbox{})
	if err != nil {
		return fmt.Errorf("sandbox informer: %w", err)
	}
	_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if sb, ok := obj.(*vesselv1.Sandbox); ok {
				s.state.observe(sb)
			}
		},
		UpdateFunc: func(_, obj any) {
			if sb, ok := obj.(*vesselv1.Sandbox); ok {
				s.state.observe(sb)
			}
		},
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if sb, ok := obj.(*vesselv1.Sandbox); ok {
				s.state.forget(sb.Name)
				s.log.Debug("sandbox gone, address free", "sandbox", sb.Name, "ip", sb.Spec.Network.IP)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("sandbox informer: %w", err)
	}
	if !s.mgr.GetCache().WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	var list vesselv1.SandboxList
	if err := s.client.List(ctx, &list, client.InNamespace(vesselv1.SystemNamespace)); err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	for i := range list.Items {
		s.state.observe(&list.Items[i])
	}
	s.log.Info("rebuilt address and capacity state", "sandboxes", len(list.Items))
	close(s.ready)
	<-ctx.Done()
	return nil
}

// waitReady holds a reconciler back until rebuild is done.
func (s *Scheduler) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns how long an unschedulable pod waits before its next try.
func (s *Scheduler) backoff(key types.NamespacedName) time.Duration {
	s.backoffMu.Lock()
	defer s.backoffMu.Unlock()
	n := s.attempts[key]
	s.attempts[key] = n + 1
	d := s.cfg.InitialBackoff
	for range n {
		d *= 2
		if d >= s.cfg.MaxBackoff {
			return s.cfg.MaxBackoff
		}
	}
	return d
}

func (s *Scheduler) resetBackoff(key types.NamespacedName) {
	s.backoffMu.Lock()
	defer s.backoffMu.Unlock()
	delete(s.attempts, key)
}
