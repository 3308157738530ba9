package hostagent

import (
	"k8s.io/kubernetes/third_party/forked/golang/expansion"

	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/runtime"
)

// Objects reads the ConfigMaps and Secrets a pod refers to. Implementations return errors
// satisfying apierrors.IsNotFound for missing objects.
type Objects interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// errConfig marks a container configuration that cannot be built (a missing ConfigMap key, a bad
// field path); it becomes the waiting reason CreateContainerConfigError.
var errConfig = errors.New("container config")

// podFacts are the values the downward API exposes that are not in the pod object itself.
type podFacts struct {
	PodIP, HostIP string
	NodeName      string
	// Size is the sandbox's size: the default for limits a container does not set.
	Size vesselv1.SandboxSize
}

// resolveEnv builds a container's environment like the kubelet: envFrom sources in order, then
// env entries in order, later names overriding earlier ones in place; values may reference
// earlier variables as $(NAME) ($$ escapes a dollar).
func resolveEnv(ctx context.Context, c *corev1.Container, pod *corev1.Pod, facts podFacts, objs Objects) ([]runtime.EnvVar, error) {
	var out []runtime.EnvVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			out[i].Value = value
			return
		}
		index[name] = len(out)
		out = append(out, runtime.EnvVar{Name: name, Value: value})
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			optional := from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
			cm, err := objs.ConfigMap(ctx, pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %q: %w", from.ConfigMapRef.Name, wrapConfig(err))
			}
			data = cm.Data
		case from.SecretRef != nil:
			optional := from.SecretRef.Optional != nil && *from.SecretRef.Optional
			s, err := objs.Secret(ctx, pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, wrapConfig(err))
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			name := from.Prefix + k
			if name == "" || strings.Contains(name, "=") {
				continue // the kubelet skips invalid names too
			}
			set(name, data[k])
		}
	}
	lookup := func(name string) (string, bool) {
		if i, ok := index[name]; ok {
			return out[i].Value, true
		}
		return "", false
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expansion.Expand(e.Value, func(name string) string {
				if v, ok := lookup(name); ok {
					return v
				}
				return "$(" + name + ")" // unknown references stay as written, like the kubelet
			}))
			continue
		}
		v, skip, err := envValueFrom(ctx, c, pod, facts, objs, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	return out, nil
}

func wrapConfig(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	return err
}

func envValueFrom(ctx context.Context, c *corev1.Container, pod *corev1.Pod, facts podFacts, objs Objects, src *corev1.EnvVarSource) (value string, skip bool, err error) {
	switch {
	case src.FieldRef != nil:
		v, err := fieldValue(pod, facts, src.FieldRef.FieldPath)
		return v, false, err
	case src.ResourceFieldRef != nil:
		v, err := resourceValue(pod, facts, c.Name, src.ResourceFieldRef)
		return v, false, err
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		optional := r.Optional != nil && *r.Optional
		cm, err := objs.ConfigMap(ctx, pod.Namespace, r.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", true, nil
			}
			return "", false, fmt.Errorf("configmap %q: %w", r.Name, wrapConfig(err))
		}
		if v, ok := cm.Data[r.Key]; ok {
			return v, false, nil
		}
		if v, ok := cm.BinaryData[r.Key]; ok {
			return string(v), false, nil
		}
		if optional {
			return "", true, nil
		}
		return "", false, fmt.Errorf("%w: couldn't find key %s in ConfigMap %s/%s", errConfig, r.Key, pod.Namespace, r.Name)
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		optional := r.Optional != nil && *r.Optional
		s, err := objs.Secret(ctx, pod.Namespace, r.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", true, nil
			}
			return "", false, fmt.Errorf("secret %q: %w", r.Name, wrapConfig(err))
		}
		if v, ok := s.Data[r.Key]; ok {
			return string(v), false, nil
		}
		if optional {
			return "", true, nil
		}
		return "", false, fmt.Errorf("%w: couldn't find key %s in Secret %s/%s", errConfig, r.Key, pod.Namespace, r.Name)
	}
	return "", false, fmt.Errorf("%w: empty valueFrom", errConfig)
}

// fieldValue implements the downward API's fieldRef paths.
func fieldValue(pod *corev1.Pod, facts podFacts, path string) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		if facts.NodeName != "" {
			return facts.NodeName, nil
		}
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return facts.PodIP, nil
	case "status.hostIP", "status.hostIPs":
		return facts.HostIP, nil
	}
	return "", fmt.Errorf("%w: unsupported fieldPath %q", errConfig, path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// formatMap is the downward API file format for labels and annotations: sorted `k="v"` lines.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%s", k, strconv.Quote(m[k]))
	}
	return b.String()
}

// resourceValue implements resourceFieldRef: a container's request or limit divided by the
// divisor and rounded up; a limit the container does not set defaults to the sandbox's size
// (the kubelet uses the node's allocatable — a Vessel node is the sandbox).
func resourceValue(pod *corev1.Pod, facts podFacts, defaultContainer string, ref *corev1.ResourceFieldSelector) (string, error) {
	name := ref.ContainerName
	if name == "" {
		name = defaultContainer
	}
	var c *corev1.Container
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				c = &list[i]
			}
		}
	}
	if c == nil {
		return "", fmt.Errorf("%w: resourceFieldRef: no container %q", errConfig, name)
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("%w: unsupported resource %q", errConfig, ref.Resource)
	}
	rn := corev1.ResourceName(res)
	var q resource.Quantity
	var set bool
	if kind == "limits" {
		q, set = c.Resources.Limits[rn]
	} else {
		q, set = c.Resources.Requests[rn]
	}
	if !set {
		switch {
		case kind == "limits" && rn == corev1.ResourceCPU:
			q = *resource.NewMilliQuantity(facts.Size.MilliVCPU, resource.DecimalSI)
		case kind == "limits" && rn == corev1.ResourceMemory:
			q = *resource.NewQuantity(facts.Size.MemoryMiB<<20, resource.BinarySI)
		case kind == "limits" && rn == corev1.ResourceEphemeralStorage:
			q = *resource.NewQuantity(facts.Size.DiskGiB<<30, resource.BinarySI)
		case kind == "requests":
			q = resource.Quantity{}
		default:
			return "", fmt.Errorf("%w: unsupported resource %q", errConfig, ref.Resource)
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		// Round up to whole divisor units; at least 1 for a limit, as the kubelet does.
		v := ceilDiv(q.MilliValue(), divisor.MilliValue())
		if kind == "limits" && v == 0 {
			v = 1
		}
		return strconv.FormatInt(v, 10), nil
	}
	return strconv.FormatInt(ceilDiv(q.Value(), divisor.Value()), 10), nil
}

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return a
	}
	return (a + b - 1) / b
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
