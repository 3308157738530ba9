package testenv

import "os"

// ShimArgv is the command line that starts the oci runtime's shim (`vessel shim`) from a test
// binary whose TestMain calls Main: the binary re-executed as the vessel CLI.
func ShimArgv() []string {
	return []string{"/usr/bin/env", execCLIEnv + "=1", os.Args[0], "shim"}
}
