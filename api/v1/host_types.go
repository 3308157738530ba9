package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Host is a machine that runs sandboxes: `vessel host`, or the host inside `vessel up`. Its agent
// creates and updates it; liveness is the Lease of the same name in vessel-system, renewed by the
// agent, so a Host whose Lease expired is lost and its sandboxes are failed.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=vessel
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Isolation",type=string,JSONPath=`.spec.isolation`
// +kubebuilder:printcolumn:name="CPU",type=string,JSONPath=`.spec.capacity.cpu`
// +kubebuilder:printcolumn:name="Memory",type=string,JSONPath=`.spec.capacity.memory`
// +kubebuilder:printcolumn:name="Sandboxes",type=integer,JSONPath=`.status.sandboxes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Host struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   HostSpec   `json:"spec"`
	Status HostStatus `json:"status,omitempty"`
}

// HostSpec is what the host offers.
type HostSpec struct {
	// Address is where the host agent's kubelet API listens; Vessel nodes advertise it.
	// +kubebuilder:validation:MinLength=1
	Address string `json:"address"`
	// KubeletPort is the host agent's kubelet API port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	KubeletPort int32 `json:"kubeletPort"`
	// Isolation is the runtime the host runs sandboxes with.
	Isolation Isolation `json:"isolation"`
	// Capacity is what sandboxes may use in total: cpu, memory, ephemeral-storage and
	// "pods" (the most sandboxes at once).
	Capacity corev1.ResourceList `json:"capacity"`
	// Zone is the topology zone of the host (label topology.kubernetes.io/zone on its nodes).
	// +optional
	Zone string `json:"zone,omitempty"`
}

// HostStatus is what the host currently runs.
type HostStatus struct {
	// Sandboxes is the number of sandboxes on the host.
	// +optional
	Sandboxes int32 `json:"sandboxes,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// HostList is a list of Hosts.
type HostList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Host `json:"items"`
}
