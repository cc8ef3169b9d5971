package podnode

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// unsupported lists what in the pod this node cannot do; the pod fails with an Event
// naming each, instead of running without it.
func unsupported(pod *corev1.Pod) []string {
	var out []string
	spec := &pod.Spec
	if spec.HostNetwork {
		out = append(out, "hostNetwork")
	}
	if spec.HostPID || spec.HostIPC {
		out = append(out, "hostPID/hostIPC")
	}
	for _, v := range spec.Volumes {
		switch src := v.VolumeSource; {
		case src.EmptyDir != nil, src.Secret != nil, src.ConfigMap != nil:
		case src.DownwardAPI != nil:
			out = append(out, downwardProblems(v.Name, src.DownwardAPI.Items)...)
		case src.Projected != nil:
			for _, p := range src.Projected.Sources {
				if p.DownwardAPI != nil {
					out = append(out, downwardProblems(v.Name, p.DownwardAPI.Items)...)
				}
				if p.ClusterTrustBundle != nil || p.PodCertificate != nil {
					out = append(out, fmt.Sprintf("volume %q: projected clusterTrustBundle/podCertificate", v.Name))
				}
			}
		case src.HostPath != nil:
			out = append(out, fmt.Sprintf("volume %q: hostPath %s (outside the pod's directory)", v.Name, src.HostPath.Path))
		default:
			out = append(out, fmt.Sprintf("volume %q: only emptyDir, secret, configMap, downwardAPI and projected volumes", v.Name))
		}
	}
	check := func(kind string, c *corev1.Container) {
		where := fmt.Sprintf("%s %q", kind, c.Name)
		if sc := c.SecurityContext; sc != nil && ptr.Deref(sc.Privileged, false) {
			out = append(out, where+": privileged")
		}
		probes := []struct {
			kind  string
			probe *corev1.Probe
		}{{"startup", c.StartupProbe}, {"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}}
		for _, p := range probes {
			if p.probe != nil && p.probe.Exec != nil {
				out = append(out, fmt.Sprintf("%s: exec %s probe", where, p.kind))
			}
		}
		if c.Lifecycle != nil && (c.Lifecycle.PostStart != nil || c.Lifecycle.PreStop != nil) {
			out = append(out, where+": lifecycle hooks")
		}
		for _, m := range c.VolumeMounts {
			if m.SubPathExpr != "" {
				out = append(out, fmt.Sprintf("%s: subPathExpr on %s", where, m.MountPath))
			}
		}
	}
	for i := range spec.InitContainers {
		check("init container", &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		check("container", &spec.Containers[i])
	}
	return out
}

func downwardProblems(volume string, items []corev1.DownwardAPIVolumeFile) []string {
	var out []string
	for _, it := range items {
		if it.ResourceFieldRef != nil {
			out = append(out, fmt.Sprintf("volume %q: downward API resourceFieldRef (%s)", volume, it.Path))
		}
	}
	return out
}

// unsupportedMessage is the message of the pod's Failed status and Event.
func unsupportedMessage(problems []string) string {
	return "the testbed node cannot run this pod: " + strings.Join(problems, "; ")
}
