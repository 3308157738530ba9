package admission

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchHandler is a cluster at the profile limit (10 profiles, the match
// is the last by name, with a sidecar) and a Deployment-like pod with two
// containers, requests, volumes and labels. The Authorizer is a fake, so
// the numbers exclude the SubjectAccessReview round trip.
func benchHandler(b *testing.B) (*Handler, *admissionv1.AdmissionRequest) {
	h, cluster, authz := newTestHandler(b)
	cluster.profiles = nil
	for i := range 9 {
		cluster.profiles = append(cluster.profiles, activeProfile(fmt.Sprintf("other-%d", i), fmt.Sprintf("team-%d-*", i)))
	}
	last := activeProfile("zz-web", "shop-*", corev1.Container{Name: "log-shipper", Image: "fluent-bit"})
	last.Spec.Selectors[0].Labels = map[string]string{"app": "web*", "tier": "?ront"}
	cluster.profiles = append(cluster.profiles, last)
	authz.allowed["zz-web"] = []string{alice}

	pod := basicPod()
	pod.Namespace = "shop-prod"
	pod.Labels = map[string]string{"app": "web-frontend", "tier": "front", "pod-template-hash": "5d8f7c9b4"}
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7c9b4", UID: "u"}}
	pod.Spec.Containers = []corev1.Container{
		{Name: "app", Image: "shop/web:1.2.3", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}},
			Ports:        []corev1.ContainerPort{{ContainerPort: 8080}},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/shop"}, {Name: "cache", MountPath: "/cache"}}},
		{Name: "proxy", Image: "envoy:1.30", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}},
	}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "shop"}}}},
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	req := podRequest(b, pod)
	// Check once that the benchmark measures an admitted, patched pod.
	if resp := h.mutatePod(context.Background(), req); !resp.Allowed || len(resp.Patch) == 0 {
		b.Fatalf("benchmark pod not admitted with a patch: %s", message(resp))
	}
	return h, req
}

// BenchmarkDecision is the decision alone: decode the pod, match, check,
// authorize, size, build the patch.
func BenchmarkDecision(b *testing.B) {
	h, req := benchHandler(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.mutatePod(ctx, req)
	}
}

// BenchmarkServeHTTP adds the AdmissionReview envelope, without a network.
func BenchmarkServeHTTP(b *testing.B) {
	h, req := benchHandler(b)
	body := reviewBody(b, req)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, PathMutatePods, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("HTTP %d", w.Code)
		}
	}
}

// BenchmarkHTTPS measures what the apiserver sees: a TLS server on
// loopback, kept-alive HTTP/1.1 connections (the apiserver does not use
// HTTP/2 for URL webhooks that are not on localhost), and latency
// percentiles per request besides the usual time per request.
//
//   - concurrency=N: N workers send back to back (closed loop). With 50 on 2
//     shared cores the server is saturated and the latency is queueing
//     (Little's law: 50 / throughput), so this reading is a throughput one.
//   - burst=50: 50 requests released at once, as when a Deployment or Job
//     creates 50 pods together; the next burst starts when all are answered.
//   - floor: the sustained 50 against a handler that only reads the body and
//     writes a canned answer: what the client, TLS and net/http cost on this
//     machine, below which no webhook can go.
func BenchmarkHTTPS(b *testing.B) {
	for _, concurrency := range []int{1, 50} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			h, req := benchHandler(b)
			benchHTTPS(b, h, reviewBody(b, req), concurrency, false)
		})
	}
	b.Run("burst=50", func(b *testing.B) {
		h, req := benchHandler(b)
		benchHTTPS(b, h, reviewBody(b, req), 50, true)
	})
	b.Run("floor/concurrency=50", func(b *testing.B) {
		h, req := benchHandler(b)
		body := reviewBody(b, req)
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, PathMutatePods, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, r)
		canned := rec.Body.Bytes()
		noop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(canned)
		})
		benchHTTPS(b, noop, body, 50, false)
	})
}

// benchHTTPS serves h over TLS and posts body b.N times from concurrency
// workers, either back to back or in bursts of concurrency requests, and
// reports p50/p99 latency per request and requests per second.
func benchHTTPS(b *testing.B, h http.Handler, body []byte, concurrency int, burst bool) {
	srv := httptest.NewUnstartedServer(h)
	// Dials the transport started and then abandoned fail their handshake at
	// Close; that is not a result.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = concurrency
	url := srv.URL + PathMutatePods

	send := func() error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
	// Open one connection per worker up front, concurrently, so TLS
	// handshakes are not timed.
	warm := make(chan error, concurrency)
	for range concurrency {
		go func() { warm <- send() }()
	}
	for range concurrency {
		if err := <-warm; err != nil {
			b.Fatal(err)
		}
	}

	var next atomic.Int64
	latencies := make([][]time.Duration, concurrency)
	errs := make(chan error, b.N)
	// worker w sends requests while there are any left; in burst mode it
	// sends one, as one of a burst.
	worker := func(w int, wg *sync.WaitGroup) {
		defer wg.Done()
		for next.Add(1) <= int64(b.N) {
			start := time.Now()
			if err := send(); err != nil {
				errs <- err
				return
			}
			latencies[w] = append(latencies[w], time.Since(start))
			if burst {
				return
			}
		}
	}
	var wg sync.WaitGroup
	b.ResetTimer()
	if burst {
		for sent := 0; sent < b.N; sent += concurrency {
			for w := range min(concurrency, b.N-sent) {
				wg.Add(1)
				go worker(w, &wg)
			}
			wg.Wait()
		}
	} else {
		for w := range concurrency {
			wg.Add(1)
			go worker(w, &wg)
		}
		wg.Wait()
	}
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[int(p*float64(len(all)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "req/s")
}
