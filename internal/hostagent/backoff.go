package hostagent

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Kubernetes' container restart back-off: the first restart is immediate, then 10 s doubling up
// to 5 min; a container that ran for 10 min resets it.
const (
	backoffBase  = 10 * time.Second
	backoffMax   = 5 * time.Minute
	backoffReset = 10 * time.Minute
)

// backoffDelay is the wait before restart number n+1 after n back-to-back failures (n = 0 for
// the first restart).
func backoffDelay(n int, base, max time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n; i++ {
		d *= 2
		if d >= max {
			return max
		}
	}
	return min(d, max)
}

// shouldRestart decides whether an exited container is started again.
func shouldRestart(policy corev1.RestartPolicy, sidecar bool, exitCode int) bool {
	if sidecar {
		return true
	}
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return true
	}
}

// backoff tracks one container's consecutive restarts.
type backoff struct {
	// n is the number of restarts in a row without a long run.
	n int
	// instance is the container instance the current wait follows.
	instance string
	until    time.Time
}

// next schedules the restart after instance exited at finished having started at started.
// It returns when the restart may happen. Calling it again for the same instance returns the
// same time.
func (b *backoff) next(instance string, started, finished time.Time, base, max time.Duration) time.Time {
	if b.instance == instance {
		return b.until
	}
	if !started.IsZero() && finished.Sub(started) >= backoffReset {
		b.n = 0
	}
	b.instance = instance
	b.until = finished.Add(backoffDelay(b.n, base, max))
	b.n++
	return b.until
}
