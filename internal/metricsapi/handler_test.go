package metricsapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	"log/slog"
)

type fakeSource []PodUsage

func (f fakeSource) Usage(context.Context) ([]PodUsage, error) {
	return append([]PodUsage(nil), f...), nil
}

// headerAuth trusts X-Remote-User, as the request-header authenticator does after checking the
// front proxy's certificate.
type headerAuth struct{}

func (headerAuth) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	u := req.Header.Get("X-Remote-User")
	if u == "" {
		return nil, false, nil
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: u}}, true, nil
}

// allowIn allows user "alice" everything and user "bob" only namespace "team".
type allowIn struct{ seen []authorizer.Attributes }

func (a *allowIn) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	a.seen = append(a.seen, attrs)
	switch {
	case attrs.GetUser().GetName() == "alice":
		return authorizer.DecisionAllow, "", nil
	case attrs.GetUser().GetName() == "bob" && attrs.GetNamespace() == "team":
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionDeny, "no", nil
}

func testHandler() (*Handler, *allowIn) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src := fakeSource{
		{PodInfo: PodInfo{Namespace: "team", Name: "web", Node: "vessel-10-0-0-2", Labels: map[string]string{"app": "web"}, NodeLabels: map[string]string{"zone": "a"}},
			Timestamp: t0, Window: 10 * time.Second, CPU: 250e6, Memory: 64 << 20,
			Containers: []ContainerUsage{{Name: "web", CPU: 250e6, Memory: 64 << 20}}},
		{PodInfo: PodInfo{Namespace: "team", Name: "db", Node: "vessel-10-0-0-3", Labels: map[string]string{"app": "db"}},
			Timestamp: t0, Window: 10 * time.Second, CPU: 1e9, Memory: 1 << 30,
			Containers: []ContainerUsage{{Name: "db", CPU: 1e9, Memory: 1 << 30}}},
		{PodInfo: PodInfo{Namespace: "other", Name: "x", Node: "vessel-10-0-0-4"}, Timestamp: t0, Window: time.Second,
			Containers: []ContainerUsage{{Name: "x"}}},
	}
	authz := &allowIn{}
	return &Handler{Source: src, Authenticator: headerAuth{}, Authorizer: authz, Logger: slog.Default()}, authz
}

func get(t *testing.T, h http.Handler, path, user string, out any) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if user != "" {
		req.Header.Set("X-Remote-User", user)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if out != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, rec.Body)
		}
	}
	return rec.Code
}

func TestHandlerDiscovery(t *testing.T) {
	h, _ := testHandler()
	var rl metav1.APIResourceList
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1", "", &rl); code != 200 || rl.GroupVersion != "metrics.k8s.io/v1beta1" || len(rl.APIResources) != 2 {
		t.Fatalf("resource list: %d %+v", code, rl)
	}
	var g metav1.APIGroup
	if code := get(t, h, "/apis/metrics.k8s.io", "", &g); code != 200 || g.PreferredVersion.Version != "v1beta1" {
		t.Fatalf("group: %d %+v", code, g)
	}
	var gl metav1.APIGroupList
	if code := get(t, h, "/apis", "", &gl); code != 200 || len(gl.Groups) != 1 {
		t.Fatalf("groups: %d %+v", code, gl)
	}
}

func TestHandlerPods(t *testing.T) {
	h, authz := testHandler()
	var all metricsv1beta1.PodMetricsList
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/pods", "alice", &all); code != 200 || len(all.Items) != 3 {
		t.Fatalf("all pods: %d %d items", code, len(all.Items))
	}
	if all.Kind != "PodMetricsList" || all.Items[0].Namespace != "other" {
		t.Errorf("list = %+v", all)
	}
	if a := authz.seen[len(authz.seen)-1]; a.GetVerb() != "list" || a.GetResource() != "pods" || a.GetAPIGroup() != Group || a.GetNamespace() != "" {
		t.Errorf("attributes = %+v", a)
	}

	var team metricsv1beta1.PodMetricsList
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/namespaces/team/pods?labelSelector=app%3Dweb", "bob", &team); code != 200 || len(team.Items) != 1 {
		t.Fatalf("selected pods: %d %+v", code, team)
	}
	c := team.Items[0].Containers[0]
	if c.Usage.Cpu().MilliValue() != 250 || c.Usage.Memory().Value() != 64<<20 || team.Items[0].Window.Duration != 10*time.Second {
		t.Errorf("web usage = %v %v", c.Usage.Cpu(), c.Usage.Memory())
	}

	var one metricsv1beta1.PodMetrics
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/namespaces/team/pods/db", "bob", &one); code != 200 || one.Name != "db" || one.Kind != "PodMetrics" {
		t.Fatalf("get db: %d %+v", code, one)
	}
	if a := authz.seen[len(authz.seen)-1]; a.GetVerb() != "get" || a.GetName() != "db" || a.GetNamespace() != "team" {
		t.Errorf("attributes = %+v", a)
	}
	for path, want := range map[string]int{
		"/apis/metrics.k8s.io/v1beta1/namespaces/team/pods/nope":                 404,
		"/apis/metrics.k8s.io/v1beta1/namespaces/other/pods":                     403, // bob only in team
		"/apis/metrics.k8s.io/v1beta1/pods":                                      403,
		"/apis/metrics.k8s.io/v1beta1/namespaces/team/pods?labelSelector=%3D%3D": 400,
		"/apis/metrics.k8s.io/v1beta1/namespaces/team/secrets":                   404,
	} {
		if code := get(t, h, path, "bob", nil); code != want {
			t.Errorf("GET %s as bob = %d, want %d", path, code, want)
		}
	}
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/pods", "", nil); code != 401 {
		t.Errorf("anonymous = %d, want 401", code)
	}
}

