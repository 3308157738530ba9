package scheduler

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/ipam"
)

// usage is an amount of each resource a host offers or its sandboxes use.
// In a capacity, a negative amount means "no limit".
type usage struct {
	milliCPU, memoryMiB, diskGiB, pods int64
}

// capacityOf reads a Host's spec.capacity. A resource the host does not list
// is not limited.
func capacityOf(list corev1.ResourceList) usage {
	get := func(name corev1.ResourceName, unit func(q int64) int64, milli bool) int64 {
		q, ok := list[name]
		if !ok {
			return -1
		}
		if milli {
			return q.MilliValue()
		}
		return unit(q.Value())
	}
	id := func(v int64) int64 { return v }
	return usage{
		milliCPU:  get(corev1.ResourceCPU, id, true),
		memoryMiB: get(corev1.ResourceMemory, func(v int64) int64 { return v >> 20 }, false),
		diskGiB:   get(corev1.ResourceEphemeralStorage, func(v int64) int64 { return v >> 30 }, false),
		pods:      get(corev1.ResourcePods, id, false),
	}
}

// hostInfo is a Host as placement sees it.
type hostInfo struct {
	name      string
	isolation vesselv1.Isolation
	zone      string
	// alive is false when the Host's Lease is missing or expired; why says which.
	alive    bool
	why      string
	capacity usage
	used     usage
}

// subnetInfo is one of the profile's subnets as placement sees it.
type subnetInfo struct {
	name   string
	zone   string
	subnet ipam.Subnet
	// free addresses, and how many sandboxes already are in the subnet.
	free, sandboxes int
	// problem is set when the subnet cannot be used at all (missing, invalid).
	problem string
}

// request is what a pod needs from a host.
type request struct {
	size vesselv1.SandboxSize
	// isolation the pod was admitted with; empty accepts any.
	isolation vesselv1.Isolation
}

// choice is where a pod goes.
type choice struct {
	host   string
	subnet subnetInfo
}

// unschedulableError explains why nothing fits; the message is shown on the
// pod's PodScheduled condition and FailedScheduling event.
type unschedulableError struct{ msg string }

func (e *unschedulableError) Error() string { return e.msg }

// fits reports why host h cannot take req, or "" when it can.
func fits(h hostInfo, req request) string {
	switch {
	case !h.alive:
		return h.why
	case req.isolation != "" && h.isolation != req.isolation:
		return fmt.Sprintf("isolation %s (pod needs %s)", h.isolation, req.isolation)
	}
	over := func(capacity, used, want int64) bool { return capacity >= 0 && used+want > capacity }
	switch {
	case over(h.capacity.pods, h.used.pods, 1):
		return "too many sandboxes"
	case over(h.capacity.milliCPU, h.used.milliCPU, req.size.MilliVCPU):
		return "insufficient cpu"
	case over(h.capacity.memoryMiB, h.used.memoryMiB, req.size.MemoryMiB):
		return "insufficient memory"
	case over(h.capacity.diskGiB, h.used.diskGiB, req.size.DiskGiB):
		return "insufficient ephemeral-storage"
	}
	return ""
}

// freeShare is the share of a host's cpu and memory left after placing req,
// from 0 (full) to 1 (empty or unlimited): placement prefers the emptiest
// host, spreading sandboxes (and the damage of losing one host).
func freeShare(h hostInfo, req request) float64 {
	share := func(capacity, used, want int64) float64 {
		if capacity <= 0 {
			return 1
		}
		return float64(capacity-used-want) / float64(capacity)
	}
	return (share(h.capacity.milliCPU, h.used.milliCPU, req.size.MilliVCPU) +
		share(h.capacity.memoryMiB, h.used.memoryMiB, req.size.MemoryMiB)) / 2
}

func zoneMatches(hostZone, subnetZone string) bool {
	return hostZone == "" || subnetZone == "" || hostZone == subnetZone
}

// choose places req: the subnet of the profile holding the fewest sandboxes
// (spreading a profile's pods over its subnets and their zones) that has a
// free address and a fitting host in its zone, and there the host with the
// largest free share. Ties go to the name that sorts first, so the choice is
// deterministic. It returns an *unschedulableError when nothing fits.
func choose(req request, subnets []subnetInfo, hosts []hostInfo) (choice, error) {
	var fitting []hostInfo
	reasons := map[string]int{}
	for _, h := range hosts {
		if why := fits(h, req); why != "" {
			reasons[why]++
			continue
		}
		fitting = append(fitting, h)
	}
	sort.Slice(fitting, func(i, j int) bool {
		si, sj := freeShare(fitting[i], req), freeShare(fitting[j], req)
		if si != sj {
			return si > sj
		}
		return fitting[i].name < fitting[j].name
	})

	var usable []subnetInfo
	var full []string
	for _, s := range subnets {
		switch {
		case s.problem != "":
			full = append(full, fmt.Sprintf("%s (%s)", s.name, s.problem))
		case s.free <= 0:
			full = append(full, fmt.Sprintf("%s (%s, no free address)", s.name, s.subnet.Prefix))
		default:
			usable = append(usable, s)
		}
	}
	sort.Slice(usable, func(i, j int) bool {
		a, b := usable[i], usable[j]
		if a.sandboxes != b.sandboxes {
			return a.sandboxes < b.sandboxes
		}
		if a.free != b.free {
			return a.free > b.free
		}
		return a.name < b.name
	})

	for _, s := range usable {
		for _, h := range fitting {
			if zoneMatches(h.zone, s.zone) {
				return choice{host: h.name, subnet: s}, nil
			}
		}
	}

	switch {
	case len(subnets) == 0:
		return choice{}, &unschedulableError{"the pod's profile lists no subnets"}
	case len(usable) == 0:
		return choice{}, &unschedulableError{"no free IP address in the profile's subnets: " + strings.Join(full, ", ")}
	case len(hosts) == 0:
		return choice{}, &unschedulableError{"0/0 hosts are available: no Host is registered"}
	case len(fitting) > 0:
		var zones []string
		for _, s := range usable {
			zones = append(zones, fmt.Sprintf("%s (zone %s)", s.name, s.zone))
		}
		return choice{}, &unschedulableError{fmt.Sprintf(
			"0/%d hosts are available: %d fit the pod but none is in the zone of a subnet with free addresses: %s",
			len(hosts), len(fitting), strings.Join(zones, ", "))}
	}
	var parts []string
	for why, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, why))
	}
	sort.Strings(parts)
	return choice{}, &unschedulableError{fmt.Sprintf("0/%d hosts are available: %s", len(hosts), strings.Join(parts, ", "))}
}
