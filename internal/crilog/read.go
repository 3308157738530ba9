// Package crilog reads and writes container log files in the CRI format the
// kubelet uses: one record per line,
//
//	<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>
//
// where P marks a partial record continued by the next record of the same
// stream and F ends a line. A log is a file plus its rotated predecessors
// (name.log, name.log.1, name.log.2, … — higher numbers are older), as
// written by RotatingFile.
//
// Everything here works on files only: no clients, no container state. The
// caller says whether the writer may still append (Options.Running).
package crilog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Stream selects which of a container's output streams to return.
type Stream string

const (
	StreamAll    Stream = ""
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
)

// Options shape a read, with the meanings of the kubelet's PodLogOptions.
type Options struct {
	// Follow keeps reading as the log grows, across rotations, until ctx is
	// done, LimitBytes is reached, or Running reports false and everything
	// written so far has been returned.
	Follow bool
	// TailLines, when set, returns only the last n lines present when the
	// read starts (then, with Follow, everything new).
	TailLines *int64
	// Since drops lines whose timestamp is before it (zero: keep all).
	Since time.Time
	// Timestamps prefixes every line with its RFC3339Nano timestamp and a space.
	Timestamps bool
	// LimitBytes stops the read after this many bytes of output (0: no limit).
	LimitBytes int64
	// Stream restricts output to one stream (default both).
	Stream Stream
	// Running reports whether a writer may still append to the log. With
	// Follow, a false answer ends the read once the file is drained. Nil
	// means "always running": follow until ctx is done. It is called at most
	// once per PollInterval while the reader waits for data.
	Running func() bool
	// PollInterval is how often a following reader looks for new data,
	// rotation and Running (default 100ms).
	PollInterval time.Duration
}

// Record is one parsed CRI log record.
type Record struct {
	Time    time.Time
	Stream  Stream
	Partial bool
	Content []byte
}

// ErrMalformed is wrapped by ParseRecord for lines that are not CRI records.
var ErrMalformed = errors.New("malformed CRI log record")

// ParseRecord parses one line (without its trailing newline). Content
// aliases line.
func ParseRecord(line []byte) (Record, error) {
	var r Record
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return r, fmt.Errorf("%w: no stream field", ErrMalformed)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return r, fmt.Errorf("%w: timestamp: %v", ErrMalformed, err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return r, fmt.Errorf("%w: no tag field", ErrMalformed)
	}
	switch string(stream) {
	case "stdout":
		r.Stream = StreamStdout
	case "stderr":
		r.Stream = StreamStderr
	default:
		return r, fmt.Errorf("%w: stream %q", ErrMalformed, stream)
	}
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		// "<ts> stdout F" with nothing after it is an empty line.
		tag, content = rest, nil
	}
	// Tags may carry more flags separated by ':'; the first is P or F.
	tag, _, _ = bytes.Cut(tag, []byte{':'})
	switch string(tag) {
	case "F":
	case "P":
		r.Partial = true
	default:
		return r, fmt.Errorf("%w: tag %q", ErrMalformed, tag)
	}
	r.Time, r.Content = t, content
	return r, nil
}

// Files returns the files of the log at path, oldest first: the rotated
// files path.N … path.1 that exist, then path itself (even if absent).
func Files(path string) ([]string, error) {
	matches, err := filepath.Glob(globEscape(path) + ".*")
	if err != nil {
		return nil, err
	}
	type rotated struct {
		n    int
		name string
	}
	var rs []rotated
	for _, m := range matches {
		n, err := strconv.Atoi(strings.TrimPrefix(m, path+"."))
		if err != nil || n < 1 {
			continue // path.tmp, path.gz, …
		}
		rs = append(rs, rotated{n, m})
	}
	slices.SortFunc(rs, func(a, b rotated) int { return b.n - a.n })
	out := make([]string, 0, len(rs)+1)
	for _, r := range rs {
		out = append(out, r.name)
	}
	return append(out, path), nil
}

