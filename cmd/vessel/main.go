// Command vessel runs Vessel: `vessel up` for a whole cluster on one machine.
package main

import (
	"os"

	"github.com/vessel-dev/vessel/internal/cli"
)

func main() { os.Exit(cli.Main()) }
