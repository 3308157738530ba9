package oci

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vessel-dev/vessel/internal/crilog"
)

// The shim is a small process per container instance that outlives the host
// agent. It is the container init's parent (a child subreaper), so it alone
// can collect the exit status; it owns the read ends of the container's
// stdout/stderr pipes and writes them to the log file; and it records the
// exit in exitFile for whichever agent asks later. The agent starts it with
// ShimMain's arguments and a sync pipe on fd 3, on which the shim answers
// "ok <pid>" once the container runs or "error <message>".

// maxLogLine is where a long line is split into partial (P) records, as
// the kubelet's CRI log format expects from runtimes.
const maxLogLine = 16 * 1024

// exitRecord is written atomically by the shim when the container exits.
type exitRecord struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled"`
	FinishedAt time.Time `json:"finishedAt"`
	// StartError is set when the container never ran.
	StartError string `json:"startError,omitempty"`
}

type shimArgs struct {
	runc, runcRoot, id, dir, logPath, memoryCgroup string
	unified                                        bool
	// logMaxBytes and logMaxFiles bound the log (crilog.RotatingFile); zero
	// selects the kubelet's defaults (10 MiB, 5 files).
	logMaxBytes int64
	logMaxFiles int
}

func (a shimArgs) argv() []string {
	return []string{
		"--runc", a.runc, "--runc-root", a.runcRoot, "--id", a.id, "--dir", a.dir,
		"--log", a.logPath, "--memory-cgroup", a.memoryCgroup, "--unified=" + strconv.FormatBool(a.unified),
		"--log-max-bytes", strconv.FormatInt(a.logMaxBytes, 10), "--log-max-files", strconv.Itoa(a.logMaxFiles),
	}
}