func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Copy writes the log at path to w as the kubelet's containerLogs endpoint
// does: partial records joined into whole lines, filtered and limited by
// opts. It returns nil when the log is exhausted (or, with Follow, when the
// writer stopped running or ctx is done) and an error only when the log
// cannot be read or w fails. A missing log reads as empty.
func Copy(ctx context.Context, w io.Writer, path string, opts Options) error {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 100 * time.Millisecond
	}
	out := &output{w: bufio.NewWriterSize(w, 32*1024), opts: opts, limit: opts.LimitBytes}
	err := copyLog(ctx, out, path, opts)
	if errors.Is(err, errLimit) {
		err = nil
	}
	if ferr := out.w.Flush(); err == nil && !errors.Is(ferr, errLimit) {
		err = ferr
	}
	return err
}

var errLimit = errors.New("limit reached")

func copyLog(ctx context.Context, out *output, path string, opts Options) error {
	files, err := Files(path)
	if err != nil {
		return err
	}
	p := &parser{out: out, partial: map[Stream]*pending{}}
	if opts.TailLines != nil {
		p.tail = newRing(int(max(*opts.TailLines, 0)))
	}
	var cur *os.File
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	for i, name := range files {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away meanwhile, or no output yet
		}
		if err != nil {
			return fmt.Errorf("open log %s: %w", name, err)
		}
		p.rest = p.rest[:0]
		if err := p.readAll(f); err != nil {
			f.Close()
			return err
		}
		if i == len(files)-1 && opts.Follow {
			cur = f // keep position in the live file
		} else {
			f.Close()
		}
	}
	if err := p.flushTail(); err != nil {
		return err
	}
	if !opts.Follow {
		return p.flushPartials()
	}
	return follow(ctx, p, path, cur, opts)
}

// follow reads new data from cur (nil: path not created yet), moving to the
// new file when path is rotated, until ctx is done or the writer stopped.
func follow(ctx context.Context, p *parser, path string, cur *os.File, opts Options) error {
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	ticker := time.NewTicker(opts.PollInterval)
	defer ticker.Stop()
	for {
		// Ask before draining, so a writer that stopped after our last read
		// cannot leave lines behind.
		running := opts.Running == nil || opts.Running()
		if cur != nil {
			if err := p.readAll(cur); err != nil {
				return err
			}
		}
		next, err := reopenIfRotated(path, cur)
		if err != nil {
			return err
		}
		if next != cur {
			if cur != nil {
				if err := p.readAll(cur); err != nil { // written just before the rename
					return err
				}
				cur.Close()
			}
			cur = next
			p.rest = p.rest[:0]
			continue
		}
		if !running {
			return p.flushPartials()
		}
		if err := p.out.w.Flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// reopenIfRotated returns cur while path still names it. Once cur has been
// rotated it returns the file written after it: the next newer rotated file
// if cur still exists as one, else the oldest remaining file (everything
// between was rotated away while the reader lagged), or path itself. A
// truncated file (copytruncate) is rewound.
func reopenIfRotated(path string, cur *os.File) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return cur, fmt.Errorf("stat log %s: %w", path, err)
	}
	if cur == nil {
		if err != nil {
			return nil, nil
		}
		return openIfExists(path)
	}
	cfi, cerr := cur.Stat()
	if cerr != nil {
		return cur, fmt.Errorf("stat log %s: %w", cur.Name(), cerr)
	}
	if err != nil {
		return cur, nil // between rename and create: keep draining cur
	}
	if os.SameFile(fi, cfi) {
		if off, err := cur.Seek(0, io.SeekCurrent); err == nil && fi.Size() < off {
			_, err = cur.Seek(0, io.SeekStart)
			return cur, err
		}
		return cur, nil
	}
	files, err := Files(path)
	if err != nil {
		return cur, err
	}
	next := files[0]
	for i, name := range files[:len(files)-1] {
		if nfi, err := os.Stat(name); err == nil && os.SameFile(nfi, cfi) {
			next = files[i+1]
			break
		}
	}
	f, err := openIfExists(next)
	if f == nil && err == nil {
		return cur, nil // renamed meanwhile; look again on the next poll
	}
	return f, err
}

func openIfExists(name string) (*os.File, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	return f, nil
}

// pending is an unfinished line of one stream.
type pending struct {
	t       time.Time
	content []byte
}

// line is one joined log line ready for output.
type line struct {
	t       time.Time
	content []byte
	newline bool
}

type parser struct {
	out *output
	// rest is an incomplete trailing record of the file being read.
	rest    []byte
	partial map[Stream]*pending
	// tail, while non-nil, buffers lines instead of writing them.
	tail *ring
	buf  []byte
}

