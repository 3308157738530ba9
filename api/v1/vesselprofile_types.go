package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VesselProfile says which pods run on Vessel (selectors), in which subnets,
// and with which execution role. Its spec is immutable: replace a profile by
// creating a new one and deleting the old. RBAC verb "use" on
// vesselprofiles/<name> governs who may launch pods through it.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=vp,categories=vessel
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Subnets",type=string,JSONPath=`.spec.subnets`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VesselProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new VesselProfile with the new spec and delete this one"
	Spec   VesselProfileSpec   `json:"spec"`
	Status VesselProfileStatus `json:"status,omitempty"`
}

// VesselProfileSpec is the admin's intent for a profile.
type VesselProfileSpec struct {
	// Selectors choose the pods this profile runs. A pod matches the profile
	// when any selector matches it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	// +listType=atomic
	Selectors []ProfileSelector `json:"selectors"`

	// Subnets are names of Subnet objects the profile's pods get IPs from.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +listType=set
	Subnets []string `json:"subnets"`

	// PodExecutionRole is the identity Vessel uses on behalf of the pods to
	// pull their images and ship their logs; it is never visible to the pod.
	// +optional
	PodExecutionRole PodExecutionRole `json:"podExecutionRole,omitempty"`

	// Sidecars are injected into every pod the profile admits, as native
	// sidecars (init containers with restartPolicy Always) placed before the
	// pod's own init containers, so they run for the pod's whole life without
	// keeping a Job's pod from completing. This is the serverless DaemonSet.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	Sidecars []corev1.Container `json:"sidecars,omitempty"`
}

// ProfileSelector matches pods by namespace and labels. In the namespace,
// label keys and label values, "*" matches zero or more characters and "?"
// exactly one; nothing else is a pattern.
type ProfileSelector struct {
	// Namespace the pod must be in (a pattern).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Namespace string `json:"namespace"`

	// Labels the pod must all carry (keys and values are patterns).
	// +optional
	// +kubebuilder:validation:MaxProperties=5
	Labels map[string]string `json:"labels,omitempty"`
}

// PodExecutionRole names the credentials Vessel uses for a profile's pods.
// Vessel reads them itself; they are never mounted into the pod, so a pod
// can pull from a private registry without being able to read the secret.
type PodExecutionRole struct {
	// Namespace holding the secrets. Defaults to vessel-system.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// ImagePullSecrets are names of Secrets of type
	// kubernetes.io/dockerconfigjson in Namespace, tried after the pod's own
	// imagePullSecrets.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// ProfilePhase is the lifecycle phase of a VesselProfile.
// +kubebuilder:validation:Enum=Creating;Active;Deleting;CreateFailed;DeleteFailed
type ProfilePhase string

// Profile phases. Only Active profiles admit pods.
const (
	ProfileCreating     ProfilePhase = "Creating"
	ProfileActive       ProfilePhase = "Active"
	ProfileDeleting     ProfilePhase = "Deleting"
	ProfileCreateFailed ProfilePhase = "CreateFailed"
	ProfileDeleteFailed ProfilePhase = "DeleteFailed"
)

// VesselProfileStatus is written by the profile controller.
type VesselProfileStatus struct {
	// +optional
	Phase ProfilePhase `json:"phase,omitempty"`
	// Message explains the phase, e.g. which subnet does not exist.
	// +optional
	Message string `json:"message,omitempty"`
	// ObservedGeneration is the generation the phase was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VesselProfileList is a list of VesselProfiles.
// +kubebuilder:object:root=true
type VesselProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VesselProfile `json:"items"`
}