// ShimMain runs the shim and returns its exit code. The vessel binary calls
// it for `vessel shim`; tests call it from TestMain.
func ShimMain(args []string) int {
	var a shimArgs
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	fs.StringVar(&a.runc, "runc", "", "OCI runtime binary")
	fs.StringVar(&a.runcRoot, "runc-root", "", "OCI runtime state root")
	fs.StringVar(&a.id, "id", "", "container ID")
	fs.StringVar(&a.dir, "dir", "", "container state directory (holds bundle/)")
	fs.StringVar(&a.logPath, "log", "", "CRI log file")
	fs.StringVar(&a.memoryCgroup, "memory-cgroup", "", "memory cgroup directory, for OOM detection")
	fs.BoolVar(&a.unified, "unified", false, "cgroup v2 host")
	fs.Int64Var(&a.logMaxBytes, "log-max-bytes", 0, "rotate the log before it grows past this size (0: 10 MiB)")
	fs.IntVar(&a.logMaxFiles, "log-max-files", 0, "log files kept including the current one (0: 5)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sync := os.NewFile(3, "sync")
	if err := runShim(a, sync); err != nil {
		fmt.Fprintf(os.Stderr, "shim %s: %v\n", a.id, err)
		return 1
	}
	return 0
}

func runShim(a shimArgs, syncPipe *os.File) error {
	reply := func(msg string) {
		if syncPipe != nil {
			syncPipe.WriteString(msg + "\n")
			syncPipe.Close()
			syncPipe = nil
		}
	}
	defer reply("error shim exited early")
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("subreaper: %w", err)
	}
	p := containerPaths(a.dir)
	if err := os.WriteFile(p.shimPid, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	// Rotation renames the log to .1, .2, …; crilog.Copy follows across it.
	logFile, err := crilog.OpenRotating(a.logPath, a.logMaxBytes, a.logMaxFiles)
	if err != nil {
		return startFailed(p, reply, fmt.Errorf("open log: %w", err))
	}
	defer logFile.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return startFailed(p, reply, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return startFailed(p, reply, err)
	}
	// With a stdin fifo (ContainerSpec.Stdin) the shim holds it open for
	// reading and writing for the container's life: the container reads it,
	// attaches write to it, and it never reaches EOF between attaches.
	var stdin *os.File
	if _, err := os.Lstat(p.stdin); err == nil {
		if stdin, err = os.OpenFile(p.stdin, os.O_RDWR, 0); err != nil {
			return startFailed(p, reply, fmt.Errorf("open stdin fifo: %w", err))
		}
		defer stdin.Close()
	}
	// runc run --detach hands its own stdio to the container process, so
	// stdout/stderr are the pipe ends; its error messages reach runcLog as
	// well. One run instead of create + start saves a runc process per
	// container start (~40 ms on a slow machine); nothing here needs the pause
	// between the two, as the pipes buffer what the container writes before
	// the copiers start.
	run := exec.Command(a.runc, "--root", a.runcRoot, "--log", p.runcLog,
		"run", "--detach", "--bundle", p.bundle, "--pid-file", p.pid, a.id)
	run.Stdout, run.Stderr = outW, errW
	if stdin != nil {
		run.Stdin = stdin
	}
	if err := run.Run(); err != nil {
		return startFailed(p, reply, fmt.Errorf("runc run: %w: %s", err, lastRuncError(p.runcLog)))
	}
	outW.Close()
	errW.Close()
	w := &criWriter{w: logFile}
	var copiers sync.WaitGroup
	for _, s := range []struct {
		name string
		r    io.Reader
	}{{"stdout", outR}, {"stderr", errR}} {
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			w.copyStream(s.name, s.r)
		}()
	}
	pidBytes, err := os.ReadFile(p.pid)
	if err != nil {
		return startFailed(p, reply, fmt.Errorf("read pid file: %w", err))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidBytes)))
	if err != nil {
		return startFailed(p, reply, fmt.Errorf("pid file: %w", err))
	}
	if err := writeFileAtomic(p.started, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return startFailed(p, reply, err)
	}
	reply("ok " + strconv.Itoa(pid))

	rec := exitRecord{ExitCode: 255}
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // no children left: the status was lost, keep 255
		}
		if got != pid {
			continue // an orphan reparented to us
		}
		switch {
		case ws.Exited():
			rec.ExitCode = ws.ExitStatus()
		case ws.Signaled():
			rec.Signal = int(ws.Signal())
			rec.ExitCode = 128 + rec.Signal
		}
		break
	}
	rec.FinishedAt = time.Now().UTC()
	if n, err := readOOMKills(a.memoryCgroup, a.unified); err == nil && n > 0 {
		rec.OOMKilled = true
	}
	// Processes that inherited the pipes die with the container's PID
	// namespace, so the copiers finish promptly; the bound only guards
	// against a pipe held open from outside the container.
	done := make(chan struct{})
	go func() { copiers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return writeExit(p, rec)
}

func startFailed(p paths, reply func(string), err error) error {
	writeExit(p, exitRecord{ExitCode: 128, FinishedAt: time.Now().UTC(), StartError: err.Error()})
	reply("error " + strings.ReplaceAll(err.Error(), "\n", " "))
	return err
}

func writeExit(p paths, rec exitRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return writeFileAtomic(p.exit, b)
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lastRuncError extracts the last message runc logged (JSON or text).
func lastRuncError(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := lines[len(lines)-1]
	var entry struct {
		Msg string `json:"msg"`
	}
	if json.Unmarshal([]byte(last), &entry) == nil && entry.Msg != "" {
		return entry.Msg
	}
	return last
}

// criWriter writes the CRI log format the kubelet reads:
// "<RFC3339Nano> <stream> <F|P> <content>\n", one record per line, with
// lines longer than maxLogLine split into P records ending in an F record.
type criWriter struct {
	mu sync.Mutex
	w  io.Writer
	// now is replaceable in tests.
	now func() time.Time
}

func (c *criWriter) copyStream(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			tag := "F"
			if isPrefix {
				tag = "P"
			}
			c.record(stream, tag, line)
		}
		if err != nil {
			return
		}
	}
}

func (c *criWriter) record(stream, tag string, content []byte) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	buf := make([]byte, 0, len(content)+64)
	buf = now().UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	buf = append(buf, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Write(buf)
}
