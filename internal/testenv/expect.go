package testenv

import (
	"context"
	"testing"
	"time"
)

// Eventually calls check until it returns nil or timeout passes, then fails t with the last
// error, so a failure says what was expected and what was last seen.
func Eventually(t testing.TB, timeout time.Duration, what string, check func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true after %s: %v", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
