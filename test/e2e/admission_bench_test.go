package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vessel-dev/vessel/internal/testenv"
)

// BenchmarkPodCreateThroughAPIServer measures pod CREATE round trips through kube-apiserver:
// in kube-system, which the pod webhook never sees (the baseline); in a namespace no profile
// selects (webhook called, pod passes untouched); and in a profile's namespace (webhook
// matches, authorizes with a SubjectAccessReview, sizes and mutates).
//
//	go test -run '^$' -bench PodCreate -ldflags "$(bash hack/version.sh)" ./test/e2e
func BenchmarkPodCreateThroughAPIServer(b *testing.B) {
	env := testenv.Get(b)
	matched := env.Namespace(b)
	subnet := env.Subnet(b)
	env.Profile(b, matched, subnet.Name)
	unmatched := env.Namespace(b)

	for _, c := range []struct{ name, ns string }{
		{"no-webhook", "kube-system"},
		{"webhook-no-match", unmatched},
		{"webhook-match", matched},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			pods := env.Client.CoreV1().Pods(c.ns)
			var lat []time.Duration
			var names []string
			b.Cleanup(func() {
				for _, n := range names {
					_ = pods.Delete(context.Background(), n, *metav1.NewDeleteOptions(0))
				}
			})
			for i := 0; b.Loop(); i++ {
				pod := simplePod(fmt.Sprintf("bench-%s-%d", c.name, i))
				pod.Spec.NodeName = "" // never scheduled by anything in this benchmark
				start := time.Now()
				if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				names = append(names, pod.Name)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
