package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// TTY exec runs `runc exec` in the foreground with process.terminal set.
// runc accepts --console-socket (receiving the container pty's master over
// SCM_RIGHTS) only together with --detach, and a detached exec'd process is
// reparented away from the agent, which then cannot learn its exit code.
// In the foreground runc allocates the container's pty itself, copies
// between it and its own stdio, and on SIGWINCH copies its stdin's window
// size to it. So Vessel gives runc a host pty as stdio: the client's bytes
// go to the host pty's master, a resize is TIOCSWINSZ on that master plus
// SIGWINCH to runc, and runc's exit status is the process's. See
// docs/decisions/oci-runtime.md.

// ttyDrain bounds how long output is read after runc exited.
const ttyDrain = 2 * time.Second

// pidFileWait bounds how long a cancelled TTY exec waits for runc's pid file.
const pidFileWait = 2 * time.Second

// openPty returns a new pseudo-terminal pair with the slave in raw mode
// (runc sets it raw too, but only once it runs). The master is
// non-blocking on Go's poller, so Close interrupts a pending Read.
func openPty() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pty slave: %w", err)
	}
	if t, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); err == nil {
		// cfmakeraw
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, t)
	}
	return master, slave, nil
}

// execTTY runs runc exec with a terminal. processFile is the process.json
// (terminal: true) prepared by Exec; initial is the size to start with
// (zero: none known).
func (r *Runtime) execTTY(ctx context.Context, id runtime.ContainerID, processFile string, stdio runtime.Stdio, initial runtime.TerminalSize) (int, error) {
	master, slave, err := openPty()
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	closeMaster := sync.OnceFunc(func() { master.Close() })
	defer closeMaster()
	if initial != (runtime.TerminalSize{}) {
		setWinsize(master, initial)
	}
	pidFile := processFile + ".pid"
	defer os.Remove(pidFile)
	cmd := exec.Command(r.runc, "--root", filepath.Join(r.root, "runc"), "exec", "--pid-file", pidFile, "--process", processFile, string(id))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	err = cmd.Start()
	slave.Close() // runc holds it now; EIO on master once runc is gone
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var wg sync.WaitGroup
	done := make(chan struct{})
	defer func() {
		close(done)
		closeMaster()
		wg.Wait()
	}()
	if stdio.Resize != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case size, ok := <-stdio.Resize:
					if !ok {
						return
					}
					setWinsize(master, size)
					cmd.Process.Signal(unix.SIGWINCH) // runc copies the size inward
				case <-done:
					return
				}
			}
		}()
	}
	if stdio.Stdin != nil {
		// Not in wg: a Read on Stdin may block until the caller closes it.
		// Writes after master is closed fail, so the goroutine then ends.
		go io.Copy(master, stdio.Stdin)
	}
	out := stdio.Stdout
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(copied)
		io.Copy(out, master) // ends with EIO once runc exited, or on close
	}()

	exitCode := func(err error) (int, error) {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), nil
		}
		if err != nil {
			return -1, fmt.Errorf("exec in %s: %w", id, err)
		}
		return 0, nil
	}
	select {
	case err := <-waited:
		select {
		case <-copied:
		case <-time.After(ttyDrain):
		}
		return exitCode(err)
	case <-ctx.Done():
		killExec(cmd, pidFile)
		closeMaster()
		err := <-waited
		code, _ := exitCode(err)
		return code, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
}

// setWinsize applies size to the terminal.
func setWinsize(master *os.File, size runtime.TerminalSize) {
	rc, err := master.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
}

// killExec kills the exec'd process, whose pid runc wrote to pidFile: an
// interactive shell ignores SIGTERM, so it gets SIGKILL directly and runc
// then exits with it. runc writes the pid file just after the process starts,
// so a cancel that comes right after the process's first output waits a
// moment for it (on a loaded machine the shell printed before the file was
// there, and a SIGTERM-ignoring shell outlived the cancel). Without a pid
// file at all runc gets SIGTERM (which it forwards), then SIGKILL after a
// grace period.
func killExec(cmd *exec.Cmd, pidFile string) {
	for deadline := time.Now().Add(pidFileWait); ; time.Sleep(10 * time.Millisecond) {
		if pid := readPid(pidFile); pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Signal(unix.SIGTERM)
	go func() {
		time.Sleep(5 * time.Second)
		cmd.Process.Kill() // harmless once runc has been reaped
	}()
}
