// Package v1 holds the vessel.dev/v1 API: VesselProfile and Subnet, written
// by cluster admins, and Sandbox, the data-plane unit the scheduler writes
// and host agents reconcile.
//
// The CRD manifests generated from these types live in the crds package
// beside this one; hack/generate.sh regenerates both them and the deepcopy
// functions.
//
// +kubebuilder:object:generate=true
// +groupName=vessel.dev
package v1
