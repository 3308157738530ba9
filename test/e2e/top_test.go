package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// TestKubectlTop checks that `kubectl top` works against vessel up: a pod burning CPU shows
// usage that an idle pod does not, the usage is refreshed (new samples, new windows), and
// `kubectl top nodes` lists the pod's Vessel node with the pod's usage.
func TestKubectlTop(t *testing.T) {
	s := startStack(t)
	image := s.pushTestImage(t)
	ctx := context.Background()
	pods := s.cs.CoreV1().Pods("default")
	for name, script := range map[string]string{"burner": "while :; do :; done", "idle": "sleep 3600"} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"top": name}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "c", Image: image, Command: []string{"/bin/sh", "-c", script}},
			}},
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var burnerNode string
	testenv.Eventually(t, time.Minute, "pods burner and idle Running", func(ctx context.Context) error {
		for _, name := range []string{"burner", "idle"} {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("%s: phase %s", name, p.Status.Phase)
			}
			if name == "burner" {
				burnerNode = p.Spec.NodeName
			}
		}
		return nil
	})

	// podCPU reads a pod's usage through the aggregated API, as kubectl top does.
	podMetrics := func(ctx context.Context, name string) (*metricsv1beta1.PodMetrics, error) {
		raw, err := s.cs.CoreV1().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", name).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("get podmetrics %s: %w: %s", name, err, raw)
		}
		var m metricsv1beta1.PodMetrics
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		return &m, nil
	}
	cpuOf := func(m *metricsv1beta1.PodMetrics) int64 {
		var sum resource.Quantity
		for _, c := range m.Containers {
			sum.Add(*c.Usage.Cpu())
		}
		return sum.MilliValue()
	}

	var first *metricsv1beta1.PodMetrics
	testenv.Eventually(t, time.Minute, "kubectl top pods shows burner busy", func(ctx context.Context) error {
		out, code := s.kubectl(t, "top", "pods", "--no-headers")
		if code != 0 {
			return fmt.Errorf("kubectl top pods: exit %d: %s", code, out)
		}
		cpu, ok := topColumn(out, "burner")
		if !ok || cpu < 50 {
			return fmt.Errorf("burner not busy in:\n%s", out)
		}
		if _, ok := topColumn(out, "idle"); !ok {
			return fmt.Errorf("idle missing in:\n%s", out)
		}
		m, err := podMetrics(ctx, "burner")
		first = m
		return err
	})
	t.Logf("first sample: burner %dm over %v", cpuOf(first), first.Window.Duration)

	// The next scrape (every 10 s) gives a new sample over a new window, still busy, while the
	// idle pod stays well below.
	testenv.Eventually(t, time.Minute, "burner re-sampled", func(ctx context.Context) error {
		m, err := podMetrics(ctx, "burner")
		if err != nil {
			return err
		}
		if !m.Timestamp.After(first.Timestamp.Time) {
			return fmt.Errorf("timestamp still %v", m.Timestamp)
		}
		idle, err := podMetrics(ctx, "idle")
		if err != nil {
			return err
		}
		if cpuOf(m) < 50 || cpuOf(idle) >= cpuOf(m)/2 {
			return fmt.Errorf("burner %dm, idle %dm", cpuOf(m), cpuOf(idle))
		}
		if mem := m.Containers[0].Usage.Memory().Value(); mem <= 0 {
			return fmt.Errorf("burner's working set %d", mem)
		}
		t.Logf("second sample: burner %dm, %s over %v at %v, idle %dm", cpuOf(m), m.Containers[0].Usage.Memory(), m.Window.Duration, m.Timestamp.Time, cpuOf(idle))
		return nil
	})

	out, code := s.kubectl(t, "top", "pods", "-l", "top=burner", "--containers")
	if code != 0 || !strings.Contains(out, "burner") || strings.Contains(out, "idle") {
		t.Errorf("kubectl top pods -l top=burner --containers: exit %d:\n%s", code, out)
	}
	t.Logf("kubectl top pods -l top=burner --containers:\n%s", out)

	testenv.Eventually(t, 30*time.Second, "kubectl top nodes lists burner's node", func(ctx context.Context) error {
		out, code := s.kubectl(t, "top", "nodes", "--no-headers")
		if code != 0 {
			return fmt.Errorf("kubectl top nodes: exit %d: %s", code, out)
		}
		if cpu, ok := topColumn(out, burnerNode); !ok || cpu < 50 {
			return fmt.Errorf("node %s not busy in:\n%s", burnerNode, out)
		}
		t.Logf("kubectl top nodes:\n%s", out)
		return nil
	})
	// The aggregator passes the real user on; the metrics API asks the apiserver about them.
	out, code = s.kubectl(t, "top", "pods", "--as", "nobody")
	if code == 0 || !strings.Contains(strings.ToLower(out), "forbidden") {
		t.Errorf("kubectl top pods --as nobody: exit %d, want forbidden:\n%s", code, out)
	}
	out, code = s.kubectl(t, "top", "node", burnerNode)
	if code != 0 || !strings.Contains(out, burnerNode) {
		t.Errorf("kubectl top node %s: exit %d:\n%s", burnerNode, code, out)
	}
}

// topColumn finds the row named name in `kubectl top … --no-headers` output and returns its
// CPU column in millicores.
func topColumn(out, name string) (int64, bool) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != name {
			continue
		}
		q, err := resource.ParseQuantity(f[1])
		if err != nil {
			return 0, false
		}
		return q.MilliValue(), true
	}
	return 0, false
}
