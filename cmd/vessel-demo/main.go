// Command vessel-demo is the demo workload: a static HTTP server on :8080 (or $PORT) that answers
// every request with the name of the pod serving it ($POD_NAME, else the hostname), so a Service
// in front of several replicas shows the load spreading. It has no dependencies beyond the
// standard library so `vessel image build-demo` can build it offline with CGO_ENABLED=0.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", name) })
	// POST /discard reads and drops the body and answers with its size: a sink for measuring
	// throughput into a pod (vessel's port-forward benchmark).
	mux.HandleFunc("POST /discard", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	// As PID 1 in a sandbox nothing delivers a default SIGTERM action: handle it, or the pod
	// waits out its whole termination grace period.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	slog.Info("vessel-demo listening", "addr", srv.Addr, "pod", name)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("vessel-demo", "err", err)
		os.Exit(1)
	}
}
