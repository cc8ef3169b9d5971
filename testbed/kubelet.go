package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// kubelet stands in for the kubelet of the cluster's single node: it registers the Node,
// runs each workload as a process in the cluster's pod network, and keeps its Pod's status
// true to the process: Running with the pod IP while the process lives, Ready while its
// first port accepts connections (and the test has not forced it unready). It deletes the
// Pod (grace 0) once the API server marks it for deletion, as a kubelet does.
type kubelet struct {
	cluster  *Cluster
	nodeName string
	nodeIP   string
	ctx      context.Context // ends when the testbed stops
	cancel   context.CancelFunc
	pods     cache.SharedIndexInformer

	mu        sync.Mutex
	workloads map[string]*Workload // by namespace/name
	wg        sync.WaitGroup
}

func startKubelet(ctx context.Context, c *Cluster) (*kubelet, error) {
	k := &kubelet{cluster: c, nodeName: c.Name + "-node", nodeIP: apiServerIP(c.Octet), workloads: map[string]*Workload{}}
	if c.network != nil {
		k.nodeIP = fmt.Sprintf("198.19.%d.2", c.Octet)
	}
	if err := k.registerNode(ctx); err != nil {
		return nil, fmt.Errorf("register node: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	k.ctx, k.cancel = runCtx, cancel
	factory := informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.nodeName).String()
	}))
	k.pods = factory.Core().V1().Pods().Informer()
	notify := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok {
			k.mu.Lock()
			w := k.workloads[pod.Namespace+"/"+pod.Name]
			k.mu.Unlock()
			if w != nil {
				w.poke()
			}
		}
	}
	if _, err := k.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		cancel()
		return nil, err
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.heartbeat(runCtx)
	}()
	factory.Start(runCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), k.pods.HasSynced) {
		cancel()
		return nil, errors.New("pod informer did not sync")
	}
	return k, nil
}

func (k *kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   k.nodeName,
			Labels: map[string]string{corev1.LabelHostname: k.nodeName, corev1.LabelOSStable: "linux"},
		},
		// It runs only the processes tests register (RunWorkload), never a scheduled pod.
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "meshfed.io/test-processes", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if err := k.cluster.Client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "meshfed testbed node", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.nodeIP}},
	}
	return k.cluster.Client.Status().Update(ctx, node)
}

// heartbeat renews the node's Lease, as a kubelet does, so that the node lifecycle
// controller keeps the node Ready (and removes the not-ready taint it was created with).
func (k *kubelet) heartbeat(ctx context.Context) {
	leases := k.cluster.Kube.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renew := func() {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.nodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: k.nodeName, Namespace: corev1.NamespaceNodeLease},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.nodeName), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now},
			}
			_, _ = leases.Create(ctx, lease, metav1.CreateOptions{})
			return
		}
		if err != nil {
			return
		}
		lease.Spec.RenewTime = &now
		_, _ = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	renew()
	Every(ctx, 10*time.Second, renew)
}

func (k *kubelet) stop() {
	k.cancel()
	k.wg.Wait()
}

// WorkloadSpec describes a workload pod: a real process with a Pod object.
type WorkloadSpec struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// ServiceAccount of the pod (default "default").
	ServiceAccount string
	// Ports the process serves; the first one is the readiness probe.
	Ports []corev1.ContainerPort
	// Command is the process argv; the default is bin/workload, an HTTP server that
	// answers with its pod name, namespace and cluster on every port.
	Command []string
	// Env is added to the process environment, next to POD_IP, POD_NAME, POD_NAMESPACE,
	// CLUSTER_NAME and PORTS.
	Env map[string]string
}

// Workload is a running workload pod.
type Workload struct {
	Cluster   *Cluster
	Namespace string
	Name      string
	// IP is the pod IP; the process binds to it.
	IP string

	spec       WorkloadSpec
	proc       *process
	forceUnrdy atomic.Bool
	wake       chan struct{}
	done       chan struct{}
}

// RunWorkload starts a workload process in the cluster's pod network and creates its Pod;
// it returns once the Pod exists with its IP. Readiness follows as the process comes up.
func (c *Cluster) RunWorkload(ctx context.Context, spec WorkloadSpec) (*Workload, error) {
	if c.network == nil {
		return nil, ErrNeedsRoot
	}
	if spec.ServiceAccount == "" {
		spec.ServiceAccount = "default"
	}
	if len(spec.Command) == 0 {
		spec.Command = []string{c.tb.bin("workload")}
	}
	ip, err := c.network.allocate()
	if err != nil {
		return nil, err
	}
	k := c.kubelet
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName:                      k.nodeName,
			ServiceAccountName:            spec.ServiceAccount,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "meshfed.local/testbed-process:latest",
				Command: spec.Command,
				Ports:   spec.Ports,
			}},
		},
	}
	// The ServiceAccount admission plugin refuses pods until the controller-manager has
	// created the namespace's default ServiceAccount.
	err = pollEvery(ctx, 30*time.Second, 100*time.Millisecond, "create pod "+spec.Namespace+"/"+spec.Name, func(ctx context.Context) error {
		return c.Client.Create(ctx, pod)
	})
	if err != nil {
		return nil, err
	}
	w := &Workload{Cluster: c, Namespace: spec.Namespace, Name: spec.Name, IP: ip, spec: spec,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	env := []string{"POD_IP=" + ip, "POD_NAME=" + spec.Name, "POD_NAMESPACE=" + spec.Namespace, "CLUSTER_NAME=" + c.Name}
	ports := ""
	for i, p := range spec.Ports {
		if i > 0 {
			ports += ","
		}
		ports += strconv.Itoa(int(p.ContainerPort))
	}
	env = append(env, "PORTS="+ports)
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	logPath := filepath.Join(c.Dir, fmt.Sprintf("pod-%s-%s.log", spec.Namespace, spec.Name))
	if w.proc, err = c.tb.start(c.Name+"/pod/"+spec.Namespace+"/"+spec.Name, logPath, c.network.wrap(spec.Command), env...); err != nil {
		_ = c.Client.Delete(ctx, pod, deleteNow())
		return nil, err
	}
	k.mu.Lock()
	k.workloads[spec.Namespace+"/"+spec.Name] = w
	k.mu.Unlock()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.sync(w)
	}()
	return w, nil
}

