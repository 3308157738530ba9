// Package e2e holds Vessel's end-to-end tests: real etcd, kube-apiserver, controllers, host agent
// and runtimes in one process tree. Every test in the package shares one control plane (see
// internal/testenv), because starting and linking Kubernetes is the slow part.
package e2e

import (
	"testing"

	"github.com/vessel-dev/vessel/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
