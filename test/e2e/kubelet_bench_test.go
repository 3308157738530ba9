package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// BenchmarkStreamsThroughAPIServer measures what kubectl users feel, through kube-apiserver to
// the host's kubelet API and into the sandbox: an exec round trip (`true`, SPDY, the protocol
// the apiserver speaks to kubelets) and port-forward throughput (an HTTP upload the demo server
// in the pod counts and discards).
//
//	go test -run '^$' -bench StreamsThroughAPIServer -ldflags "$(bash hack/version.sh)" ./test/e2e
func BenchmarkStreamsThroughAPIServer(b *testing.B) {
	s := startStack(b)
	image := s.pushTestImage(b)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sink"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sink", Image: image,
			Command: []string{"/vessel-demo"}, Env: []corev1.EnvVar{{Name: "PORT", Value: "9000"}}}}},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pods.Delete(context.Background(), "sink", metav1.DeleteOptions{}) })
	testenv.Eventually(b, time.Minute, "sink Running", func(ctx context.Context) error {
		p, err := pods.Get(ctx, "sink", metav1.GetOptions{})
		if err == nil && p.Status.Phase != corev1.PodRunning {
			err = fmt.Errorf("phase %s", p.Status.Phase)
		}
		return err
	})
	cfg := restConfigFor(b, s.dir)

	b.Run("exec-roundtrip", func(b *testing.B) {
		req := s.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("sink").SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "sink", Command: []string{"true"}, Stdout: true, Stderr: true}, parameterCodec())
		var lat []time.Duration
		for b.Loop() {
			exe, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			var out bytes.Buffer
			if err := exe.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &out}); err != nil {
				b.Fatal(err, out.String())
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	})

	b.Run("port-forward", func(b *testing.B) {
		rt, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			b.Fatal(err)
		}
		u, _ := url.Parse(s.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("sink").SubResource("portforward").URL().String())
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", u)
		ports, _ := testenv.FreePorts(1)
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{strconv.Itoa(ports[0]) + ":9000"}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = fw.ForwardPorts() }()
		defer close(stop)
		<-ready
		const perOp = 64 << 20
		payload := make([]byte, perOp)
		target := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) + "/discard"
		b.SetBytes(perOp)
		for b.Loop() {
			resp, err := http.Post(target, "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(bytes.TrimSpace(body)) != strconv.Itoa(perOp) {
				b.Fatalf("the pod received %q bytes, want %d", body, perOp)
			}
		}
	})
}

func parameterCodec() runtime.ParameterCodec { return scheme.ParameterCodec }
