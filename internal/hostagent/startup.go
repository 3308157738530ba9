package hostagent

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// startupSteps is the order the host-side steps of a first start run in.
var startupSteps = []string{vesselv1.StepNetwork, vesselv1.StepVolumes, vesselv1.StepImage, vesselv1.StepContainerStart}

// metrics are the host agent's Prometheus metrics, served on the kubelet API's /metrics.
type metrics struct {
	registry *prometheus.Registry
	// startStep observes each step of every sandbox's first start: the per-phase start latency
	// histogram the design asks for.
	startStep *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		startStep: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vessel_sandbox_start_step_duration_seconds",
			Help: "Duration of each host-side step of a sandbox's first start (network, volumes, image, containerStart).",
			// 1 ms … ~16 s: a cached start is tens of milliseconds per step, a cold pull seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"step"}),
	}
	m.registry.MustRegister(m.startStep)
	return m
}

// MetricsHandler serves the agent's metrics in the Prometheus text format.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{})
}

// startupClock adds up how long the steps of one sandbox's first start take, until a status
// reports them. It belongs to the sandbox's worker; steps may be timed concurrently.
type startupClock struct {
	mu    sync.Mutex
	steps map[string]time.Duration
	// done: the durations are in the Sandbox's status (or were before this agent started), so
	// later restarts of containers are not first starts.
	done bool
}

// time runs f and, while the first start is being measured, adds its duration to step.
func (c *startupClock) time(step string, f func() error) error {
	if c.done {
		return f()
	}
	begin := time.Now()
	err := f()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.steps == nil {
		c.steps = map[string]time.Duration{}
	}
	c.steps[step] += time.Since(begin)
	return err
}

// report returns the steps for Sandbox.status in their order; steps that did not run (no
// volumes to write) are reported as zero so every first start has the same shape.
func (c *startupClock) report() []vesselv1.StartupStep {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]vesselv1.StartupStep, 0, len(startupSteps))
	for _, s := range startupSteps {
		out = append(out, vesselv1.StartupStep{Step: s, Duration: metav1.Duration{Duration: c.steps[s]}})
	}
	return out
}
