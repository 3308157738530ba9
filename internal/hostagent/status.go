package hostagent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// containerView is what the agent knows about one container of the pod: its latest and
// previous instances on the host plus the agent's own observations.
type containerView struct {
	Spec corev1.Container
	// Init: an init container; Sidecar: an init container with restartPolicy Always.
	Init, Sidecar bool
	// Cur and Prev are the latest and the one before; nil when none.
	Cur, Prev *runtime.ContainerStatus
	// Waiting, when set, is why no instance runs now (ContainerCreating, ErrImagePull,
	// ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, …). It wins over an
	// exited Cur, which then becomes the last state.
	Waiting *corev1.ContainerStateWaiting
	// Ready and Started are probe results for Cur.
	Ready, Started bool
	// Last is the status previously reported, for what the host no longer knows (e.g. the
	// restart count after a host reboot).
	Last *corev1.ContainerStatus
	// Image and ImageID once pulled.
	Image, ImageID string
}

// ContainerIDPrefix is the scheme of containerID values in pod status.
const ContainerIDPrefix = "vessel://"

func terminatedState(s *runtime.ContainerStatus) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ExitCode:    int32(s.ExitCode),
		Reason:      s.Reason,
		Message:     s.Message,
		StartedAt:   metav1.NewTime(s.StartedAt),
		FinishedAt:  metav1.NewTime(s.FinishedAt),
		ContainerID: ContainerIDPrefix + string(s.ID),
	}
	if s.State == runtime.ContainerUnknown {
		// What the kubelet reports for a container it lost track of.
		t.ExitCode, t.Reason = 137, "ContainerStatusUnknown"
		if t.Message == "" {
			t.Message = "The container could not be located when the pod was terminated"
		}
		t.FinishedAt = metav1.NewTime(s.StartedAt)
	}
	if t.Reason == "" {
		t.Reason = "Error"
	}
	return t
}

func exited(s *runtime.ContainerStatus) bool {
	return s != nil && (s.State == runtime.ContainerExited || s.State == runtime.ContainerUnknown)
}

func running(s *runtime.ContainerStatus) bool {
	return s != nil && s.State == runtime.ContainerRunning
}

// containerStatus renders one view as the Kubernetes status.
func containerStatus(v containerView) corev1.ContainerStatus {
	st := corev1.ContainerStatus{Name: v.Spec.Name, Image: v.Spec.Image, ImageID: v.ImageID}
	if v.Last != nil {
		st.RestartCount = v.Last.RestartCount
		st.LastTerminationState = v.Last.LastTerminationState
		if st.ImageID == "" {
			st.ImageID = v.Last.ImageID
		}
	}
	if v.Cur != nil {
		st.RestartCount = int32(v.Cur.Attempt)
		st.ContainerID = ContainerIDPrefix + string(v.Cur.ID)
	}
	if v.Prev != nil && exited(v.Prev) {
		st.LastTerminationState = corev1.ContainerState{Terminated: terminatedState(v.Prev)}
	}
	switch {
	case running(v.Cur):
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(v.Cur.StartedAt)}
		st.Ready = v.Ready && v.Started
	case v.Waiting != nil:
		st.State.Waiting = v.Waiting.DeepCopy()
		if exited(v.Cur) {
			st.LastTerminationState = corev1.ContainerState{Terminated: terminatedState(v.Cur)}
		}
	case exited(v.Cur):
		st.State.Terminated = terminatedState(v.Cur)
	default:
		st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	f := false
	if st.State.Running == nil {
		st.Started = &f
	} else {
		s := v.Started
		st.Started = &s
	}
	return st
}

// succeeded reports whether a status is a terminated exit 0 (not waiting for a restart).
func succeeded(s corev1.ContainerStatus) bool {
	return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
}

// lastTerminated is the termination a container is in or waiting after.
func lastTerminated(s corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	if s.State.Terminated != nil {
		return s.State.Terminated
	}
	if s.State.Waiting != nil {
		return s.LastTerminationState.Terminated
	}
	return nil
}

