package podnode

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// nodeMemory is the memory the node reports, and what a container without a memory limit
// sees as its limit.
var nodeMemory = resource.MustParse("16Gi")

// envResolver builds a container's environment as a kubelet does, when the container
// starts: Service variables, envFrom, then env with $(VAR) references and valueFrom.
type envResolver struct {
	client kubernetes.Interface
	hostIP string
}

func (e *envResolver) resolve(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP string) ([]corev1.EnvVar, error) {
	var out []corev1.EnvVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			out[i].Value = value
			return
		}
		index[name] = len(out)
		out = append(out, corev1.EnvVar{Name: name, Value: value})
	}
	services, err := e.serviceEnv(ctx, pod)
	if err != nil {
		return nil, err
	}
	for _, kv := range services {
		set(kv.Name, kv.Value)
	}
	for _, from := range c.EnvFrom {
		data, err := e.envFromData(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	vars := func() map[string]string {
		m := make(map[string]string, len(out))
		for _, kv := range out {
			m[kv.Name] = kv.Value
		}
		return m
	}
	for _, env := range c.Env {
		if env.ValueFrom == nil {
			set(env.Name, expand(env.Value, vars()))
			continue
		}
		value, ok, err := e.valueFrom(ctx, pod, c, env.ValueFrom, podIP)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", env.Name, err)
		}
		if ok {
			set(env.Name, value)
		}
	}
	return out, nil
}

// valueFrom resolves one valueFrom; ok is false for an optional key that is missing.
func (e *envResolver) valueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, podIP string) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		switch from.FieldRef.FieldPath {
		case "status.podIP", "status.podIPs":
			return podIP, true, nil
		case "status.hostIP", "status.hostIPs":
			return e.hostIP, true, nil
		}
		v, err := fieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := resourceValue(c, from.ResourceFieldRef)
		return v, err == nil, err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := e.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(ref.Optional, false) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok && !ptr.Deref(ref.Optional, false) {
			return "", false, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		return string(v), ok, nil
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := e.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(ref.Optional, false) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("configmap %q: %w", ref.Name, err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !ptr.Deref(ref.Optional, false) {
			return "", false, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
		return v, ok, nil
	}
	return "", false, fmt.Errorf("valueFrom has no source")
}

func (e *envResolver) envFromData(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	out := map[string]string{}
	switch {
	case from.ConfigMapRef != nil:
		cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(from.ConfigMapRef.Optional, false) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("envFrom configmap %q: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := e.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(from.SecretRef.Optional, false) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, err)
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
	}
	return out, nil
}

// serviceEnv is the Service variables a kubelet sets: the API server's ("kubernetes" in
// the default namespace) always, and the pod's namespace's with enableServiceLinks.
func (e *envResolver) serviceEnv(ctx context.Context, pod *corev1.Pod) ([]corev1.EnvVar, error) {
	var services []corev1.Service
	api, err := e.client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if err == nil {
		services = append(services, *api)
	}
	if ptr.Deref(pod.Spec.EnableServiceLinks, true) {
		list, err := e.client.CoreV1().Services(pod.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, s := range list.Items {
			if pod.Namespace != metav1.NamespaceDefault || s.Name != "kubernetes" {
				services = append(services, s)
			}
		}
	}
	var out []corev1.EnvVar
	for _, s := range services {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		out = append(out, serviceVars(&s)...)
	}
	return out, nil
}

// serviceVars are one Service's variables: <NAME>_SERVICE_HOST/_PORT and the Docker
// link style ones.
func serviceVars(s *corev1.Service) []corev1.EnvVar {
	name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	ip, first := s.Spec.ClusterIP, s.Spec.Ports[0]
	out := []corev1.EnvVar{
		{Name: name + "_SERVICE_HOST", Value: ip},
		{Name: name + "_SERVICE_PORT", Value: strconv.Itoa(int(first.Port))},
		{Name: name + "_PORT", Value: fmt.Sprintf("%s://%s:%d", strings.ToLower(string(first.Protocol)), ip, first.Port)},
	}
	for _, p := range s.Spec.Ports {
		if p.Name != "" {
			out = append(out, corev1.EnvVar{Name: name + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), Value: strconv.Itoa(int(p.Port))})
		}
		proto := strings.ToUpper(string(p.Protocol))
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, proto)
		out = append(out,
			corev1.EnvVar{Name: prefix, Value: fmt.Sprintf("%s://%s:%d", strings.ToLower(proto), ip, p.Port)},
			corev1.EnvVar{Name: prefix + "_PROTO", Value: strings.ToLower(proto)},
			corev1.EnvVar{Name: prefix + "_PORT", Value: strconv.Itoa(int(p.Port))},
			corev1.EnvVar{Name: prefix + "_ADDR", Value: ip})
	}
	return out
}

// resourceValue is a container's limit or request, in the divisor's units rounded up;
// a limit not set is the node's capacity, as with a kubelet.
func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	var q resource.Quantity
	var ok bool
	kind, res, _ := strings.Cut(ref.Resource, ".")
	switch kind {
	case "limits":
		q, ok = c.Resources.Limits[corev1.ResourceName(res)]
	case "requests":
		q, ok = c.Resources.Requests[corev1.ResourceName(res)]
	default:
		return "", fmt.Errorf("resource %q is not supported", ref.Resource)
	}
	if !ok {
		switch corev1.ResourceName(res) {
		case corev1.ResourceCPU:
			q = *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI)
		case corev1.ResourceMemory:
			q = nodeMemory
		default:
			q = resource.Quantity{}
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	return strconv.FormatInt(int64(math.Ceil(q.AsApproximateFloat64()/divisor.AsApproximateFloat64())), 10), nil
}
