package metricsapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// Group and Version are the API this package serves.
const (
	Group   = "metrics.k8s.io"
	Version = "v1beta1"
)

var groupVersion = Group + "/" + Version

// Handler serves metrics.k8s.io/v1beta1 to the apiserver's aggregator.
//
// Discovery documents (/apis, /apis/metrics.k8s.io, /apis/metrics.k8s.io/v1beta1) are public,
// as the apiserver's own are to any authenticated user. Resource requests need an identity from
// Authenticator (the front proxy's request headers) and a decision from Authorizer for verb
// get or list on pods or nodes in group metrics.k8s.io.
type Handler struct {
	Source        Source
	Authenticator authenticator.Request
	Authorizer    authorizer.Authorizer
	Logger        *slog.Logger
}

// request is a parsed resource path.
type request struct {
	resource, namespace, name string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "only get and list are served")
		return
	}
	path := strings.TrimSuffix(req.URL.Path, "/")
	switch path {
	case "/healthz", "/livez", "/readyz":
		w.Write([]byte("ok"))
		return
	case "/apis":
		writeJSON(w, &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
			Groups: []metav1.APIGroup{apiGroup()}})
		return
	case "/apis/" + Group:
		g := apiGroup()
		g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
		writeJSON(w, &g)
		return
	case "/apis/" + groupVersion:
		writeJSON(w, resourceList())
		return
	}
	r, ok := parsePath(path)
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	if !h.authorize(w, req, r) {
		return
	}
	usage, err := h.Source.Usage(req.Context())
	if err != nil && len(usage) == 0 {
		h.Logger.Warn("metrics unavailable", "err", err)
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "metrics unavailable: "+err.Error())
		return
	}
	sel := labels.Everything()
	if s := req.URL.Query().Get("labelSelector"); s != "" {
		if sel, err = labels.Parse(s); err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "labelSelector: "+err.Error())
			return
		}
	}
	switch r.resource {
	case "pods":
		h.servePods(w, r, sel, usage)
	case "nodes":
		h.serveNodes(w, r, sel, usage)
	}
}

// parsePath accepts .../v1beta1/nodes[/name], .../v1beta1/pods and
// .../v1beta1/namespaces/{ns}/pods[/name].
func parsePath(path string) (request, bool) {
	rest, ok := strings.CutPrefix(path, "/apis/"+groupVersion+"/")
	if !ok {
		return request{}, false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && (parts[0] == "nodes" || parts[0] == "pods"):
		return request{resource: parts[0]}, true
	case len(parts) == 2 && parts[0] == "nodes" && parts[1] != "":
		return request{resource: "nodes", name: parts[1]}, true
	case len(parts) >= 3 && len(parts) <= 4 && parts[0] == "namespaces" && parts[1] != "" && parts[2] == "pods":
		r := request{resource: "pods", namespace: parts[1]}
		if len(parts) == 4 {
			if parts[3] == "" {
				return request{}, false
			}
			r.name = parts[3]
		}
		return r, true
	}
	return request{}, false
}

func (h *Handler) authorize(w http.ResponseWriter, req *http.Request, r request) bool {
	resp, ok, err := h.Authenticator.AuthenticateRequest(req)
	if err != nil || !ok {
		if err != nil {
			h.Logger.Debug("metrics API authentication failed", "err", err)
		}
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return false
	}
	verb := "list"
	if r.name != "" {
		verb = "get"
	}
	attrs := authorizer.AttributesRecord{
		User: resp.User, Verb: verb, Namespace: r.namespace, APIGroup: Group, APIVersion: Version,
		Resource: r.resource, Name: r.name, ResourceRequest: true, Path: req.URL.Path,
	}
	decision, reason, err := h.Authorizer.Authorize(req.Context(), attrs)
	if err != nil {
		h.Logger.Warn("metrics API authorization failed", "user", resp.User.GetName(), "err", err)
	}
	if decision != authorizer.DecisionAllow {
		msg := fmt.Sprintf("user %q cannot %s resource %q in API group %q", resp.User.GetName(), verb, r.resource, Group)
		if r.namespace != "" {
			msg += fmt.Sprintf(" in the namespace %q", r.namespace)
		}
		if reason != "" {
			msg += ": " + reason
		}
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, msg)
		return false
	}
	return true
}

