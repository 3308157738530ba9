package metricsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// PodInfo is what the scraper needs to know of a pod besides its statistics.
type PodInfo struct {
	Namespace, Name string
	UID             types.UID
	Node            string // spec.nodeName: the pod's Vessel Node
	NodeLabels      map[string]string
	Labels          map[string]string
}

// PodUsage is a pod's resource usage over a window ending at Timestamp.
type PodUsage struct {
	PodInfo
	Timestamp  time.Time
	Window     time.Duration
	CPU        uint64 // nanocores, the whole pod
	Memory     uint64 // working set bytes, the whole pod
	Containers []ContainerUsage
}

// ContainerUsage is one container's share of its pod's usage.
type ContainerUsage struct {
	Name        string
	CPU, Memory uint64
}

// Source provides pod usage to the Handler.
type Source interface {
	// Usage returns the latest usage of every pod for which a rate is known. It may scrape
	// hosts, bounded by ctx. The caller owns the returned slice.
	Usage(ctx context.Context) ([]PodUsage, error)
}

// ScraperConfig says where the scraper finds hosts and pods.
type ScraperConfig struct {
	// Hosts lists the kubelet API base URLs of all hosts, e.g. https://10.0.0.5:10250.
	Hosts func(ctx context.Context) ([]string, error)
	// Pods lists the cluster's pods; statistics of pods it does not list are dropped.
	Pods func(ctx context.Context) ([]PodInfo, error)
	// Client reaches the kubelet APIs: it trusts the cluster CA and presents a client
	// certificate they accept.
	Client *http.Client
	// Interval is how often Run scrapes and how old an answer Usage may give; default 10 s.
	Interval time.Duration
	Logger   *slog.Logger
}

// Scraper reads every host's /stats/summary and derives CPU rates from consecutive samples.
type Scraper struct {
	cfg ScraperConfig

	mu      sync.Mutex // serializes scrapes
	prev    map[sampleKey]Sample
	last    []PodUsage
	lastAt  time.Time
	lastErr error
}

type sampleKey struct {
	uid       types.UID
	container string // "" for the pod
}

// NewScraper returns a scraper; call Run to scrape periodically.
func NewScraper(cfg ScraperConfig) *Scraper {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Scraper{cfg: cfg, prev: map[sampleKey]Sample{}}
}