// SetReady forces the pod unready (false) or hands readiness back to the probe (true), and
// returns once the Pod status says so.
func (w *Workload) SetReady(ctx context.Context, ready bool) error {
	w.forceUnrdy.Store(!ready)
	w.poke()
	return w.WaitReady(ctx, ready)
}

// WaitReady waits until the Pod's Ready condition is ready.
func (w *Workload) WaitReady(ctx context.Context, ready bool) error {
	return pollEvery(ctx, 30*time.Second, 20*time.Millisecond, fmt.Sprintf("pod %s/%s ready=%v", w.Namespace, w.Name, ready), func(ctx context.Context) error {
		var pod corev1.Pod
		if err := w.Cluster.Client.Get(ctx, keyOf(w.Namespace, w.Name), &pod); err != nil {
			return err
		}
		if podReady(&pod) != ready {
			return fmt.Errorf("ready=%v", podReady(&pod))
		}
		return nil
	})
}

// Kill ends the process as a crash would; the Pod turns unready and Failed.
func (w *Workload) Kill() {
	w.proc.stop(0)
	w.poke()
}

// Addr is the pod's address for port.
func (w *Workload) Addr(port int) string { return net.JoinHostPort(w.IP, strconv.Itoa(port)) }

func (w *Workload) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// sync keeps the workload's Pod status in line with its process until the Pod is gone or
// the testbed stops.
func (k *kubelet) sync(w *Workload) {
	defer close(w.done)
	defer w.proc.stop(5 * time.Second)
	defer func() {
		k.mu.Lock()
		delete(k.workloads, w.Namespace+"/"+w.Name)
		k.mu.Unlock()
	}()
	ctx := k.ctx
	started := metav1.Now()
	lastReady, lastRunning, reported := false, false, false
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		obj, exists, err := k.pods.GetStore().GetByKey(w.Namespace + "/" + w.Name)
		switch {
		case err == nil && !exists && reported:
			return // the Pod is gone: stop the process
		case err == nil && exists && obj.(*corev1.Pod).DeletionTimestamp != nil:
			w.proc.stop(5 * time.Second)
			_ = k.cluster.Client.Delete(ctx, obj.(*corev1.Pod), deleteNow())
		default:
			running := !w.proc.exited()
			ready := running && !w.forceUnrdy.Load() && w.probe()
			if !reported || ready != lastReady || running != lastRunning {
				if err := k.writeStatus(ctx, w, running, ready, started); err == nil {
					reported, lastReady, lastRunning = true, ready, running
				} else if apierrors.IsNotFound(err) && reported {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-w.wake:
		}
	}
}

// probe is a TCP readiness probe on the first port; a workload without ports is ready
// while its process runs.
func (w *Workload) probe() bool {
	if len(w.spec.Ports) == 0 {
		return true
	}
	conn, err := net.DialTimeout("tcp", w.Addr(int(w.spec.Ports[0].ContainerPort)), 200*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (k *kubelet) writeStatus(ctx context.Context, w *Workload, running, ready bool, started metav1.Time) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var pod corev1.Pod
		if err := k.cluster.Client.Get(ctx, keyOf(w.Namespace, w.Name), &pod); err != nil {
			return err
		}
		pod.Status = podStatus(w, k.nodeIP, running, ready, started, pod.Status)
		return k.cluster.Client.Status().Update(ctx, &pod)
	})
}

// podStatus is the status a kubelet reports for the workload's single container.
func podStatus(w *Workload, hostIP string, running, ready bool, started metav1.Time, old corev1.PodStatus) corev1.PodStatus {
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		status := corev1.ConditionFalse
		if ok {
			status = corev1.ConditionTrue
		}
		c := corev1.PodCondition{Type: t, Status: status, LastTransitionTime: metav1.Now()}
		for _, prev := range old.Conditions {
			if prev.Type == t && prev.Status == status {
				c.LastTransitionTime = prev.LastTransitionTime
			}
		}
		return c
	}
	phase := corev1.PodRunning
	state := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	if !running {
		phase = corev1.PodFailed
		state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", StartedAt: started, FinishedAt: metav1.Now()}}
	}
	return corev1.PodStatus{
		Phase:     phase,
		HostIP:    hostIP,
		HostIPs:   []corev1.HostIP{{IP: hostIP}},
		PodIP:     w.IP,
		PodIPs:    []corev1.PodIP{{IP: w.IP}},
		StartTime: &started,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true),
			cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, ready),
			cond(corev1.PodReady, ready),
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:        "main",
			Image:       "meshfed.local/testbed-process:latest",
			ImageID:     "meshfed.local/testbed-process@process",
			ContainerID: "process://" + strconv.Itoa(w.proc.pid()),
			Ready:       ready,
			Started:     ptr.To(running),
			State:       state,
		}},
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func keyOf(namespace, name string) client.ObjectKey {
	return client.ObjectKey{Namespace: namespace, Name: name}
}

// deleteNow deletes without a grace period, as a kubelet does once the process is gone.
func deleteNow() client.DeleteOption { return client.GracePeriodSeconds(0) }
