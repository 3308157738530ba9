package sizing

import (
	"errors"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		size Size
		want string
	}{
		{Size{MilliVCPU: 250, MemoryMiB: 512}, "0.25vCPU 0.5GB"},
		{Size{MilliVCPU: 500, MemoryMiB: 1024}, "0.5vCPU 1GB"},
		{Size{MilliVCPU: 2000, MemoryMiB: 9 * 1024}, "2vCPU 9GB"},
		{Size{MilliVCPU: 16000, MemoryMiB: 120 * 1024, DiskGiB: 175}, "16vCPU 120GB"},
	} {
		if got := tc.size.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.size, got, tc.want)
		}
	}
}

func TestSizesTable(t *testing.T) {
	sizes := Sizes()
	// 3 + 4 + 7 + 13 + 23 + 12 + 12 pairs in REFERENCE §3.
	if len(sizes) != 74 {
		t.Fatalf("%d sizes, want 74", len(sizes))
	}
	for i := 1; i < len(sizes); i++ {
		a, b := sizes[i-1], sizes[i]
		if b.MilliVCPU < a.MilliVCPU || (b.MilliVCPU == a.MilliVCPU && b.MemoryMiB <= a.MemoryMiB) {
			t.Fatalf("sizes not ascending at %d: %v then %v", i, a, b)
		}
	}
	if got := Smallest().String(); got != "0.25vCPU 0.5GB" {
		t.Errorf("Smallest() = %s", got)
	}
	if got := Largest().String(); got != "16vCPU 120GB" {
		t.Errorf("Largest() = %s", got)
	}
}

// TestRoundUpEveryBoundary checks, for every pair of the table, that asking
// for exactly that pair gets it, and that one MiB more memory gets the next
// memory of the row (or the smallest of the next row that has enough), and
// one milli-vCPU more gets the next row.
func TestRoundUpEveryBoundary(t *testing.T) {
	sizes := Sizes()
	for _, s := range sizes {
		got, ok := roundUp(s.MilliVCPU, s.MemoryMiB)
		if !ok || got.MilliVCPU != s.MilliVCPU || got.MemoryMiB != s.MemoryMiB {
			t.Errorf("exact %v: got %v ok=%v", s, got, ok)
		}
		wantMore, wantOK := firstFit(sizes, s.MilliVCPU, s.MemoryMiB+1)
		got, ok = roundUp(s.MilliVCPU, s.MemoryMiB+1)
		if ok != wantOK || got != wantMore {
			t.Errorf("%v + 1 MiB: got %v ok=%v, want %v ok=%v", s, got, ok, wantMore, wantOK)
		}
		wantCPU, wantOK := firstFit(sizes, s.MilliVCPU+1, s.MemoryMiB)
		got, ok = roundUp(s.MilliVCPU+1, s.MemoryMiB)
		if ok != wantOK || got != wantCPU {
			t.Errorf("%v + 1m CPU: got %v ok=%v, want %v ok=%v", s, got, ok, wantCPU, wantOK)
		}
	}
	// Spot checks written out by hand, so the test does not only agree with
	// its own reference implementation.
	for _, tc := range []struct {
		cpu, mem int64
		want     string
	}{
		{250, 2049, "0.5vCPU 3GB"},
		{500, 4097, "1vCPU 5GB"},
		{1000, 8193, "2vCPU 9GB"},
		{2000, 16*1024 + 1, "4vCPU 17GB"},
		{4000, 30*1024 + 1, "8vCPU 32GB"},
		{8000, 17 * 1024, "8vCPU 20GB"},
		{8000, 60*1024 + 1, "16vCPU 64GB"},
		{16000, 33 * 1024, "16vCPU 40GB"},
		{1, 1, "0.25vCPU 0.5GB"},
	} {
		got, ok := roundUp(tc.cpu, tc.mem)
		if !ok || got.String() != tc.want {
			t.Errorf("roundUp(%d, %d) = %v ok=%v, want %s", tc.cpu, tc.mem, got, ok, tc.want)
		}
	}
	if _, ok := roundUp(16001, 512); ok {
		t.Error("16.001 vCPU fits")
	}
	if _, ok := roundUp(250, 120*1024+1); ok {
		t.Error("120 GB + 1 MiB fits")
	}
}

// firstFit is the definition of rounding written the slow way: the first
// size in table order with enough vCPU and enough memory.
func firstFit(sizes []Size, cpu, mem int64) (Size, bool) {
	for _, s := range sizes {
		if s.MilliVCPU >= cpu && s.MemoryMiB >= mem {
			return s, true
		}
	}
	return Size{}, false
}

