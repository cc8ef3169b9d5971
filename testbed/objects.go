package testbed

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Builders of the objects tests, benchmarks and the demo create, so that each is spelled
// once.

// ClusterIPService is a ClusterIP Service with ports, selecting the pods labelled app=x;
// the caller names it.
func ClusterIPService(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: ports}}
}

// HTTPPort is the service port "http" on port, to target port 8080.
func HTTPPort(port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: "http", Port: port, TargetPort: intstr.FromInt32(8080)}
}

// ServiceExport exports the Service ns/name.
func ServiceExport(ns, name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// Namespace is the namespace name.
func Namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// WorkloadContainer is a container of the workload image (Testbed.Image of
// ./testbed/cmd/workload) serving HTTP on 8080, with its pod's address, name and namespace
// from the downward API, and Ready while it answers.
func WorkloadContainer(image string, args ...string) corev1.Container {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return corev1.Container{
		Name:  "main",
		Image: image,
		Args:  args,
		Env: []corev1.EnvVar{
			field("POD_IP", "status.podIP"), field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"),
			{Name: "PORTS", Value: "8080"},
		},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
			PeriodSeconds: 1,
		},
	}
}
