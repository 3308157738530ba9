package admission

import (
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// unsupportedPrefix starts every rejection of a pod that matched a profile
// but uses something a sandbox cannot provide.
const unsupportedPrefix = "Pod not supported on Vessel: "

// unsupportedReasons lists why a pod cannot run on Vessel (REFERENCE §2),
// in a fixed order so the message is stable, or nil when it can. Each
// reason names every offending field at once, so users fix all in one go.
func unsupportedReasons(pod *corev1.Pod) []string {
	var reasons []string
	spec := &pod.Spec

	var hostFields []string
	if spec.HostNetwork {
		hostFields = append(hostFields, "HostNetwork")
	}
	if spec.HostPID {
		hostFields = append(hostFields, "HostPID")
	}
	if spec.HostIPC {
		hostFields = append(hostFields, "HostIPC")
	}
	if len(hostFields) > 0 {
		reasons = append(reasons, "fields not supported: "+strings.Join(hostFields, ", "))
	}

	var hostPort, privileged bool
	var capabilities, gpus []string
	forEachContainer(spec, func(c *corev1.Container) {
		for _, p := range c.Ports {
			hostPort = hostPort || p.HostPort != 0 || p.HostIP != ""
		}
		if sc := c.SecurityContext; sc != nil {
			privileged = privileged || (sc.Privileged != nil && *sc.Privileged)
			if sc.Capabilities != nil {
				for _, cap := range sc.Capabilities.Add {
					capabilities = append(capabilities, capabilityName(cap))
				}
			}
		}
		gpus = append(gpus, gpuResources(c.Resources)...)
	})
	if spec.Resources != nil {
		gpus = append(gpus, gpuResources(*spec.Resources)...)
	}

	if hostPort {
		reasons = append(reasons, "port contains HostIP or HostPort")
	}
	if privileged {
		reasons = append(reasons, "invalid SecurityContext fields: Privileged")
	}
	if capabilities = sortedUnique(capabilities); len(capabilities) > 0 {
		reasons = append(reasons, "invalid SecurityContext fields: Capabilities added: "+strings.Join(capabilities, ", "))
	}
	if volumes := unsupportedVolumes(spec.Volumes); len(volumes) > 0 {
		reasons = append(reasons, "volumes not supported: "+strings.Join(volumes, ", "))
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "DaemonSet" && strings.HasPrefix(ref.APIVersion, "apps/") {
			reasons = append(reasons, "pod owned by a DaemonSet")
			break
		}
	}
	if gpus = sortedUnique(gpus); len(gpus) > 0 {
		reasons = append(reasons, "GPU resources not supported: "+strings.Join(gpus, ", "))
	}
	return reasons
}

// forEachContainer visits init, regular and ephemeral containers.
func forEachContainer(spec *corev1.PodSpec, visit func(*corev1.Container)) {
	for i := range spec.InitContainers {
		visit(&spec.InitContainers[i])
	}
	for i := range spec.Containers {
		visit(&spec.Containers[i])
	}
	for i := range spec.EphemeralContainers {
		c := corev1.Container(spec.EphemeralContainers[i].EphemeralContainerCommon)
		visit(&c)
	}
}

// capabilityName spells a capability the way the Linux man pages do, as
// users may write either "SYS_ADMIN" or "CAP_SYS_ADMIN".
func capabilityName(c corev1.Capability) string {
	name := strings.ToUpper(string(c))
	if !strings.HasPrefix(name, "CAP_") {
		name = "CAP_" + name
	}
	return name
}

// gpuResources returns the extended resources that name a GPU
// (nvidia.com/gpu, amd.com/gpu, gpu.intel.com/i915, …). A sandbox has no
// device to pass through.
func gpuResources(r corev1.ResourceRequirements) []string {
	var out []string
	for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
		for name := range list {
			if strings.Contains(strings.ToLower(string(name)), "gpu") {
				out = append(out, string(name))
			}
		}
	}
	return out
}

// unsupportedVolumes describes each volume a sandbox cannot mount.
func unsupportedVolumes(volumes []corev1.Volume) []string {
	var out []string
	for i := range volumes {
		v := &volumes[i]
		kind := volumeType(&v.VolumeSource)
		switch kind {
		case "configMap", "secret", "downwardAPI", "projected", "nfs":
			continue
		case "":
			continue // no source: the apiserver's own validation refuses it
		case "emptyDir":
			if m := v.EmptyDir.Medium; m == corev1.StorageMediumDefault || m == corev1.StorageMediumMemory {
				continue
			}
			kind += " with medium " + string(v.EmptyDir.Medium)
		}
		out = append(out, v.Name+" is of an unsupported volume type "+kind)
	}
	return out
}

// volumeType returns the JSON name of the volume source that is set
// ("hostPath", "persistentVolumeClaim", …). Reflection keeps this right
// for volume types added to the API after this was written.
func volumeType(src *corev1.VolumeSource) string {
	v := reflect.ValueOf(src).Elem()
	t := v.Type()
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return ""
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
