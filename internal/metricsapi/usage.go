// Package metricsapi serves metrics.k8s.io/v1beta1 (what `kubectl top` reads) from the pod
// statistics of Vessel's hosts: a Scraper reads every Host's kubelet API /stats/summary and turns
// two samples of each cumulative CPU counter into a rate, and Handler answers the aggregated API
// with PodMetrics and, for each Vessel Node, NodeMetrics equal to its pod's usage.
package metricsapi

import "time"

// Sample is one reading of a cumulative CPU counter and of the memory working set.
type Sample struct {
	Time        time.Time
	CPUNanos    uint64 // cumulative CPU time in core-nanoseconds
	MemoryBytes uint64 // working set
}

// Rate returns the CPU usage between prev and cur in nanocores (1e9 = one core busy) and the
// window it covers. ok is false when no rate can be derived: cur is not after prev, or the
// counter went backwards (the container restarted, so the counter restarted from zero).
func Rate(prev, cur Sample) (nanoCores uint64, window time.Duration, ok bool) {
	window = cur.Time.Sub(prev.Time)
	if window <= 0 || cur.CPUNanos < prev.CPUNanos {
		return 0, 0, false
	}
	delta := float64(cur.CPUNanos - prev.CPUNanos)
	return uint64(delta / window.Seconds()), window, true
}
