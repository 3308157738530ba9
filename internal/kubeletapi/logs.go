package kubeletapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vessel-dev/vessel/internal/crilog"
)

// containerLogs serves GET /containerLogs/{ns}/{pod}/{container} with the
// query parameters of PodLogOptions: follow, previous, tailLines,
// sinceSeconds, sinceTime, timestamps, limitBytes (and stream).
func (s *Server) containerLogs(w http.ResponseWriter, req *http.Request) {
	pod, container := podFrom(req), req.PathValue("container")
	if !hasContainer(pod, container) {
		http.Error(w, fmt.Sprintf("container %q not found in pod %s/%s", container, pod.Namespace, pod.Name), http.StatusNotFound)
		return
	}
	opts, previous, err := logOptions(req, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := s.longRunning(req)
	defer cancel()
	lf, err := s.cfg.Provider.ContainerLog(ctx, pod, container, previous)
	if err != nil {
		httpError(w, fmt.Errorf("logs of %s/%s/%s: %w", pod.Namespace, pod.Name, container, err))
		return
	}
	opts.Running = lf.Running
	if opts.Running == nil {
		opts.Running = func() bool { return false }
	}
	w.Header().Set("Content-Type", "text/plain")
	var out interface{ Write([]byte) (int, error) } = w
	if opts.Follow {
		// Every write crilog makes (it buffers until it waits for data)
		// reaches the client at once.
		w.WriteHeader(http.StatusOK)
		out = flushWriter{w, http.NewResponseController(w)}
	}
	if err := crilog.Copy(ctx, out, lf.Path, opts); err != nil && ctx.Err() == nil {
		s.log.Debug("container log copy ended", "pod", pod.Namespace+"/"+pod.Name, "container", container, "err", err)
	}
}

type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// logOptions parses the kubelet's containerLogs query parameters.
func logOptions(req *http.Request, now time.Time) (opts crilog.Options, previous bool, err error) {
	q := req.URL.Query()
	boolParam := func(name string) bool {
		if err != nil || q.Get(name) == "" {
			return false
		}
		v, perr := strconv.ParseBool(q.Get(name))
		if perr != nil {
			err = fmt.Errorf("invalid %s %q", name, q.Get(name))
		}
		return v
	}
	intParam := func(name string, min int64) *int64 {
		if err != nil || q.Get(name) == "" {
			return nil
		}
		v, perr := strconv.ParseInt(q.Get(name), 10, 64)
		if perr != nil || v < min {
			err = fmt.Errorf("invalid %s %q: must be an integer >= %d", name, q.Get(name), min)
			return nil
		}
		return &v
	}
	opts.Follow = boolParam("follow")
	previous = boolParam("previous")
	opts.Timestamps = boolParam("timestamps")
	opts.TailLines = intParam("tailLines", 0)
	if v := intParam("limitBytes", 1); v != nil {
		opts.LimitBytes = *v
	}
	if v := intParam("sinceSeconds", 1); v != nil {
		opts.Since = now.Add(-time.Duration(*v) * time.Second)
	}
	if t := q.Get("sinceTime"); t != "" && err == nil {
		if q.Get("sinceSeconds") != "" {
			return opts, false, fmt.Errorf("at most one of sinceTime or sinceSeconds may be specified")
		}
		opts.Since, err = time.Parse(time.RFC3339, t)
		if err != nil {
			err = fmt.Errorf("invalid sinceTime %q: %w", t, err)
		}
	}
	switch q.Get("stream") {
	case "", "All":
	case "Stdout":
		opts.Stream = crilog.StreamStdout
	case "Stderr":
		opts.Stream = crilog.StreamStderr
	default:
		if err == nil {
			err = fmt.Errorf("invalid stream %q", q.Get("stream"))
		}
	}
	return opts, previous, err
}
