package podnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// podRun is one pod on the node: its sandbox, volumes and containers, from creation to
// the end of its termination.
type podRun struct {
	node *Provider
	dir  string

	mu      sync.Mutex // guards pod, containers' statuses, failed/message, status
	pod     *corev1.Pod
	init    []*container
	main    []*container
	failed  string
	message string
	status  corev1.PodStatus
	started metav1.Time

	sandbox *sandbox // set before any container starts
	volumes *volumes

	cancel      context.CancelFunc // ends the pod's life (termination follows)
	terminating sync.Once
	grace       time.Duration // set by terminate, before cancel; guarded by mu
	done        chan struct{} // closed once everything of the pod is gone
}

func newPodRun(p *Provider, pod *corev1.Pod) *podRun {
	r := &podRun{node: p, pod: pod, started: metav1.Now(), done: make(chan struct{}),
		dir: filepath.Join(p.dir, "pods", string(pod.UID))}
	waiting := func(c *corev1.Container) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: c.Name, Image: c.Image, Started: ptr.To(false),
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		r.init = append(r.init, &container{pod: r, spec: c, index: i, isInit: true, status: waiting(c),
			dir: filepath.Join(r.dir, "containers", "init-"+c.Name)})
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		st := waiting(c)
		st.State.Waiting.Reason = "ContainerCreating"
		r.main = append(r.main, &container{pod: r, spec: c, index: i, status: st,
			dir: filepath.Join(r.dir, "containers", c.Name)})
	}
	r.status = r.computeLocked()
	return r
}

func (r *podRun) spec() *corev1.PodSpec { return &r.pod.Spec }

func (r *podRun) name() string { return r.pod.Namespace + "/" + r.pod.Name }

// event records an Event on the pod.
func (r *podRun) event(eventType, reason, message string) {
	r.node.recorder.Event(r.pod, eventType, reason, message)
}

// computeLocked derives the pod status; r.mu is held.
func (r *podRun) computeLocked() corev1.PodStatus {
	v := podView{spec: &r.pod.Spec, hostIP: r.node.hostIP, started: r.started, failed: r.failed,
		message: r.message, previous: r.status, now: metav1.Now()}
	if r.sandbox != nil {
		v.podIP = r.sandbox.ip.String()
	}
	for _, c := range r.init {
		v.init = append(v.init, *c.status.DeepCopy())
	}
	for _, c := range r.main {
		v.main = append(v.main, *c.status.DeepCopy())
	}
	return podStatus(v)
}

// changed recomputes the status and hands the pod to virtual-kubelet.
func (r *podRun) changed() {
	r.mu.Lock()
	r.status = r.computeLocked()
	pod := r.pod.DeepCopy()
	pod.Status = *r.status.DeepCopy()
	r.mu.Unlock()
	r.node.notifyPod(pod)
}

// snapshot is the pod with its current status.
func (r *podRun) snapshot() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	pod := r.pod.DeepCopy()
	pod.Status = *r.status.DeepCopy()
	return pod
}

// fail ends the pod for a reason no restart fixes.
func (r *podRun) fail(reason, message string) {
	r.mu.Lock()
	r.failed, r.message = reason, message
	r.mu.Unlock()
	r.event(corev1.EventTypeWarning, reason, message)
	r.changed()
}

// run is the pod's life: sandbox and volumes, init containers in order, then the
// containers, until the pod completes or is deleted.
func (r *podRun) run(ctx context.Context) {
	defer close(r.done)
	if problems := unsupported(r.pod); len(problems) > 0 {
		r.fail("Unsupported", unsupportedMessage(problems))
		<-ctx.Done()
		return
	}
	if err := r.prepare(ctx); err != nil {
		if ctx.Err() == nil {
			r.fail("SandboxFailed", err.Error())
			<-ctx.Done()
		}
		r.cleanup()
		return
	}
	r.changed()

	// Sidecars run until the containers have stopped, each with a context of its own.
	var sidecars []context.CancelFunc
	var wg sync.WaitGroup
	mainCtx, stopMain := context.WithCancel(ctx)
	defer stopMain()
	initialized := true
	for _, c := range r.init {
		if isSidecar(c.spec) {
			sctx, stop := context.WithCancel(context.Background())
			sidecars = append(sidecars, stop)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.run(sctx)
			}()
			if !r.waitStarted(ctx, c) {
				initialized = false
				break
			}
			continue
		}
		if code := c.run(mainCtx); code != 0 || ctx.Err() != nil {
			initialized = false // the pod failed (restartPolicy Never), or it is deleted
			break
		}
	}
	var mainWG sync.WaitGroup
	if initialized {
		for _, c := range r.main {
			mainWG.Add(1)
			go func() {
				defer mainWG.Done()
				c.run(mainCtx)
			}()
		}
	}
	finished := make(chan struct{})
	go func() {
		mainWG.Wait()
		close(finished)
	}()
	r.keepVolumes(ctx, finished)
	<-ctx.Done() // completed pods stay until deleted, as with a kubelet
	stopMain()
	mainWG.Wait()
	for i := len(sidecars) - 1; i >= 0; i-- {
		sidecars[i]()
	}
	wg.Wait()
	r.cleanup()
	r.changed()
}

