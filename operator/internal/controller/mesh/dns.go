package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// DNSName names meshfed-dns's objects in the mesh namespace, and its ServiceAccount, which
// config/rbac lets read ServiceImports and EndpointSlices and nothing else.
const DNSName = "meshfed-dns"

// Ports of meshfed-dns's pods. The image runs as a user that may not bind port 53; the
// Service maps 53 to dnsPort.
const (
	dnsPort        = 1053
	dnsHealthPort  = 8080
	dnsReadyPort   = 8181
	dnsMetricsPort = 9153
)

// dnsLabels select meshfed-dns's pods.
func dnsLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": DNSName, meshv1.LabelManagedBy: meshv1.ManagedByValue}
}

// Corefile is meshfed-dns's configuration: the clusterset.local zone from this cluster's
// imports, with health, readiness (ready once the imports are loaded) and metrics. No
// cache: an answer follows an import or endpoint change at once, and the plugin answers
// from memory.
func Corefile(ttl int32) string {
	return fmt.Sprintf(`clusterset.local:%d {
    errors
    health :%d
    ready :%d
    prometheus :%d
    clusterset {
        ttl %d
    }
}
`, dnsPort, dnsHealthPort, dnsReadyPort, dnsMetricsPort, ttl)
}

// DNSObjects are the ConfigMap (Corefile), Deployment, Service and PodDisruptionBudget of a
// Mesh's meshfed-dns, in namespace.
func DNSObjects(m *meshv1.Mesh, namespace, image string) (*corev1.ConfigMap, *appsv1.Deployment, *corev1.Service, *policyv1.PodDisruptionBudget) {
	spec := m.Spec.DNS
	meta := metav1.ObjectMeta{Namespace: namespace, Name: DNSName, Labels: dnsLabels()}
	corefile := Corefile(ptr.Deref(spec.TTL, 5))
	config := &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"Corefile": corefile}}
	sum := sha256.Sum256([]byte(corefile))
	probe := func(path string, port int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port)}},
			PeriodSeconds: 2}
	}
	const confDir = "/etc/meshfed-dns"
	dep := &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(ptr.Deref(spec.Replicas, 2)),
		Selector: &metav1.LabelSelector{MatchLabels: dnsLabels()},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dnsLabels(),
			// A changed Corefile rolls the pods: CoreDNS reads it at start.
			Annotations: map[string]string{"meshfed.io/corefile-sha256": hex.EncodeToString(sum[:8])}},
			Spec: corev1.PodSpec{
				ServiceAccountName: DNSName,
				SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: DNSName}}}}},
				Containers: []corev1.Container{{
					Name:  "dns",
					Image: image,
					Args:  []string{"-conf", confDir + "/Corefile"},
					Ports: []corev1.ContainerPort{
						{Name: "dns", ContainerPort: dnsPort, Protocol: corev1.ProtocolUDP},
						{Name: "dns-tcp", ContainerPort: dnsPort, Protocol: corev1.ProtocolTCP},
						{Name: "metrics", ContainerPort: dnsMetricsPort, Protocol: corev1.ProtocolTCP},
					},
					VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: confDir, ReadOnly: true}},
					ReadinessProbe: probe("/ready", dnsReadyPort),
					LivenessProbe:  probe("/health", dnsHealthPort),
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
			}},
	}}
	svc := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:     corev1.ServiceTypeClusterIP,
		Selector: dnsLabels(),
		Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromString("dns-tcp"), Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: dnsMetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
		},
	}}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: meta, Spec: policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(1)),
		Selector:     &metav1.LabelSelector{MatchLabels: dnsLabels()},
	}}
	return config, dep, svc, pdb
}

// reconcileDNS keeps (or removes) meshfed-dns's objects and reports the address the
// cluster DNS forwards clusterset.local to, and the DNSReady condition.
func (r *Reconciler) reconcileDNS(ctx context.Context, s *scope) (metav1.Condition, error) {
	m := s.mesh
	cond := metav1.Condition{Type: meshv1.ConditionDNSReady, Status: metav1.ConditionFalse}
	config, dep, svc, pdb := DNSObjects(m, r.Namespace, r.DNSImage)
	objs := []client.Object{config, dep, svc, pdb}
	if !ptr.Deref(m.Spec.DNS.Enabled, true) {
		for _, obj := range objs {
			if err := r.deleteControlled(ctx, m, obj); err != nil {
				return cond, err
			}
		}
		m.Status.DNSAddress = ""
		cond.Reason, cond.Message = meshv1.ReasonDNSDisabled, "spec.dns.enabled is false: <service>.<namespace>.svc.clusterset.local names do not resolve in this cluster"
		return cond, nil
	}
	if err := r.applyOwned(ctx, m, objs...); err != nil {
		return cond, err
	}
	m.Status.DNSAddress = svc.Spec.ClusterIP
	if dep.Status.AvailableReplicas == 0 {
		cond.Reason = meshv1.ReasonDNSUnavailable
		cond.Message = fmt.Sprintf("Deployment %s/%s has no ready replica yet (a replica is ready once it has loaded this cluster's ServiceImports)", r.Namespace, DNSName)
		return cond, nil
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, meshv1.ReasonReconciled
	cond.Message = fmt.Sprintf("%d meshfed-dns replicas answer clusterset.local at %s: the cluster DNS forwards that zone there (docs/user-guide.md)", dep.Status.AvailableReplicas, m.Status.DNSAddress)
	return cond, nil
}
