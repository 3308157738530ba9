package v1

// Names that several components agree on: admission writes them, the
// scheduler and host agents read them, and users see them with kubectl.
const (
	// LabelProfile is set by admission to the profile that admitted a pod.
	// A pod may set it itself to choose among several matching profiles.
	LabelProfile = "vessel.dev/profile"
	// LabelComputeType marks Vessel nodes; TaintComputeType uses the same key.
	LabelComputeType = "vessel.dev/compute-type"
	// ComputeTypeVessel is the value of LabelComputeType on Vessel nodes.
	ComputeTypeVessel = "vessel"

	// AnnotationCapacityProvisioned records the enforced size of a pod,
	// formatted like "0.25vCPU 0.5GB".
	AnnotationCapacityProvisioned = "vessel.dev/capacity-provisioned"
	// AnnotationIsolation records how a pod is isolated: microvm or oci.
	AnnotationIsolation = "vessel.dev/isolation"
	// AnnotationExceedsMaxSize is set by admission on a pod that asks for
	// more than the largest size. Its value is the message the scheduler
	// puts on the PodScheduled=False condition with reason
	// ReasonExceedsMaxSize; such a pod is never placed.
	AnnotationExceedsMaxSize = "vessel.dev/exceeds-max-size"

	// SchedulerName is the spec.schedulerName of every pod Vessel runs.
	SchedulerName = "vessel-scheduler"
	// ReasonExceedsMaxSize is the PodScheduled condition reason for pods
	// too large for any Vessel size.
	ReasonExceedsMaxSize = "ExceedsMaxSize"

	// SystemNamespace holds Sandboxes and Vessel's own components.
	SystemNamespace = "vessel-system"

	// VerbUse is the RBAC verb on vesselprofiles/<name> that allows
	// launching pods through a profile.
	VerbUse = "use"
)
