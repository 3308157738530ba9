package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Sandbox is the data-plane unit: one pod or task, in one microVM (or OCI
// sandbox), on one host. The scheduler creates it in vessel-system with the
// host, size and network already chosen; the host agent on spec.host runs it
// and mirrors what runs into status.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=sbx,categories=vessel
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owner.kind`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.owner.namespace`,priority=1
// +kubebuilder:printcolumn:name="Name",type=string,JSONPath=`.spec.owner.name`
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=`.spec.host`
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=`.spec.network.ip`
// +kubebuilder:printcolumn:name="Isolation",type=string,JSONPath=`.spec.isolation`,priority=1
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Sandbox struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SandboxSpec   `json:"spec"`
	Status SandboxStatus `json:"status,omitempty"`
}

// SandboxSpec is what the host agent must run.
type SandboxSpec struct {
	// Owner is the Pod or Task this sandbox runs.
	Owner SandboxOwner `json:"owner"`
	// Size is the enforced capacity of the sandbox.
	Size SandboxSize `json:"size"`
	// Host is the name of the host agent that runs the sandbox.
	// +kubebuilder:validation:MinLength=1
	Host string `json:"host"`
	// Network is the sandbox's interface in its subnet.
	Network SandboxNetwork `json:"network"`
	// Isolation is how the sandbox is isolated from the host.
	// +kubebuilder:default=microvm
	Isolation Isolation `json:"isolation,omitempty"`

	// +optional
	// +listType=atomic
	InitContainers []corev1.Container `json:"initContainers,omitempty"`
	// +kubebuilder:validation:MinItems=1
	// +listType=atomic
	Containers []corev1.Container `json:"containers"`
	// +optional
	// +listType=atomic
	Volumes []corev1.Volume `json:"volumes,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=Always;OnFailure;Never
	RestartPolicy corev1.RestartPolicy `json:"restartPolicy,omitempty"`
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// Hostname inside the sandbox; defaults to the owner's name.
	// +optional
	Hostname string `json:"hostname,omitempty"`
}

// OwnerKind is the kind of workload a sandbox runs.
// +kubebuilder:validation:Enum=Pod;Task
type OwnerKind string

// Owner kinds.
const (
	OwnerPod  OwnerKind = "Pod"
	OwnerTask OwnerKind = "Task"
)

// SandboxOwner identifies the workload; UID guards against a recreated
// object of the same name adopting an old sandbox.
type SandboxOwner struct {
	Kind OwnerKind `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
}

// SandboxSize is the provisioned capacity, one row of the size table.
type SandboxSize struct {
	// MilliVCPU is the vCPU count in thousandths: 250 is 0.25 vCPU.
	// +kubebuilder:validation:Minimum=1
	MilliVCPU int64 `json:"milliVCPU"`
	// MemoryMiB is the memory of the sandbox in MiB.
	// +kubebuilder:validation:Minimum=1
	MemoryMiB int64 `json:"memoryMiB"`
	// DiskGiB is the size of the ephemeral scratch disk in GiB.
	// +kubebuilder:validation:Minimum=1
	DiskGiB int64 `json:"diskGiB"`
}

// SandboxNetwork is the sandbox's allocated address.
type SandboxNetwork struct {
	// Subnet is the name of the Subnet the IP comes from.
	Subnet string `json:"subnet"`
	IP     string `json:"ip"`
	MAC    string `json:"mac"`
	// Gateway is the default route, copied from the Subnet.
	Gateway string `json:"gateway"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	PrefixLength int32 `json:"prefixLength"`
}

// Isolation is how a sandbox is separated from its host.
// +kubebuilder:validation:Enum=microvm;oci
type Isolation string

// Isolation kinds: microvm is a hardware-isolated VM; oci is namespaces,
// cgroups and seccomp on the host kernel, for machines without KVM.
const (
	IsolationMicroVM Isolation = "microvm"
	IsolationOCI     Isolation = "oci"
)

// SandboxPhase mirrors the pod phases, plus Terminating.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Terminating
type SandboxPhase string

// Sandbox phases.
const (
	SandboxPending     SandboxPhase = "Pending"
	SandboxRunning     SandboxPhase = "Running"
	SandboxSucceeded   SandboxPhase = "Succeeded"
	SandboxFailed      SandboxPhase = "Failed"
	SandboxTerminating SandboxPhase = "Terminating"
)

// SandboxStatus is written by the host agent.
type SandboxStatus struct {
	// +optional
	Phase SandboxPhase `json:"phase,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Reason is a CamelCase word explaining the phase, e.g. ImagePullFailed.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	// +listType=atomic
	InitContainerStatuses []corev1.ContainerStatus `json:"initContainerStatuses,omitempty"`
	// +optional
	// +listType=atomic
	ContainerStatuses []corev1.ContainerStatus `json:"containerStatuses,omitempty"`
	// StartTime is when the host agent started the sandbox.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Startup is how long each step of the sandbox's first start took on its host, for start
	// latency analysis (`vessel bench pods` reads it). The host agent sets it once, in the first
	// status that reports every container started.
	// +optional
	// +listType=map
	// +listMapKey=step
	Startup []StartupStep `json:"startup,omitempty"`
}

// StartupStep names one step of a sandbox's start on its host and its duration.
type StartupStep struct {
	// Step is one of StartupSteps.
	Step string `json:"step"`
	// Duration is wall time on the host.
	Duration metav1.Duration `json:"duration"`
}

// The host-side steps of a sandbox's first start, in the order they run.
const (
	// StepNetwork prepares the sandbox's network (namespace or tap, address, routes) and the
	// runtime sandbox.
	StepNetwork = "network"
	// StepVolumes writes the pod's volumes (service-account token, config maps, secrets, …).
	StepVolumes = "volumes"
	// StepImage resolves every container's image (from the cache, or a pull).
	StepImage = "image"
	// StepContainerStart creates and starts the containers.
	StepContainerStart = "containerStart"
)

// SandboxList is a list of Sandboxes.
// +kubebuilder:object:root=true
type SandboxList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Sandbox `json:"items"`
}