// initDone reports whether every init container finished (sidecars: started), and whether the
// pod failed in init (an init container failed with restartPolicy Never).
func initDone(specs []corev1.Container, statuses []corev1.ContainerStatus, policy corev1.RestartPolicy) (done, failed bool, pending []string) {
	for i, c := range specs {
		var s corev1.ContainerStatus
		if i < len(statuses) {
			s = statuses[i]
		}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			if s.State.Running == nil || s.Started == nil || !*s.Started {
				pending = append(pending, c.Name)
			}
			continue
		}
		if succeeded(s) {
			continue
		}
		pending = append(pending, c.Name)
		if t := lastTerminated(s); t != nil && t.ExitCode != 0 && policy == corev1.RestartPolicyNever {
			failed = true
		}
	}
	return len(pending) == 0, failed, pending
}

// podPhase follows the kubelet's rules: init first, then counts of regular containers.
func podPhase(initSpecs []corev1.Container, initStatuses, statuses []corev1.ContainerStatus, policy corev1.RestartPolicy) corev1.PodPhase {
	done, failed, _ := initDone(initSpecs, initStatuses, policy)
	if failed {
		return corev1.PodFailed
	}
	if !done {
		return corev1.PodPending
	}
	var running, waiting, stopped, ok int
	for _, s := range statuses {
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				ok++
			}
		case s.State.Waiting != nil:
			if s.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if policy == corev1.RestartPolicyAlways || policy == "" {
			return corev1.PodRunning
		}
		if stopped == ok {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// Condition types the agent owns (PodScheduled belongs to the scheduler, readiness gates to
// their controllers).
const podReadyToStartContainers corev1.PodConditionType = "PodReadyToStartContainers"

// podConditions computes the agent's conditions, keeping transition times of unchanged ones
// from old and every condition the agent does not own.
func podConditions(old []corev1.PodCondition, phase corev1.PodPhase, sandboxReady bool, initSpecs []corev1.Container,
	initStatuses, statuses []corev1.ContainerStatus, policy corev1.RestartPolicy, gates []corev1.PodReadinessGate, now time.Time) []corev1.PodCondition {
	type cond struct {
		ok              bool
		reason, message string
	}
	want := map[corev1.PodConditionType]cond{}
	want[corev1.PodScheduled] = cond{ok: true}
	want[podReadyToStartContainers] = cond{ok: sandboxReady}
	done, _, pending := initDone(initSpecs, initStatuses, policy)
	if done {
		want[corev1.PodInitialized] = cond{ok: true}
	} else {
		want[corev1.PodInitialized] = cond{reason: "ContainersNotInitialized",
			message: fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(pending, " "))}
	}
	var unready []string
	for _, s := range statuses {
		if !s.Ready {
			unready = append(unready, s.Name)
		}
	}
	for i, s := range initStatuses {
		if i < len(initSpecs) && initSpecs[i].RestartPolicy != nil && *initSpecs[i].RestartPolicy == corev1.ContainerRestartPolicyAlways && !s.Ready {
			unready = append(unready, s.Name)
		}
	}
	var cr cond
	switch {
	case phase == corev1.PodSucceeded || phase == corev1.PodFailed:
		cr = cond{reason: "PodCompleted"}
	case !done:
		cr = cond{reason: "ContainersNotReady", message: fmt.Sprintf("containers with unready status: [%s]", strings.Join(append(slices.Clone(pending), unready...), " "))}
	case len(unready) > 0:
		cr = cond{reason: "ContainersNotReady", message: fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))}
	default:
		cr = cond{ok: true}
	}
	want[corev1.ContainersReady] = cr
	ready := cr
	if ready.ok {
		var missing []string
		for _, g := range gates {
			found := false
			for _, c := range old {
				if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
					found = true
				}
			}
			if !found {
				missing = append(missing, string(g.ConditionType))
			}
		}
		if len(missing) > 0 {
			ready = cond{reason: "ReadinessGatesNotReady", message: fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", missing[0])}
		}
	}
	want[corev1.PodReady] = ready

	order := []corev1.PodConditionType{podReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled}
	var out []corev1.PodCondition
	for _, t := range order {
		w := want[t]
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: w.reason, Message: w.message, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))}
		if w.ok {
			c.Status = corev1.ConditionTrue
		}
		for _, o := range old {
			if o.Type != t {
				continue
			}
			if t == corev1.PodScheduled {
				c = o // the scheduler's
			} else if o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
				c.LastProbeTime = o.LastProbeTime
			}
		}
		out = append(out, c)
	}
	for _, o := range old {
		if !slices.Contains(order, o.Type) {
			out = append(out, o)
		}
	}
	return out
}
