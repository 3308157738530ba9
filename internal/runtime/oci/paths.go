package oci

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// On-disk layout under the runtime's root directory, in one place:
//
//	<root>/runc/                                   runc --root (runc's own state)
//	<root>/sandboxes/<sandbox>/sandbox.json        SandboxSpec + netns path + creation time
//	<root>/sandboxes/<sandbox>/etc/{hosts,resolv.conf,hostname}
//	<root>/sandboxes/<sandbox>/containers/<id>/    one container instance (the sandbox's scratch space):
//	    meta.json   what StartContainer was asked for
//	    bundle/config.json
//	    rootfs/     overlay mount: image rootfs (lower) + upper/ + work/
//	    pid, shim.pid, started, exit.json, runc.log, container.log (default log)
//	    stdin       fifo the shim holds open as the main process's stdin (ContainerSpec.Stdin)

func sandboxesDir(root string) string { return filepath.Join(root, "sandboxes") }

func sandboxDir(root, sandboxID string) string {
	return filepath.Join(sandboxesDir(root), sandboxID)
}

func sandboxFile(root, sandboxID string) string {
	return filepath.Join(sandboxDir(root, sandboxID), "sandbox.json")
}

func etcDir(root, sandboxID string) string { return filepath.Join(sandboxDir(root, sandboxID), "etc") }

func containersDir(root, sandboxID string) string {
	return filepath.Join(sandboxDir(root, sandboxID), "containers")
}

type paths struct {
	dir, meta, bundle, config, rootfs, upper, work string
	pid, shimPid, started, exit, runcLog, log      string
	stdin                                          string
}

func containerPaths(dir string) paths {
	j := func(n string) string { return filepath.Join(dir, n) }
	return paths{
		dir: dir, meta: j("meta.json"), bundle: j("bundle"), config: j("bundle/config.json"),
		rootfs: j("rootfs"), upper: j("upper"), work: j("work"),
		pid: j("pid"), shimPid: j("shim.pid"), started: j("started"), exit: j("exit.json"),
		runcLog: j("runc.log"), log: j("container.log"), stdin: j("stdin"),
	}
}

var sandboxIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`)
var containerNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func validateSandboxID(id string) error {
	if !sandboxIDPattern.MatchString(id) {
		return fmt.Errorf("sandbox id %q: %w", id, runtime.ErrInvalidArgument)
	}
	return nil
}

// containerID is "<sandbox>.<name>.<attempt>": deterministic, so a repeated
// StartContainer finds the instance it already started, and reversible, so
// the sandbox dir of any ID is known without an index.
func containerID(sandboxID, name string, attempt uint32) runtime.ContainerID {
	return runtime.ContainerID(sandboxID + "." + name + "." + strconv.FormatUint(uint64(attempt), 10))
}

func parseContainerID(id runtime.ContainerID) (sandboxID, name string, attempt uint32, err error) {
	parts := strings.Split(string(id), ".")
	if len(parts) != 3 || validateSandboxID(parts[0]) != nil || !containerNamePattern.MatchString(parts[1]) {
		return "", "", 0, fmt.Errorf("container id %q: %w", id, runtime.ErrInvalidArgument)
	}
	n, err := strconv.ParseUint(parts[2], 10, 32)
	if err != nil {
		return "", "", 0, fmt.Errorf("container id %q: %w", id, runtime.ErrInvalidArgument)
	}
	return parts[0], parts[1], uint32(n), nil
}

func containerDir(root string, id runtime.ContainerID) (string, error) {
	sid, _, _, err := parseContainerID(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(containersDir(root, sid), string(id)), nil
}
