// Package version holds Vessel's own version, stamped at link time by hack/version.sh.
package version

import "k8s.io/component-base/version"

// Version is Vessel's release, set with -ldflags -X; "dev" for untagged builds.
var Version = "dev"

// Kubernetes returns the version of the embedded Kubernetes components.
func Kubernetes() string { return version.Get().GitVersion }
