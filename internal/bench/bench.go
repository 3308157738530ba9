// Package bench measures Vessel end to end, as whole processes and API round trips, for the
// `vessel bench` command. Results are printed as text so they can be kept in bench/ and compared.
package bench

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// Durations summarises repeated measurements of one figure.
type Durations []time.Duration

// Report writes "name: min … median … max … (n runs)".
func (d Durations) Report(w io.Writer, name string) {
	if len(d) == 0 {
		fmt.Fprintf(w, "%-34s no runs\n", name)
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	fmt.Fprintf(w, "%-34s min %8s  median %8s  p99 %8s  max %8s  (n=%d)\n", name,
		round(s[0]), round(s[len(s)/2]), round(s[(len(s)*99)/100]), round(s[len(s)-1]), len(s))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
