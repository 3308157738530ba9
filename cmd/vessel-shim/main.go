// Command vessel-shim is the oci runtime's per-container shim (see oci.ShimMain). It is its own
// small binary because one is started for every container: `vessel shim` works too, but the
// vessel binary spends ~200 ms initialising the Kubernetes packages it links before main runs.
package main

import (
	"os"

	"github.com/vessel-dev/vessel/internal/runtime/oci"
)

func main() { os.Exit(oci.ShimMain(os.Args[1:])) }
