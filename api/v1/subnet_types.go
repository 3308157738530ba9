package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Subnet is an IPv4 range of a VPC that sandboxes get their addresses from.
// Its CIDR and VPC cannot change once created, because addresses already
// handed out would silently leave the range.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=vessel
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.gateway`
// +kubebuilder:printcolumn:name="Zone",type=string,JSONPath=`.spec.zone`
// +kubebuilder:printcolumn:name="VPC",type=string,JSONPath=`.spec.vpc`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.allocated`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Subnet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SubnetSpec   `json:"spec"`
	Status SubnetStatus `json:"status,omitempty"`
}

// SubnetSpec describes the range.
type SubnetSpec struct {
	// CIDR is the IPv4 range, e.g. 10.0.1.0/24.
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable: create a new Subnet instead"
	CIDR string `json:"cidr"`

	// Gateway is the default route of sandboxes in the subnet; it must be
	// inside CIDR and be neither its network nor its broadcast address.
	// +kubebuilder:validation:MinLength=7
	// +kubebuilder:validation:MaxLength=15
	Gateway string `json:"gateway"`

	// Zone is the failure domain, shown on nodes as
	// topology.kubernetes.io/zone.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Zone string `json:"zone,omitempty"`

	// VPC is the name of the network the subnet belongs to; subnets of one
	// VPC reach each other. No two Subnets may overlap, even in different
	// VPCs, because one host may bridge subnets of several VPCs.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vpc is immutable: create a new Subnet instead"
	VPC string `json:"vpc,omitempty"`
}

// SubnetStatus is written by the scheduler, which owns IP allocation.
type SubnetStatus struct {
	// Allocated is the number of addresses held by sandboxes.
	// +optional
	Allocated int32 `json:"allocated"`
	// Available is the number of addresses still free.
	// +optional
	Available int32 `json:"available"`
}

// SubnetList is a list of Subnets.
// +kubebuilder:object:root=true
type SubnetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Subnet `json:"items"`
}