func (h *Handler) servePods(w http.ResponseWriter, r request, sel labels.Selector, usage []PodUsage) {
	list := &metricsv1beta1.PodMetricsList{TypeMeta: metav1.TypeMeta{Kind: "PodMetricsList", APIVersion: groupVersion}}
	for _, u := range usage {
		if (r.namespace != "" && u.Namespace != r.namespace) || (r.name != "" && u.Name != r.name) || !sel.Matches(labels.Set(u.Labels)) {
			continue
		}
		m := metricsv1beta1.PodMetrics{
			ObjectMeta: metav1.ObjectMeta{Name: u.Name, Namespace: u.Namespace, Labels: u.Labels, CreationTimestamp: metav1.Now()},
			Timestamp:  metav1.NewTime(u.Timestamp),
			Window:     metav1.Duration{Duration: u.Window},
		}
		for _, c := range u.Containers {
			m.Containers = append(m.Containers, metricsv1beta1.ContainerMetrics{Name: c.Name, Usage: resources(c.CPU, c.Memory)})
		}
		list.Items = append(list.Items, m)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name)
	})
	if r.name != "" {
		if len(list.Items) == 0 {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("podmetrics.%s %q not found", Group, r.name))
			return
		}
		m := list.Items[0]
		m.TypeMeta = metav1.TypeMeta{Kind: "PodMetrics", APIVersion: groupVersion}
		writeJSON(w, &m)
		return
	}
	writeJSON(w, list)
}

// serveNodes answers NodeMetrics: a Vessel Node runs one pod, so its usage is that pod's.
// The label selector is matched against the Node's labels.
func (h *Handler) serveNodes(w http.ResponseWriter, r request, sel labels.Selector, usage []PodUsage) {
	list := &metricsv1beta1.NodeMetricsList{TypeMeta: metav1.TypeMeta{Kind: "NodeMetricsList", APIVersion: groupVersion}}
	for _, u := range usage {
		if u.Node == "" || (r.name != "" && u.Node != r.name) {
			continue
		}
		if !sel.Matches(labels.Set(u.NodeLabels)) {
			continue
		}
		list.Items = append(list.Items, metricsv1beta1.NodeMetrics{
			ObjectMeta: metav1.ObjectMeta{Name: u.Node, Labels: u.NodeLabels, CreationTimestamp: metav1.Now()},
			Timestamp:  metav1.NewTime(u.Timestamp),
			Window:     metav1.Duration{Duration: u.Window},
			Usage:      resources(u.CPU, u.Memory),
		})
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	if r.name != "" {
		if len(list.Items) == 0 {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("nodemetrics.%s %q not found", Group, r.name))
			return
		}
		m := list.Items[0]
		m.TypeMeta = metav1.TypeMeta{Kind: "NodeMetrics", APIVersion: groupVersion}
		writeJSON(w, &m)
		return
	}
	writeJSON(w, list)
}

func resources(nanoCores, memory uint64) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewScaledQuantity(int64(nanoCores), resource.Nano),
		corev1.ResourceMemory: *resource.NewQuantity(int64(memory), resource.BinarySI),
	}
}

func apiGroup() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: groupVersion, Version: Version}
	return metav1.APIGroup{Name: Group, Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv}
}

func resourceList() *metav1.APIResourceList {
	verbs := metav1.Verbs{"get", "list"}
	return &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: groupVersion,
		APIResources: []metav1.APIResource{
			{Name: "nodes", SingularName: "", Namespaced: false, Kind: "NodeMetrics", Verbs: verbs},
			{Name: "pods", SingularName: "", Namespaced: true, Kind: "PodMetrics", Verbs: verbs},
		},
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}
