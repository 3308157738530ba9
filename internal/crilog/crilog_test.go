package crilog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// rec renders one CRI record at t0+sec seconds.
func rec(sec int, stream, tag, content string) string {
	return fmt.Sprintf("%s %s %s %s\n", t0.Add(time.Duration(sec)*time.Second).Format(time.RFC3339Nano), stream, tag, content)
}

func writeLog(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "c.log")
}

func ptr[T any](v T) *T { return &v }

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Record
		wantErr bool
	}{
		{in: "2025-01-02T03:04:05.123456789Z stdout F hello world", want: Record{Time: t0.Add(123456789), Stream: StreamStdout, Content: []byte("hello world")}},
		{in: "2025-01-02T03:04:05Z stderr P part", want: Record{Time: t0, Stream: StreamStderr, Partial: true, Content: []byte("part")}},
		{in: "2025-01-02T03:04:05Z stdout F", want: Record{Time: t0, Stream: StreamStdout}},
		{in: "2025-01-02T03:04:05Z stdout F ", want: Record{Time: t0, Stream: StreamStdout, Content: []byte{}}},
		{in: "2025-01-02T03:04:05+01:00 stdout F:x a", want: Record{Time: t0.Add(-time.Hour), Stream: StreamStdout, Content: []byte("a")}},
		{in: "garbage", wantErr: true},
		{in: "2025-01-02T03:04:05Z stdin F x", wantErr: true},
		{in: "2025-01-02T03:04:05Z stdout X x", wantErr: true},
		{in: "yesterday stdout F x", wantErr: true},
	} {
		got, err := ParseRecord([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (!got.Time.Equal(tc.want.Time) || got.Stream != tc.want.Stream || got.Partial != tc.want.Partial || !bytes.Equal(got.Content, tc.want.Content)) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestFiles(t *testing.T) {
	path := writeLog(t, map[string]string{"c.log": "", "c.log.1": "", "c.log.10": "", "c.log.2": "", "c.log.tmp": "", "d.log.1": ""})
	got, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, filepath.Base(g))
	}
	if want := "c.log.10 c.log.2 c.log.1 c.log"; strings.Join(names, " ") != want {
		t.Errorf("Files = %v, want %s", names, want)
	}
}

func TestCopy(t *testing.T) {
	rotated := map[string]string{
		"c.log.2": rec(0, "stdout", "F", "one") + rec(1, "stderr", "F", "two"),
		"c.log.1": rec(2, "stdout", "P", "thr") + rec(3, "stdout", "F", "ee") + "not a record\n",
		"c.log":   rec(4, "stderr", "F", "four") + rec(5, "stdout", "F", "five"),
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		opts  Options
		want  string
	}{
		{name: "all files oldest first, partial joined, junk skipped", files: rotated, want: "one\ntwo\nthree\nfour\nfive\n"},
		{name: "tail 2", files: rotated, opts: Options{TailLines: ptr[int64](2)}, want: "four\nfive\n"},
		{name: "tail 0", files: rotated, opts: Options{TailLines: ptr[int64](0)}, want: ""},
		{name: "tail more than there is", files: rotated, opts: Options{TailLines: ptr[int64](100)}, want: "one\ntwo\nthree\nfour\nfive\n"},
		{name: "since: joined line keeps its first timestamp", files: rotated, opts: Options{Since: t0.Add(2 * time.Second)}, want: "three\nfour\nfive\n"},
		{name: "since excludes partial start", files: rotated, opts: Options{Since: t0.Add(3 * time.Second)}, want: "four\nfive\n"},
		{name: "timestamps", files: rotated, opts: Options{TailLines: ptr[int64](1), Timestamps: true}, want: "2025-01-02T03:04:10Z five\n"},
		{name: "limit bytes mid-line", files: rotated, opts: Options{LimitBytes: 6}, want: "one\ntw"},
		{name: "limit with tail and timestamps", files: rotated, opts: Options{TailLines: ptr[int64](1), Timestamps: true, LimitBytes: 4}, want: "2025"},
		{name: "stdout only", files: rotated, opts: Options{Stream: StreamStdout}, want: "one\nthree\nfive\n"},
		{name: "stderr only", files: rotated, opts: Options{Stream: StreamStderr}, want: "two\nfour\n"},
		{name: "missing log is empty", files: map[string]string{}, want: ""},
		{name: "interleaved partials per stream",
			files: map[string]string{"c.log": rec(0, "stdout", "P", "a") + rec(0, "stderr", "P", "x") + rec(1, "stdout", "F", "b") + rec(1, "stderr", "F", "y")},
			want:  "ab\nxy\n"},
		{name: "trailing partial without newline",
			files: map[string]string{"c.log": rec(0, "stdout", "F", "a") + rec(1, "stdout", "P", "b")},
			want:  "a\nb"},
		{name: "empty lines and spaces kept",
			files: map[string]string{"c.log": rec(0, "stdout", "F", "") + rec(1, "stdout", "F", "  x  ")},
			want:  "\n  x  \n"},
		{name: "incomplete last record ignored",
			files: map[string]string{"c.log": rec(0, "stdout", "F", "a") + "2025-01-02T03:04:05Z stdout F b"},
			want:  "a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, tc.files)
			var buf bytes.Buffer
			if err := Copy(context.Background(), &buf, path, tc.opts); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("got %q, want %q", buf.String(), tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowAcrossRotation writes many lines through a small RotatingFile
// while a follower reads; the follower must see every line once, in order.
func TestFollowAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := OpenRotating(path, 2000, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Lines before the reader starts; only the last 3 are wanted.
	for i := range 10 {
		w.Write([]byte(rec(0, "stdout", "F", fmt.Sprintf("old %d", i))))
	}
	var running atomic.Bool
	running.Store(true)
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Copy(context.Background(), &out, path, Options{
			Follow: true, TailLines: ptr[int64](3), Running: running.Load, PollInterval: time.Millisecond,
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "old 7\nold 8\nold 9\n" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	var want strings.Builder
	want.WriteString("old 7\nold 8\nold 9\n")
	for i := range 500 {
		// Partial records too: the joined line must survive a rotation in between.
		w.Write([]byte(rec(1, "stdout", "P", fmt.Sprintf("new %d ", i))))
		w.Write([]byte(rec(1, "stdout", "F", "end")))
		fmt.Fprintf(&want, "new %d end\n", i)
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	w.Close()
	running.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not stop after the writer stopped")
	}
	if out.String() != want.String() {
		t.Errorf("followed output differs:\n got %d bytes: %.300q…\nwant %d bytes", len(out.String()), out.String(), want.Len())
	}
	files, _ := Files(path)
	if len(files) != 3 {
		t.Errorf("RotatingFile kept %d files, want 3: %v", len(files), files)
	}
}

func TestFollowStopsOnContextAndLimit(t *testing.T) {
	path := writeLog(t, map[string]string{"c.log": rec(0, "stdout", "F", "hello")})
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- Copy(ctx, &out, path, Options{Follow: true, PollInterval: time.Millisecond}) }()
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "hello\n" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil || out.String() != "hello\n" {
		t.Fatalf("cancelled follow: err %v, output %q", err, out.String())
	}

	// LimitBytes ends a follow as soon as it is reached, with new data.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	defer f.Close()
	var out2 syncBuffer
	go func() {
		done <- Copy(context.Background(), &out2, path, Options{Follow: true, LimitBytes: 10, PollInterval: time.Millisecond})
	}()
	time.Sleep(20 * time.Millisecond)
	f.WriteString(rec(1, "stdout", "F", "world, more"))
	select {
	case err := <-done:
		if err != nil || out2.String() != "hello\nworl" {
			t.Fatalf("limited follow: err %v, output %q", err, out2.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not stop at LimitBytes")
	}
}

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := OpenRotating(path, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"aaaaa", "bbbbb", "ccccc", "dddddddddddddddd", "e"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for name, want := range map[string]string{"c.log": "e", "c.log.1": "dddddddddddddddd", "c.log.2": "ccccc"} {
		got, err := os.ReadFile(filepath.Join(filepath.Dir(path), name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("c.log.3 exists: rotation kept too many files")
	}
	// Reopening appends and counts the existing size.
	w, _ = OpenRotating(path, 10, 3)
	w.Write([]byte("1234567890"))
	w.Close()
	if got, _ := os.ReadFile(path); string(got) != "1234567890" {
		t.Errorf("after reopen c.log = %q", got)
	}
}