// Run scrapes every Interval until ctx ends, so rates cover about one interval.
func (s *Scraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.scrape(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Debug("metrics scrape failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Usage implements Source: the last scrape's result, or a new scrape when that one is older
// than the interval.
func (s *Scraper) Usage(ctx context.Context) ([]PodUsage, error) {
	s.mu.Lock()
	fresh := time.Since(s.lastAt) < s.cfg.Interval
	last, lastErr := s.last, s.lastErr
	s.mu.Unlock()
	if fresh {
		return append([]PodUsage(nil), last...), lastErr
	}
	return s.scrape(ctx)
}

func (s *Scraper) scrape(ctx context.Context) ([]PodUsage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lastAt) < time.Second { // a concurrent caller just scraped
		return append([]PodUsage(nil), s.last...), s.lastErr
	}
	hosts, err := s.cfg.Hosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	pods, err := s.cfg.Pods(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	sums := make([]*statsv1alpha1.Summary, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i], errs[i] = s.fetch(ctx, h)
		}()
	}
	wg.Wait()
	var firstErr error
	for i, err := range errs {
		if err != nil {
			// One unreachable host must not hide the others' pods.
			s.cfg.Logger.Warn("scrape host stats", "host", hosts[i], "err", err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if len(hosts) > 0 && allFailed(errs) {
		s.lastErr = firstErr
	} else {
		s.lastErr = nil
	}
	s.last, s.prev = Compute(s.prev, sums, pods)
	s.lastAt = time.Now()
	return append([]PodUsage(nil), s.last...), s.lastErr
}

func allFailed(errs []error) bool {
	for _, e := range errs {
		if e == nil {
			return false
		}
	}
	return true
}

func (s *Scraper) fetch(ctx context.Context, base string) (*statsv1alpha1.Summary, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stats/summary", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s/stats/summary: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s/stats/summary: %s", base, resp.Status)
	}
	var sum statsv1alpha1.Summary
	if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil {
		return nil, fmt.Errorf("decode %s/stats/summary: %w", base, err)
	}
	return &sum, nil
}

// Compute turns the hosts' summaries into pod usage, given the previous samples, and returns
// the samples to keep for next time (only those of pods still present).
//
// A pod's CPU rate is taken between its previous sample and this one; for a pod seen for the
// first time it is the average since the pod started (a zero counter at its start time), so
// `kubectl top` answers right after a pod starts. Pods without a rate (counter reset, no start
// time) and pods missing from pods (deleted, or not Vessel's) are left out.
//
// Vessel accounts resources per sandbox; containers that report their pod's counters (no
// per-container accounting) get the pod's usage on the first of them and zero on the others,
// so containers add up to the pod.
func Compute(prev map[sampleKey]Sample, sums []*statsv1alpha1.Summary, pods []PodInfo) ([]PodUsage, map[sampleKey]Sample) {
	byName := make(map[types.NamespacedName]PodInfo, len(pods))
	for _, p := range pods {
		byName[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
	}
	next := map[sampleKey]Sample{}
	var out []PodUsage
	for _, sum := range sums {
		if sum == nil {
			continue
		}
		for _, ps := range sum.Pods {
			info, ok := byName[types.NamespacedName{Namespace: ps.PodRef.Namespace, Name: ps.PodRef.Name}]
			if !ok || (ps.PodRef.UID != "" && info.UID != "" && string(info.UID) != ps.PodRef.UID) {
				continue
			}
			u, ok := podUsage(prev, next, info, ps)
			if ok {
				out = append(out, u)
			}
		}
	}
	return out, next
}

func podUsage(prev, next map[sampleKey]Sample, info PodInfo, ps statsv1alpha1.PodStats) (PodUsage, bool) {
	cur, ok := sample(ps.CPU, ps.Memory)
	if !ok {
		return PodUsage{}, false
	}
	key := sampleKey{uid: info.UID}
	next[key] = cur
	p, seen := prev[key]
	if !seen {
		if ps.StartTime.IsZero() {
			return PodUsage{}, false
		}
		p = Sample{Time: ps.StartTime.Time}
	}
	cpu, window, ok := Rate(p, cur)
	if !ok {
		return PodUsage{}, false
	}
	u := PodUsage{PodInfo: info, Timestamp: cur.Time, Window: window, CPU: cpu, Memory: cur.MemoryBytes}
	shared := true
	for _, c := range ps.Containers {
		cs, ok := sample(c.CPU, c.Memory)
		if !ok || cs.CPUNanos != cur.CPUNanos || cs.MemoryBytes != cur.MemoryBytes {
			shared = false
		}
	}
	for i, c := range ps.Containers {
		cu := ContainerUsage{Name: c.Name}
		switch {
		case shared && i == 0:
			cu.CPU, cu.Memory = cpu, cur.MemoryBytes
		case !shared:
			cs, ok := sample(c.CPU, c.Memory)
			if !ok {
				continue
			}
			ck := sampleKey{uid: info.UID, container: c.Name}
			next[ck] = cs
			cp, seen := prev[ck]
			if !seen {
				cp = Sample{Time: c.StartTime.Time}
			}
			if r, _, ok := Rate(cp, cs); ok {
				cu.CPU = r
			}
			cu.Memory = cs.MemoryBytes
		}
		u.Containers = append(u.Containers, cu)
	}
	return u, true
}

func sample(cpu *statsv1alpha1.CPUStats, mem *statsv1alpha1.MemoryStats) (Sample, bool) {
	if cpu == nil || cpu.UsageCoreNanoSeconds == nil {
		return Sample{}, false
	}
	s := Sample{Time: cpu.Time.Time, CPUNanos: *cpu.UsageCoreNanoSeconds}
	if mem != nil && mem.WorkingSetBytes != nil {
		s.MemoryBytes = *mem.WorkingSetBytes
	}
	return s, true
}
