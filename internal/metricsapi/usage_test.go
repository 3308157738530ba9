package metricsapi

import (
	"testing"
	"time"
)

func TestRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		prev, cur  Sample
		wantNano   uint64
		wantWindow time.Duration
		wantOK     bool
	}{
		{"one core for 10s", Sample{Time: t0, CPUNanos: 5e9}, Sample{Time: t0.Add(10 * time.Second), CPUNanos: 15e9}, 1e9, 10 * time.Second, true},
		{"quarter core", Sample{Time: t0}, Sample{Time: t0.Add(4 * time.Second), CPUNanos: 1e9}, 250e6, 4 * time.Second, true},
		{"idle", Sample{Time: t0, CPUNanos: 7}, Sample{Time: t0.Add(time.Second), CPUNanos: 7}, 0, time.Second, true},
		{"same time", Sample{Time: t0}, Sample{Time: t0, CPUNanos: 1}, 0, 0, false},
		{"clock backwards", Sample{Time: t0.Add(time.Second)}, Sample{Time: t0, CPUNanos: 1}, 0, 0, false},
		{"counter reset", Sample{Time: t0, CPUNanos: 10e9}, Sample{Time: t0.Add(time.Second), CPUNanos: 1e9}, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, w, ok := Rate(tc.prev, tc.cur)
			if n != tc.wantNano || w != tc.wantWindow || ok != tc.wantOK {
				t.Errorf("Rate = %d, %v, %v; want %d, %v, %v", n, w, ok, tc.wantNano, tc.wantWindow, tc.wantOK)
			}
		})
	}
}
