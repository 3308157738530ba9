package scheduler

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
)

// ClusterRoleName is the name of ClusterRole.
const ClusterRoleName = "vessel:scheduler"

// ClusterRole is everything the scheduler does to the API, for running it as
// `vessel controller` under its own identity. Leases are cluster-wide only
// because a ClusterRole cannot name a namespace; bind it with a
// ClusterRoleBinding (the scheduler reads Hosts, Nodes and pods in every
// namespace).
func ClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: ClusterRoleName},
		Rules: []rbacv1.PolicyRule{
			// Pending pods, their status (PodScheduled, HostLost), binding.
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"patch", "update"}},
			{APIGroups: []string{""}, Resources: []string{"pods/binding"}, Verbs: []string{"create"}},
			// One Node per pod, created before binding, deleted after the Sandbox.
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
			// Scheduled, FailedScheduling, HostLost.
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			// vessel-system, created on start if missing.
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"create"}},
			// Host liveness (read) and the scheduler's own leader election.
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
			// Sandboxes: created, collected, and finalizer removed for lost hosts.
			{APIGroups: []string{vesselv1.GroupName}, Resources: []string{"sandboxes"}, Verbs: []string{"get", "list", "watch", "create", "delete", "patch", "update"}},
			{APIGroups: []string{vesselv1.GroupName}, Resources: []string{"hosts", "subnets", "vesselprofiles"}, Verbs: []string{"get", "list", "watch"}},
			// Subnet status: addresses allocated and available.
			{APIGroups: []string{vesselv1.GroupName}, Resources: []string{"subnets/status"}, Verbs: []string{"patch", "update"}},
		},
	}
}
