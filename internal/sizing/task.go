package sizing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrNoFargateConfiguration is the ECS answer to a task definition whose
// task-level cpu and memory are not exactly one pair of the size table.
var ErrNoFargateConfiguration = errors.New("No Fargate configuration exists for given values.") //nolint:staticcheck // ECS's exact wording, shown to users.

// ForTask returns the size of an ECS task from its task-level cpu and memory
// strings. cpu is CPU units ("1024", 1024 per vCPU) or vCPUs ("1 vCPU",
// "0.25 vcpu"); memory is MiB ("2048") or GB ("2GB", "2 GB"). Unlike pods,
// tasks are not rounded up and get no agent overhead: the pair must be valid
// as given. The disk is the ECS default of 20 GiB.
//
// Every error matches ErrNoFargateConfiguration; for a pair that is merely
// not in the table it is exactly that error.
func ForTask(cpu, memory string) (Size, error) {
	units, err := parseTaskCPU(cpu)
	if err != nil {
		return Size{}, fmt.Errorf("task cpu %q: %w: %w", cpu, err, ErrNoFargateConfiguration)
	}
	memMiB, err := parseTaskMemory(memory)
	if err != nil {
		return Size{}, fmt.Errorf("task memory %q: %w: %w", memory, err, ErrNoFargateConfiguration)
	}
	for _, r := range table {
		if r.milliVCPU*1024 != units*1000 {
			continue
		}
		for _, mem := range r.memoryMiBs {
			if mem == memMiB {
				return Size{MilliVCPU: r.milliVCPU, MemoryMiB: mem, DiskGiB: DefaultDiskGiB}, nil
			}
		}
	}
	return Size{}, ErrNoFargateConfiguration
}

// parseTaskCPU returns ECS CPU units.
func parseTaskCPU(s string) (int64, error) {
	if number, ok := cutUnit(s, "vcpu"); ok {
		return scaleExact(number, 1024)
	}
	return scaleExact(s, 1)
}

// parseTaskMemory returns MiB.
func parseTaskMemory(s string) (int64, error) {
	if number, ok := cutUnit(s, "gb"); ok {
		return scaleExact(number, 1024)
	}
	return scaleExact(s, 1)
}

// cutUnit strips a case-insensitive unit suffix and the spaces around it.
func cutUnit(s, unit string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) < len(unit) || !strings.EqualFold(s[len(s)-len(unit):], unit) {
		return s, false
	}
	return strings.TrimSpace(s[:len(s)-len(unit)]), true
}

// scaleExact parses a non-negative decimal and multiplies it by factor; the
// product must be a whole number, since ECS has no fractional units.
func scaleExact(number string, factor float64) (int64, error) {
	number = strings.TrimSpace(number)
	// ParseFloat would also take "1e3", "0x1p10" and "Inf"; ECS takes plain decimals.
	if strings.Trim(number, "0123456789.") != "" {
		return 0, fmt.Errorf("not a plain decimal number")
	}
	v, err := strconv.ParseFloat(number, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > 1<<40 {
		return 0, fmt.Errorf("not a positive number")
	}
	scaled := v * factor
	if scaled != math.Trunc(scaled) {
		return 0, fmt.Errorf("not a whole number of units")
	}
	return int64(scaled), nil
}
