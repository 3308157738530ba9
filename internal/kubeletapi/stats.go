package kubeletapi

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// statsSummary serves GET /stats/summary: the provider's Summary as JSON.
func (s *Server) statsSummary(w http.ResponseWriter, req *http.Request) {
	sum, err := s.cfg.Provider.Stats(req.Context())
	if err != nil {
		httpError(w, fmt.Errorf("stats summary: %w", err))
		return
	}
	writeJSON(w, sum)
}

// metricsResource serves GET /metrics/resource in the Prometheus text format
// with the kubelet's metric names and labels, as metrics-server scrapes it.
func (s *Server) metricsResource(w http.ResponseWriter, req *http.Request) {
	sum, err := s.cfg.Provider.Stats(req.Context())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	WriteResourceMetrics(bw, sum, err != nil)
	if err != nil {
		s.log.Warn("resource metrics: stats failed", "err", err)
	}
}

// WriteResourceMetrics renders sum as the kubelet's /metrics/resource:
// node_*, pod_* and container_* CPU (cumulative seconds) and memory
// (working set bytes) samples with millisecond timestamps, container start
// times, and resource_scrape_error. sum may be nil when scrapeError is set.
func WriteResourceMetrics(w *bufio.Writer, sum *statsv1alpha1.Summary, scrapeError bool) {
	type sample struct {
		labels string
		value  float64
		t      time.Time
	}
	families := []struct {
		name, help, typ string
		samples         []sample
	}{
		{name: "container_cpu_usage_seconds_total", help: "Cumulative cpu time consumed by the container in core-seconds", typ: "counter"},
		{name: "container_memory_working_set_bytes", help: "Current working set of the container in bytes", typ: "gauge"},
		{name: "container_start_time_seconds", help: "Start time of the container since unix epoch in seconds", typ: "gauge"},
		{name: "node_cpu_usage_seconds_total", help: "Cumulative cpu time consumed by the node in core-seconds", typ: "counter"},
		{name: "node_memory_working_set_bytes", help: "Current working set of the node in bytes", typ: "gauge"},
		{name: "pod_cpu_usage_seconds_total", help: "Cumulative cpu time consumed by the pod in core-seconds", typ: "counter"},
		{name: "pod_memory_working_set_bytes", help: "Current working set of the pod in bytes", typ: "gauge"},
		{name: "resource_scrape_error", help: "1 if there was an error while getting container metrics, 0 otherwise", typ: "gauge"},
	}
	const (
		cCPU = iota
		cMem
		cStart
		nCPU
		nMem
		pCPU
		pMem
		scrapeErr
	)
	add := func(f int, labels string, v float64, t time.Time) {
		families[f].samples = append(families[f].samples, sample{labels, v, t})
	}
	cpu := func(f int, labels string, c *statsv1alpha1.CPUStats) {
		if c != nil && c.UsageCoreNanoSeconds != nil {
			add(f, labels, float64(*c.UsageCoreNanoSeconds)/1e9, c.Time.Time)
		}
	}
	mem := func(f int, labels string, m *statsv1alpha1.MemoryStats) {
		if m != nil && m.WorkingSetBytes != nil {
			add(f, labels, float64(*m.WorkingSetBytes), m.Time.Time)
		}
	}
	if sum != nil {
		cpu(nCPU, "", sum.Node.CPU)
		mem(nMem, "", sum.Node.Memory)
		for _, p := range sum.Pods {
			pl := labelSet("namespace", p.PodRef.Namespace, "pod", p.PodRef.Name)
			cpu(pCPU, pl, p.CPU)
			mem(pMem, pl, p.Memory)
			for _, c := range p.Containers {
				cl := labelSet("container", c.Name, "namespace", p.PodRef.Namespace, "pod", p.PodRef.Name)
				cpu(cCPU, cl, c.CPU)
				mem(cMem, cl, c.Memory)
				if !c.StartTime.IsZero() {
					add(cStart, cl, float64(c.StartTime.UnixNano())/1e9, time.Time{})
				}
			}
		}
	}
	errValue := 0.0
	if scrapeError {
		errValue = 1
	}
	add(scrapeErr, "", errValue, time.Time{})
	for _, f := range families {
		fmt.Fprintf(w, "# HELP %s [STABLE] %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		for _, s := range f.samples {
			w.WriteString(f.name)
			w.WriteString(s.labels)
			w.WriteByte(' ')
			w.WriteString(strconv.FormatFloat(s.value, 'g', -1, 64))
			if !s.t.IsZero() {
				w.WriteByte(' ')
				w.WriteString(strconv.FormatInt(s.t.UnixMilli(), 10))
			}
			w.WriteByte('\n')
		}
	}
}

// labelSet renders {k1="v1",k2="v2"} with Prometheus escaping.
func labelSet(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
