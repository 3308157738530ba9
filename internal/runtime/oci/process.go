package oci

import (
	"k8s.io/kubernetes/third_party/forked/golang/expansion"

	"strings"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// defaultPath is set when neither image nor container defines PATH, as
// Docker and containerd do, so images built FROM scratch still find binaries.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// mergeEnv returns the image's environment overlaid with the container's:
// a container variable replaces the image's value in place, new ones are
// appended in the order given.
func mergeEnv(image []string, container []runtime.EnvVar) []string {
	out := make([]string, 0, len(image)+len(container)+1)
	index := map[string]int{}
	set := func(name, kv string) {
		if i, ok := index[name]; ok {
			out[i] = kv
			return
		}
		index[name] = len(out)
		out = append(out, kv)
	}
	for _, kv := range image {
		name, _, _ := strings.Cut(kv, "=")
		set(name, kv)
	}
	for _, e := range container {
		set(e.Name, e.Name+"="+e.Value)
	}
	if _, ok := index["PATH"]; !ok {
		out = append(out, defaultPath)
	}
	return out
}

// processArgs merges the image's Entrypoint/Cmd with the container's
// Command/Args the way Kubernetes does: Command replaces Entrypoint and
// discards Cmd; Args alone replaces Cmd. $(VAR) references in the
// container's own Command/Args are expanded against env.
func processArgs(img runtime.ImageConfig, command, args []string, env []string) []string {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	expandAll := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = expansion.Expand(s, expansion.MappingFuncFor(vars))
		}
		return out
	}
	command, args = expandAll(command), expandAll(args)
	if len(command) == 0 {
		command = img.Entrypoint
		if len(args) == 0 {
			args = img.Cmd
		}
	}
	return append(append([]string{}, command...), args...)
}

// workingDir picks the container's, else the image's, else "/".
func workingDir(container, image string) string {
	switch {
	case container != "":
		return container
	case image != "":
		return image
	}
	return "/"
}
