package datadir

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestSecondAcquireFailsWithClearError(t *testing.T) {
	p := New(t.TempDir())
	l, err := p.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Acquire()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Acquire: %v, want ErrInUse", err)
	}
	want := "is used by another vessel (pid " + strconv.Itoa(os.Getpid()) + "); stop it first or pass a different --data-dir"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	l.Unlock()
	l2, err := p.Acquire()
	if err != nil {
		t.Fatalf("Acquire after Unlock: %v", err)
	}
	l2.Unlock()
	l2.Unlock() // idempotent
}