func res(pairs ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i < len(pairs); i += 2 {
		out[corev1.ResourceName(pairs[i])] = resource.MustParse(pairs[i+1])
	}
	return out
}

func container(name string, requests, limits corev1.ResourceList) corev1.Container {
	return corev1.Container{Name: name, Image: "busybox", Resources: corev1.ResourceRequirements{Requests: requests, Limits: limits}}
}

func sidecar(name string, requests corev1.ResourceList) corev1.Container {
	c := container(name, requests, nil)
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

func TestForPod(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     corev1.PodSpec
		want     string
		wantDisk int64
	}{
		{
			name: "nothing requested",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", nil, nil)}},
			want: "0.25vCPU 0.5GB", wantDisk: 20,
		},
		{
			name: "1 vCPU 8 GB plus agent overhead moves to 2 vCPU 9 GB",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", res("cpu", "1", "memory", "8Gi"), nil)}},
			want: "2vCPU 9GB", wantDisk: 20,
		},
		{
			name: "256 MiB request plus overhead is exactly 0.5 GB",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", res("cpu", "250m", "memory", "256Mi"), nil)}},
			want: "0.25vCPU 0.5GB", wantDisk: 20,
		},
		{
			name: "one byte over rounds up a memory step",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", res("memory", fmt.Sprint(256<<20+1)), nil)}},
			want: "0.25vCPU 1GB", wantDisk: 20,
		},
		{
			name: "app containers are summed",
			spec: corev1.PodSpec{Containers: []corev1.Container{
				container("a", res("cpu", "300m", "memory", "1Gi"), nil),
				container("b", res("cpu", "300m", "memory", "1Gi"), nil),
			}},
			want: "1vCPU 3GB", wantDisk: 20,
		},
		{
			name: "a larger init container wins over the app sum",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{container("migrate", res("cpu", "2", "memory", "4Gi"), nil)},
				Containers:     []corev1.Container{container("app", res("cpu", "500m", "memory", "1Gi"), nil)},
			},
			want: "2vCPU 5GB", wantDisk: 20,
		},
		{
			name: "init containers take the max, not the sum",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{
					container("i1", res("cpu", "1", "memory", "1Gi"), nil),
					container("i2", res("cpu", "1", "memory", "1Gi"), nil),
				},
				Containers: []corev1.Container{container("app", res("cpu", "100m", "memory", "100Mi"), nil)},
			},
			want: "1vCPU 2GB", wantDisk: 20,
		},
		{
			name: "restartable init sidecars count as regular containers",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{sidecar("proxy", res("cpu", "500m", "memory", "1Gi"))},
				Containers:     []corev1.Container{container("app", res("cpu", "500m", "memory", "1Gi"), nil)},
			},
			want: "1vCPU 3GB", wantDisk: 20,
		},
		{
			name: "limits only count as requests",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", nil, res("cpu", "2", "memory", "4Gi"))}},
			want: "2vCPU 5GB", wantDisk: 20,
		},
		{
			name: "request wins over limit where both are set",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("app", res("cpu", "250m"), res("cpu", "4", "memory", "1Gi"))}},
			want: "0.25vCPU 2GB", wantDisk: 20,
		},
		{
			name: "spec.overhead is added",
			spec: corev1.PodSpec{
				Overhead:   res("cpu", "250m", "memory", "512Mi"),
				Containers: []corev1.Container{container("app", res("cpu", "1", "memory", "1Gi"), nil)},
			},
			want: "2vCPU 4GB", wantDisk: 20,
		},
		{
			name: "ephemeral storage above the default",
			spec: corev1.PodSpec{Containers: []corev1.Container{
				container("a", res("ephemeral-storage", "20Gi"), nil),
				container("b", res("ephemeral-storage", "10G"), nil),
			}},
			want: "0.25vCPU 0.5GB", wantDisk: 30,
		},
		{
			name: "ephemeral storage below the default",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("a", res("ephemeral-storage", "1Gi"), nil)}},
			want: "0.25vCPU 0.5GB", wantDisk: 20,
		},
		{
			name: "ephemeral storage at the maximum",
			spec: corev1.PodSpec{Containers: []corev1.Container{container("a", res("ephemeral-storage", "175Gi"), nil)}},
			want: "0.25vCPU 0.5GB", wantDisk: 175,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: tc.spec}
			before := pod.DeepCopy()
			got, err := ForPod(pod)
			if err != nil {
				t.Fatalf("ForPod: %v", err)
			}
			if got.String() != tc.want || got.DiskGiB != tc.wantDisk {
				t.Errorf("ForPod = %v (%d GiB), want %s (%d GiB)", got, got.DiskGiB, tc.want, tc.wantDisk)
			}
			if pod.Spec.Containers[0].Resources.Requests == nil && before.Spec.Containers[0].Resources.Requests != nil ||
				len(pod.Spec.Containers[0].Resources.Requests) != len(before.Spec.Containers[0].Resources.Requests) {
				t.Error("ForPod modified the pod")
			}
		})
	}
}

