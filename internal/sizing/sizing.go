// Package sizing turns what a pod or an ECS task asks for into the smallest
// Vessel size that fits it: a (vCPU, memory) pair from the size table plus
// an ephemeral disk. Everything here is a pure function of its arguments.
package sizing

import (
	"errors"
	"strconv"
)

// Size is a provisioned capacity: one row of the size table and a disk.
type Size struct {
	// MilliVCPU is the vCPU count in thousandths: 250 is 0.25 vCPU.
	MilliVCPU int64
	// MemoryMiB is the memory in MiB (the table's GB × 1024).
	MemoryMiB int64
	// DiskGiB is the ephemeral scratch disk in GiB.
	DiskGiB int64
}

// String formats the CPU and memory the way users see them in the
// vessel.dev/capacity-provisioned annotation: "0.25vCPU 0.5GB", "2vCPU 9GB".
// The disk is not part of it, as on Fargate.
func (s Size) String() string {
	vcpu := strconv.FormatFloat(float64(s.MilliVCPU)/1000, 'f', -1, 64)
	gb := strconv.FormatFloat(float64(s.MemoryMiB)/1024, 'f', -1, 64)
	return vcpu + "vCPU " + gb + "GB"
}

// Disk bounds for pods, in GiB.
const (
	DefaultDiskGiB = 20
	MaxDiskGiB     = 175
)

// agentOverheadMiB is added to every pod for the agent that runs inside its
// sandbox next to the containers.
const agentOverheadMiB = 256

// ErrExceedsMaxSize is returned, possibly wrapped or as an error that
// matches it with errors.Is, when a workload asks for more than the largest
// size. Its text is the message the scheduler shows on the pod.
var ErrExceedsMaxSize = errors.New("pod's cpu/memory requirements exceed the largest Vessel size (16 vCPU, 120 GB)")

// exceedsError is an ErrExceedsMaxSize with its own message, for limits
// other than CPU and memory.
type exceedsError string

func (e exceedsError) Error() string        { return string(e) }
func (e exceedsError) Is(target error) bool { return target == ErrExceedsMaxSize }

// row is one vCPU size and the memory sizes allowed with it.
type row struct {
	milliVCPU  int64
	memoryMiBs []int64
}

// table is REFERENCE §3's size table, rows ascending by vCPU and memory
// ascending within a row; rounding relies on that order.
var table = []row{
	{250, gbs(0.5, 1, 2)},
	{500, gbs(1, 2, 3, 4)},
	{1000, gbRange(2, 8, 1)},
	{2000, gbRange(4, 16, 1)},
	{4000, gbRange(8, 30, 1)},
	{8000, gbRange(16, 60, 4)},
	{16000, gbRange(32, 120, 8)},
}

func gbs(values ...float64) []int64 {
	out := make([]int64, len(values))
	for i, v := range values {
		out[i] = int64(v * 1024)
	}
	return out
}

func gbRange(from, to, step int64) []int64 {
	var out []int64
	for gb := from; gb <= to; gb += step {
		out = append(out, gb*1024)
	}
	return out
}

// Sizes lists every valid (vCPU, memory) pair, smallest first, with the
// default disk.
func Sizes() []Size {
	var out []Size
	for _, r := range table {
		for _, mem := range r.memoryMiBs {
			out = append(out, Size{MilliVCPU: r.milliVCPU, MemoryMiB: mem, DiskGiB: DefaultDiskGiB})
		}
	}
	return out
}

// Smallest is the size of a workload that asks for nothing.
func Smallest() Size {
	return Size{MilliVCPU: table[0].milliVCPU, MemoryMiB: table[0].memoryMiBs[0], DiskGiB: DefaultDiskGiB}
}

// Largest is the biggest size there is.
func Largest() Size {
	last := table[len(table)-1]
	return Size{MilliVCPU: last.milliVCPU, MemoryMiB: last.memoryMiBs[len(last.memoryMiBs)-1], DiskGiB: MaxDiskGiB}
}

// roundUp returns the smallest size with at least the given CPU and memory,
// comparing vCPU first and then memory within that vCPU, so a need beyond a
// row's largest memory moves to the next row. ok is false when nothing fits.
func roundUp(milliVCPU, memoryMiB int64) (s Size, ok bool) {
	for _, r := range table {
		if r.milliVCPU < milliVCPU {
			continue
		}
		for _, mem := range r.memoryMiBs {
			if mem >= memoryMiB {
				return Size{MilliVCPU: r.milliVCPU, MemoryMiB: mem, DiskGiB: DefaultDiskGiB}, true
			}
		}
	}
	return Size{}, false
}
