package testbed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WorkloadSpec describes a test workload: a Pod from an image, created through the API and
// run by the cluster's node like any other.
type WorkloadSpec struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	// ServiceAccount of the pod (default "default").
	ServiceAccount string
	// Image is the container image; the default is the testbed's workload image
	// (testbed/cmd/workload), an HTTP server that answers with its pod name, namespace
	// and cluster on every port.
	Image string
	// Args are the container's arguments.
	Args []string
	// Ports the container serves (in $PORTS).
	Ports []corev1.ContainerPort
	// ControlPort serves the pod controls of testbed/cmd/internal/podctl, which the
	// readiness probe, SetReady and Kill use; the default is the first port. A workload
	// without ports has no probe and no controls.
	ControlPort int32
	// Env is added to the container's environment, next to POD_IP, POD_NAME,
	// POD_NAMESPACE, CLUSTER_NAME, PORTS and CONTROL_PORT.
	Env map[string]string
	// Volumes and their mounts in the container.
	Volumes []corev1.Volume
	Mounts  []corev1.VolumeMount
	// Hostname and Subdomain of the pod: with Subdomain naming a headless Service, the
	// pod's endpoint carries Hostname (as a StatefulSet's pods do).
	Hostname, Subdomain string
}

// Workload is a running workload pod. Its restart policy is Never: a killed workload
// stays dead, as a test of failover needs.
type Workload struct {
	Cluster   *Cluster
	Namespace string
	Name      string
	// IP is the pod IP.
	IP string

	control int32
}

// workloadPod is the Pod of spec in cluster c, with image.
func workloadPod(c *Cluster, spec WorkloadSpec, image string) *corev1.Pod {
	ports := make([]string, len(spec.Ports))
	for i, p := range spec.Ports {
		ports[i] = strconv.Itoa(int(p.ContainerPort))
	}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	env := []corev1.EnvVar{
		{Name: "POD_IP", ValueFrom: field("status.podIP")},
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
		{Name: "CLUSTER_NAME", Value: c.Name},
		{Name: "PORTS", Value: strings.Join(ports, ",")},
	}
	container := corev1.Container{Name: "main", Image: image, Args: spec.Args, Ports: spec.Ports, VolumeMounts: spec.Mounts}
	if spec.ControlPort != 0 {
		env = append(env, corev1.EnvVar{Name: "CONTROL_PORT", Value: strconv.Itoa(int(spec.ControlPort))})
		container.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(spec.ControlPort)}},
			PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
		}
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
	}
	container.Env = env
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels, Annotations: spec.Annotations},
		Spec: corev1.PodSpec{
			ServiceAccountName:            spec.ServiceAccount,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{container},
			Volumes:                       spec.Volumes,
			Hostname:                      spec.Hostname,
			Subdomain:                     spec.Subdomain,
		},
	}
}

// RunWorkload creates the workload's Pod and returns once the node runs it with its IP;
// readiness follows as the container comes up (WaitReady).
func (c *Cluster) RunWorkload(ctx context.Context, spec WorkloadSpec) (*Workload, error) {
	pod, err := c.prepare(ctx, &spec)
	if err != nil {
		return nil, err
	}
	if err := c.create(ctx, spec, pod); err != nil {
		return nil, err
	}
	return c.running(ctx, spec, client.ObjectKeyFromObject(pod))
}

// RunDeployment runs spec as a Deployment of one replica, as a user runs an app: the pod
// restarts a process that ends (a killed one comes back after the node's back-off). It
// returns the Deployment's pod once the node runs it.
func (c *Cluster) RunDeployment(ctx context.Context, spec WorkloadSpec) (*Workload, error) {
	pod, err := c.prepare(ctx, &spec)
	if err != nil {
		return nil, err
	}
	selector := map[string]string{"app.kubernetes.io/instance": spec.Name}
	labels := maps.Clone(pod.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, selector)
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: pod.Annotations}, Spec: pod.Spec}}}
	if err := c.create(ctx, spec, dep); err != nil {
		return nil, err
	}
	var name string
	err = PollEvery(ctx, time.Minute, 50*time.Millisecond, "a pod of Deployment "+spec.Namespace+"/"+spec.Name, func(ctx context.Context) error {
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(spec.Namespace), client.MatchingLabels(selector)); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return errors.New("none yet")
		}
		name = pods.Items[0].Name
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c.running(ctx, spec, client.ObjectKey{Namespace: spec.Namespace, Name: name})
}

