package podnode

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// podView is what the status of a pod is made from.
type podView struct {
	spec     *corev1.PodSpec
	hostIP   string
	podIP    string // "" until the sandbox exists
	started  metav1.Time
	init     []corev1.ContainerStatus // one per init container, in spec order
	main     []corev1.ContainerStatus // one per container, in spec order
	failed   string                   // a reason the whole pod failed for (Unsupported), or ""
	message  string
	previous corev1.PodStatus // the last status reported, for transition times
	now      metav1.Time
}

// podStatus is the Pod status a kubelet would report: phase, conditions and container
// statuses, from the containers' states alone.
func podStatus(v podView) corev1.PodStatus {
	s := corev1.PodStatus{
		HostIP:                v.hostIP,
		StartTime:             &v.started,
		InitContainerStatuses: v.init,
		ContainerStatuses:     v.main,
		QOSClass:              v.previous.QOSClass,
	}
	if v.hostIP != "" {
		s.HostIPs = []corev1.HostIP{{IP: v.hostIP}}
	}
	if v.podIP != "" {
		s.PodIP = v.podIP
		s.PodIPs = []corev1.PodIP{{IP: v.podIP}}
	}
	initialized := initDone(v.spec, v.init)
	s.Phase = phase(v.spec, v.init, v.main, initialized)
	if v.failed != "" {
		s.Phase, s.Reason, s.Message = corev1.PodFailed, v.failed, v.message
	}
	ready := initialized && s.Phase == corev1.PodRunning
	for _, c := range v.main {
		ready = ready && c.Ready
	}
	for i, c := range v.init {
		if isSidecar(&v.spec.InitContainers[i]) {
			ready = ready && c.Ready
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: v.now}
		if ok {
			c.Status = corev1.ConditionTrue
		} else {
			c.Reason = reason
		}
		for _, prev := range v.previous.Conditions {
			if prev.Type == t && prev.Status == c.Status && !prev.LastTransitionTime.IsZero() {
				c.LastTransitionTime = prev.LastTransitionTime
			}
		}
		return c
	}
	s.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, v.podIP != "", ""),
		cond(corev1.PodInitialized, initialized, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
		cond(corev1.PodScheduled, true, ""),
	}
	return s
}

// isSidecar tells a native sidecar: an init container that restarts always and runs
// alongside the main containers.
func isSidecar(c *corev1.Container) bool {
	return ptr.Deref(c.RestartPolicy, "") == corev1.ContainerRestartPolicyAlways
}

// initDone reports whether every regular init container completed and every sidecar has
// started.
func initDone(spec *corev1.PodSpec, init []corev1.ContainerStatus) bool {
	for i := range spec.InitContainers {
		if i >= len(init) {
			return false
		}
		st := init[i]
		if isSidecar(&spec.InitContainers[i]) {
			if !ptr.Deref(st.Started, false) {
				return false
			}
			continue
		}
		if t := st.State.Terminated; t == nil || t.ExitCode != 0 {
			return false
		}
	}
	return true
}

// phase follows the kubelet's rules: Pending until the init containers are done and a
// container has run; Running while one runs or will be restarted; Succeeded or Failed once
// all have ended for good.
func phase(spec *corev1.PodSpec, init, main []corev1.ContainerStatus, initialized bool) corev1.PodPhase {
	if !initialized {
		for i, st := range init {
			t := st.State.Terminated
			if !isSidecar(&spec.InitContainers[i]) && t != nil && t.ExitCode != 0 && spec.RestartPolicy == corev1.RestartPolicyNever {
				return corev1.PodFailed
			}
		}
		return corev1.PodPending
	}
	running, waiting, succeeded, failed := 0, 0, 0, 0
	for _, st := range main {
		switch {
		case st.State.Running != nil:
			running++
		case st.State.Terminated != nil && st.State.Terminated.ExitCode == 0:
			succeeded++
		case st.State.Terminated != nil:
			failed++
		case st.LastTerminationState.Terminated != nil:
			running++ // waiting to be restarted: it has run
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case failed > 0:
		return corev1.PodFailed
	case succeeded == len(main):
		return corev1.PodSucceeded
	}
	return corev1.PodRunning
}