func TestForPodTooLarge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reqs     corev1.ResourceList
		wantMsg  string
		wantSize string
	}{
		{"cpu", res("cpu", "17"), ErrExceedsMaxSize.Error(), "16vCPU 120GB"},
		{"memory after overhead", res("memory", "120Gi"), ErrExceedsMaxSize.Error(), "16vCPU 120GB"},
		{"disk", res("ephemeral-storage", "176Gi"),
			"pod's ephemeral-storage requirement of 176 GiB exceeds the largest Vessel disk (175 GiB)", "0.25vCPU 0.5GB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ForPod(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{container("app", tc.reqs, nil)}}})
			if !errors.Is(err, ErrExceedsMaxSize) {
				t.Fatalf("err = %v, want ErrExceedsMaxSize", err)
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("message %q, want %q", err.Error(), tc.wantMsg)
			}
			if got.String() != tc.wantSize || got.DiskGiB > MaxDiskGiB {
				t.Errorf("size %v (%d GiB), want %s capped", got, got.DiskGiB, tc.wantSize)
			}
		})
	}
	// The largest memory that still fits once the agent's 256 MiB is added.
	got, err := ForPod(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{container("app", res("cpu", "16", "memory", fmt.Sprint(120<<30-256<<20)), nil)}}})
	if err != nil || got.String() != "16vCPU 120GB" {
		t.Errorf("largest fitting pod: %v, %v", got, err)
	}
}

func TestForTask(t *testing.T) {
	for _, tc := range []struct {
		cpu, memory string
		want        string
	}{
		{"256", "512", "0.25vCPU 0.5GB"},
		{".25 vcpu", "0.5GB", "0.25vCPU 0.5GB"},
		{"0.25 vCPU", "2 GB", "0.25vCPU 2GB"},
		{"1024", "2048", "1vCPU 2GB"},
		{"1 vCPU", "2GB", "1vCPU 2GB"},
		{"1vcpu", "8gb", "1vCPU 8GB"},
		{"2048", "16384", "2vCPU 16GB"},
		{"4 vCPU", "30 GB", "4vCPU 30GB"},
		{"8192", "61440", "8vCPU 60GB"},
		{"16 vCPU", "120GB", "16vCPU 120GB"},
	} {
		got, err := ForTask(tc.cpu, tc.memory)
		if err != nil || got.String() != tc.want || got.DiskGiB != DefaultDiskGiB {
			t.Errorf("ForTask(%q, %q) = %v, %v; want %s", tc.cpu, tc.memory, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ cpu, memory string }{
		{"256", "4096"},      // memory outside the row
		{"1024", "1024"},     // below the row
		{"1024", "2500"},     // not a table value; tasks are not rounded
		{"300", "1024"},      // not a cpu size
		{"8192", "18432"},    // 18 GB: the 8 vCPU row steps by 4
		{"32768", "131072"},  // beyond the table
		{"0.3 vCPU", "1GB"},  // not whole units
		{"one", "1GB"},       // not a number
		{"1024", ""},         // missing
		{"1e3", "2GB"},       // not a plain decimal
		{"-1024", "2GB"},     // negative
		{"1 vCPU", "2.1GB"},  // not whole MiB in the table
		{"1 vCPU", "2 TB"},   // unknown unit
		{"NaN vcpu", "2 GB"}, // not a number
	} {
		_, err := ForTask(tc.cpu, tc.memory)
		if !errors.Is(err, ErrNoFargateConfiguration) {
			t.Errorf("ForTask(%q, %q) err = %v, want ErrNoFargateConfiguration", tc.cpu, tc.memory, err)
		}
	}
	if _, err := ForTask("256", "4096"); err == nil || err.Error() != "No Fargate configuration exists for given values." {
		t.Errorf("invalid pair message = %v", err)
	}
}