// prepare fills spec's defaults and returns its pod.
func (c *Cluster) prepare(ctx context.Context, spec *WorkloadSpec) (*corev1.Pod, error) {
	if !CanRunPods(c.tb) {
		return nil, ErrNeedsRoot
	}
	if spec.ServiceAccount == "" {
		spec.ServiceAccount = "default"
	}
	if spec.ControlPort == 0 && len(spec.Ports) > 0 {
		spec.ControlPort = spec.Ports[0].ContainerPort
	}
	image := spec.Image
	if image == "" {
		var err error
		if image, err = c.tb.Image(ctx, "workload", "./testbed/cmd/workload"); err != nil {
			return nil, err
		}
	}
	return workloadPod(c, *spec, image), nil
}

// create creates obj; the ServiceAccount admission plugin refuses pods until the
// controller-manager has created the namespace's ServiceAccount.
func (c *Cluster) create(ctx context.Context, spec WorkloadSpec, obj client.Object) error {
	return PollEvery(ctx, 30*time.Second, 100*time.Millisecond, fmt.Sprintf("create %T %s/%s", obj, spec.Namespace, spec.Name), func(ctx context.Context) error {
		return c.Client.Create(ctx, obj)
	})
}

// running waits until the node runs the pod key and returns it as a Workload.
func (c *Cluster) running(ctx context.Context, spec WorkloadSpec, key client.ObjectKey) (*Workload, error) {
	w := &Workload{Cluster: c, Namespace: key.Namespace, Name: key.Name, control: spec.ControlPort}
	err := PollEvery(ctx, time.Minute, 20*time.Millisecond, fmt.Sprintf("pod %s running", key), func(ctx context.Context) error {
		var pod corev1.Pod
		if err := c.Client.Get(ctx, key, &pod); err != nil {
			return err
		}
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			return fmt.Errorf("phase %s, ip %q: %s", pod.Status.Phase, pod.Status.PodIP, waitingReason(&pod))
		}
		w.IP = pod.Status.PodIP
		return nil
	})
	return w, err
}

// waitingReason is why the pod's container is not running yet, if it says.
func waitingReason(pod *corev1.Pod) string {
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			return s.State.Waiting.Reason + " " + s.State.Waiting.Message
		}
		if s.State.Terminated != nil {
			return fmt.Sprintf("terminated (%s, exit %d)", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
	}
	return ""
}

// SetReady turns the workload's readiness off (false) or back on (true) through its pod
// controls, and returns once the Pod's Ready condition says so.
func (w *Workload) SetReady(ctx context.Context, ready bool) error {
	if w.control == 0 {
		return errors.New("the workload has no control port")
	}
	url := fmt.Sprintf("http://%s/ready?v=%t", w.Addr(int(w.control)), ready)
	// The container may still be starting: its controls answer once it listens.
	err := PollEvery(ctx, time.Minute, 20*time.Millisecond, "POST "+url, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return w.WaitReady(ctx, ready)
}

// MetricsURL is where the workload serves its Prometheus metrics: on its control port.
func (w *Workload) MetricsURL() string {
	return fmt.Sprintf("http://%s/metrics", w.Addr(int(w.control)))
}

// WaitReady waits until the Pod's Ready condition is ready.
func (w *Workload) WaitReady(ctx context.Context, ready bool) error {
	return PollEvery(ctx, time.Minute, 20*time.Millisecond, fmt.Sprintf("pod %s/%s ready=%v", w.Namespace, w.Name, ready), func(ctx context.Context) error {
		var pod corev1.Pod
		if err := w.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: w.Namespace, Name: w.Name}, &pod); err != nil {
			return err
		}
		if podReady(&pod) != ready {
			return fmt.Errorf("ready=%v %s", podReady(&pod), waitingReason(&pod))
		}
		return nil
	})
}

// Kill ends the workload's process with SIGKILL, as a crash would, and returns once it is
// gone (its connections closed); the Pod turns Failed and unready.
func (w *Workload) Kill(ctx context.Context) error {
	if w.control == 0 {
		return errors.New("the workload has no control port")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+w.Addr(int(w.control))+"/kill", nil)
	if err != nil {
		return err
	}
	// The process dies before it answers: the connection's end is the sign it is gone.
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		return fmt.Errorf("pod %s/%s answered /kill with %s and lives on", w.Namespace, w.Name, resp.Status)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("kill pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	return nil
}

// Addr is the pod's address for port.
func (w *Workload) Addr(port int) string { return net.JoinHostPort(w.IP, strconv.Itoa(port)) }

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