// waitStarted waits until the sidecar c has started (its startup probe passed).
func (r *podRun) waitStarted(ctx context.Context, c *container) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		r.mu.Lock()
		started := ptr.Deref(c.status.Started, false)
		r.mu.Unlock()
		if started {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// volumeSync is how often a pod's Secret, ConfigMap and downward API volumes are brought
// up to date (a kubelet takes up to about a minute).
const volumeSync = 5 * time.Second

// keepVolumes renews the pod's projected tokens when due and brings its other volumes up
// to date, until ctx ends or the pod's containers have finished.
func (r *podRun) keepVolumes(ctx context.Context, finished <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastSync := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-finished:
			return
		case <-t.C:
		}
		w := r.node.volumeWriter
		if err := w.renewDue(ctx, r.pod, r.volumes); err != nil && ctx.Err() == nil {
			r.event(corev1.EventTypeWarning, "FailedMount", "renew service account token: "+err.Error())
		}
		if time.Since(lastSync) < volumeSync {
			continue
		}
		lastSync = time.Now()
		if err := w.refresh(ctx, r.snapshotPod(), r.volumes); err != nil && ctx.Err() == nil {
			r.event(corev1.EventTypeWarning, "FailedMount", "update volumes: "+err.Error())
		}
	}
}

// snapshotPod is the pod as last updated (labels and annotations change, for the
// downward API).
func (r *podRun) snapshotPod() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pod.DeepCopy()
}

// prepare makes the pod's network namespace, its files and its volumes.
func (r *podRun) prepare(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(r.dir, "etc"), 0o755); err != nil {
		return err
	}
	// A sandbox that cannot be made now (no address left, a network error) is retried,
	// as a kubelet does, with an Event each time.
	var sb *sandbox
	for {
		var err error
		if sb, err = r.node.network.create(); err == nil {
			break
		}
		r.event(corev1.EventTypeWarning, "FailedCreatePodSandBox", err.Error())
		if !sleepCtx(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.sandbox = sb
	r.mu.Unlock()
	if err := r.writeEtc(); err != nil {
		return err
	}
	// A volume whose source is missing (a Secret not created yet) is retried, as a
	// kubelet does, with an Event each time.
	for {
		vols, err := r.node.volumeWriter.setup(ctx, r.pod, r.dir)
		if err == nil {
			r.volumes = vols
			return nil
		}
		r.event(corev1.EventTypeWarning, "FailedMount", err.Error())
		if !sleepCtx(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
}

// writeEtc writes the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf.
func (r *podRun) writeEtc() error {
	hostname := r.hostname()
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", r.sandbox.ip, hostname)
	files := map[string]string{
		"hosts":       hosts,
		"hostname":    hostname + "\n",
		"resolv.conf": resolvConf(r.pod, r.node.clusterDNS, r.node.clusterDomain),
	}
	for name, content := range files {
		if err := writeFile(filepath.Join(r.dir, "etc"), name, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// resolvConf is a pod's resolver configuration: the node's own for dnsPolicy Default,
// else the cluster DNS and the search path of the pod's namespace, then the pod's
// dnsConfig.
func resolvConf(pod *corev1.Pod, dns, domain string) string {
	var b strings.Builder
	if pod.Spec.DNSPolicy == corev1.DNSDefault {
		host, _ := os.ReadFile("/etc/resolv.conf")
		b.Write(host)
	} else if dns != "" && pod.Spec.DNSPolicy != corev1.DNSNone {
		fmt.Fprintf(&b, "nameserver %s\n", dns)
		fmt.Fprintf(&b, "search %s.svc.%s svc.%s %s\n", pod.Namespace, domain, domain, domain)
		b.WriteString("options ndots:5\n")
	}
	if cfg := pod.Spec.DNSConfig; cfg != nil {
		for _, ns := range cfg.Nameservers {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if len(cfg.Searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(cfg.Searches, " "))
		}
	}
	return b.String()
}

// hostname is the pod's host name: spec.hostname, else its name.
func (r *podRun) hostname() string {
	if r.pod.Spec.Hostname != "" {
		return r.pod.Spec.Hostname
	}
	return r.pod.Name
}

// terminate starts the pod's termination with the grace period; it is safe to call again.
func (r *podRun) terminate(grace time.Duration) {
	r.terminating.Do(func() {
		r.mu.Lock()
		r.grace = grace
		r.mu.Unlock()
		r.cancel()
	})
}

// cleanup removes the pod's network namespace and its directory.
func (r *podRun) cleanup() {
	r.mu.Lock()
	sb := r.sandbox
	r.mu.Unlock()
	if sb != nil {
		r.node.network.destroy(sb)
	}
	// Logs stay until the pod object is gone; the rest is removed now.
	for _, sub := range []string{"volumes", "etc"} {
		_ = os.RemoveAll(filepath.Join(r.dir, sub))
	}
	for _, c := range append(append([]*container{}, r.init...), r.main...) {
		entries, _ := os.ReadDir(c.dir)
		for _, e := range entries {
			if e.IsDir() {
				_ = os.RemoveAll(filepath.Join(c.dir, e.Name()))
			}
		}
	}
}