func TestHandlerNodes(t *testing.T) {
	h, _ := testHandler()
	var nodes metricsv1beta1.NodeMetricsList
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/nodes", "alice", &nodes); code != 200 || len(nodes.Items) != 3 {
		t.Fatalf("nodes: %d %+v", code, nodes)
	}
	if n := nodes.Items[1]; n.Name != "vessel-10-0-0-3" || n.Usage.Cpu().MilliValue() != 1000 || n.Usage.Memory().Value() != 1<<30 {
		t.Errorf("db's node = %+v", n)
	}
	var sel metricsv1beta1.NodeMetricsList
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=zone%3Da", "alice", &sel); code != 200 || len(sel.Items) != 1 || sel.Items[0].Name != "vessel-10-0-0-2" {
		t.Fatalf("selected nodes: %d %+v", code, sel)
	}
	var one metricsv1beta1.NodeMetrics
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/nodes/vessel-10-0-0-2", "alice", &one); code != 200 || one.Usage.Cpu().MilliValue() != 250 {
		t.Fatalf("node: %d %+v", code, one)
	}
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/nodes/vessel-9", "alice", nil); code != 404 {
		t.Errorf("missing node = %d", code)
	}
	if code := get(t, h, "/apis/metrics.k8s.io/v1beta1/nodes", "bob", nil); code != 403 {
		t.Errorf("bob nodes = %d", code)
	}
}

func u64(v uint64) *uint64 { return &v }

func TestCompute(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pods := []PodInfo{{Namespace: "ns", Name: "burn", UID: "u1", Node: "vessel-a"}, {Namespace: "ns", Name: "two", UID: "u2", Node: "vessel-b"}}
	summary := func(at time.Time, burnCPU, twoCPU uint64) []*statsv1alpha1.Summary {
		cpu := func(v uint64) *statsv1alpha1.CPUStats {
			return &statsv1alpha1.CPUStats{Time: metav1.NewTime(at), UsageCoreNanoSeconds: u64(v)}
		}
		mem := &statsv1alpha1.MemoryStats{Time: metav1.NewTime(at), WorkingSetBytes: u64(100)}
		start := metav1.NewTime(t0)
		return []*statsv1alpha1.Summary{{Pods: []statsv1alpha1.PodStats{
			{PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "burn", UID: "u1"}, StartTime: start, CPU: cpu(burnCPU), Memory: mem,
				Containers: []statsv1alpha1.ContainerStats{{Name: "c", StartTime: start, CPU: cpu(burnCPU), Memory: mem}}},
			// Two containers sharing the sandbox's counters: the first carries the pod's usage.
			{PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "two", UID: "u2"}, StartTime: start, CPU: cpu(twoCPU), Memory: mem,
				Containers: []statsv1alpha1.ContainerStats{{Name: "a", StartTime: start, CPU: cpu(twoCPU), Memory: mem}, {Name: "b", StartTime: start, CPU: cpu(twoCPU), Memory: mem}}},
			// Deleted meanwhile: not listed.
			{PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "gone", UID: "u3"}, StartTime: start, CPU: cpu(1), Memory: mem},
			// Replaced under the same name: the UID differs.
			{PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "burn", UID: "old"}, StartTime: start, CPU: cpu(1), Memory: mem},
		}}}
	}
	// First sample: average since the pod started 10 s earlier.
	got, prev := Compute(nil, summary(t0.Add(10*time.Second), 10e9, 1e9), pods)
	if len(got) != 2 || got[0].CPU != 1e9 || got[0].Window != 10*time.Second || got[1].CPU != 100e6 {
		t.Fatalf("first = %+v", got)
	}
	if c := got[1].Containers; len(c) != 2 || c[0].CPU != 100e6 || c[1].CPU != 0 || c[1].Memory != 0 {
		t.Errorf("shared containers = %+v", c)
	}
	// Second sample 5 s later: burn used half a core meanwhile.
	got, _ = Compute(prev, summary(t0.Add(15*time.Second), 12.5e9, 1e9), pods)
	if len(got) != 2 || got[0].CPU != 500e6 || got[0].Window != 5*time.Second || got[0].Containers[0].CPU != 500e6 || got[1].CPU != 0 {
		t.Fatalf("second = %+v", got)
	}
	if got[0].Node != "vessel-a" || got[0].Memory != 100 {
		t.Errorf("burn = %+v", got[0])
	}
}