// readAll consumes f to its current end.
func (p *parser) readAll(f *os.File) error {
	if p.buf == nil {
		p.buf = make([]byte, 64*1024)
	}
	for {
		n, err := f.Read(p.buf)
		if n > 0 {
			if perr := p.feed(p.buf[:n]); perr != nil {
				return perr
			}
		}
		if err == io.EOF {
			// A record cut by the end of a file that is no longer written
			// (rotation) is completed by nothing: callers reading a new file
			// start with a clean slate.
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log %s: %w", f.Name(), err)
		}
	}
}

func (p *parser) feed(data []byte) error {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			p.rest = append(p.rest, data...)
			return nil
		}
		rec := data[:i]
		if len(p.rest) > 0 {
			p.rest = append(p.rest, rec...)
			rec = p.rest
		}
		if err := p.record(rec); err != nil {
			return err
		}
		p.rest = p.rest[:0]
		data = data[i+1:]
	}
	return nil
}

func (p *parser) record(raw []byte) error {
	r, err := ParseRecord(raw)
	if err != nil {
		return nil // the kubelet skips what it cannot parse, and so do we
	}
	if p.out.opts.Stream != StreamAll && r.Stream != p.out.opts.Stream {
		return nil
	}
	pend := p.partial[r.Stream]
	if r.Partial {
		if pend == nil {
			pend = &pending{t: r.Time}
			p.partial[r.Stream] = pend
		}
		pend.content = append(pend.content, r.Content...)
		return nil
	}
	l := line{t: r.Time, content: r.Content, newline: true}
	if pend != nil {
		l.t = pend.t
		l.content = append(pend.content, r.Content...)
		delete(p.partial, r.Stream)
	}
	return p.emit(l)
}

func (p *parser) emit(l line) error {
	if !p.out.opts.Since.IsZero() && l.t.Before(p.out.opts.Since) {
		return nil
	}
	if p.tail != nil {
		p.tail.push(line{t: l.t, content: bytes.Clone(l.content), newline: l.newline})
		return nil
	}
	return p.out.line(l)
}

func (p *parser) flushTail() error {
	if p.tail == nil {
		return nil
	}
	lines := p.tail.lines()
	p.tail = nil
	for _, l := range lines {
		if err := p.out.line(l); err != nil {
			return err
		}
	}
	return nil
}

// flushPartials writes unfinished lines as they are, without a newline (as
// the kubelet does for a trailing P record).
func (p *parser) flushPartials() error {
	for _, s := range []Stream{StreamStdout, StreamStderr} {
		if pend := p.partial[s]; pend != nil {
			delete(p.partial, s)
			if err := p.emit(line{t: pend.t, content: pend.content}); err != nil {
				return err
			}
		}
	}
	return p.flushTail()
}

type output struct {
	w     *bufio.Writer
	opts  Options
	limit int64 // remaining bytes when opts.LimitBytes > 0
}

func (o *output) line(l line) error {
	if o.opts.Timestamps {
		var ts [64]byte
		b := l.t.UTC().AppendFormat(ts[:0], time.RFC3339Nano)
		if err := o.write(append(b, ' ')); err != nil {
			return err
		}
	}
	if err := o.write(l.content); err != nil {
		return err
	}
	if l.newline {
		return o.write([]byte{'\n'})
	}
	return nil
}

func (o *output) write(b []byte) error {
	if o.opts.LimitBytes > 0 {
		if int64(len(b)) >= o.limit {
			o.w.Write(b[:o.limit])
			o.limit = 0
			return errLimit
		}
		o.limit -= int64(len(b))
	}
	_, err := o.w.Write(b)
	return err
}

// ring keeps the last n lines.
type ring struct {
	buf   []line
	next  int
	full  bool
	limit int
}

func newRing(n int) *ring { return &ring{limit: n} }

func (r *ring) push(l line) {
	if r.limit == 0 {
		return
	}
	if len(r.buf) < r.limit {
		r.buf = append(r.buf, l)
		return
	}
	r.buf[r.next] = l
	r.next = (r.next + 1) % r.limit
	r.full = true
}

func (r *ring) lines() []line {
	if !r.full {
		return r.buf
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}
