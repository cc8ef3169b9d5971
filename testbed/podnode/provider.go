package podnode

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Provider is the virtual-kubelet provider that runs pods as processes: each pod in a
// network namespace of its own, each container chrooted into its image.
type Provider struct {
	nodeName      string
	hostIP        string
	dir           string
	self          string // the node binary, which is also the containers' init
	clusterDNS    string
	clusterDomain string
	crashBackOff  time.Duration

	images       *images
	network      *network
	volumeWriter *volumeWriter
	env          *envResolver
	recorder     record.EventRecorder

	mu     sync.Mutex
	pods   map[types.UID]*podRun
	notify func(*corev1.Pod)
	ctx    context.Context // the node's life; pods run under it
}

func newProvider(ctx context.Context, cfg Config, client kubernetes.Interface, recorder record.EventRecorder) (*Provider, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	gateway, err := netip.ParseAddr(cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("--gateway: %w", err)
	}
	pool, err := netip.ParsePrefix(cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("--pod-cidr: %w", err)
	}
	return &Provider{
		nodeName: cfg.NodeName, hostIP: cfg.NodeIP, dir: cfg.Dir, self: self,
		clusterDNS: cfg.ClusterDNS, clusterDomain: cfg.ClusterDomain, crashBackOff: cfg.CrashBackOff,
		images:       newImages(cfg.Dir+"/images", cfg.InsecureRegistries),
		network:      newNetwork(cfg.ClusterNetns, gateway, pool),
		volumeWriter: &volumeWriter{client: client, renewAfter: cfg.TokenRenewAfter, now: time.Now},
		env:          &envResolver{client: client, hostIP: cfg.NodeIP},
		recorder:     recorder,
		pods:         map[types.UID]*podRun{},
		notify:       func(*corev1.Pod) {},
		ctx:          ctx,
	}, nil
}

// NotifyPods is how virtual-kubelet learns of status changes.
func (p *Provider) NotifyPods(_ context.Context, notify func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = notify
	p.mu.Unlock()
}

func (p *Provider) notifyPod(pod *corev1.Pod) {
	p.mu.Lock()
	notify := p.notify
	p.mu.Unlock()
	notify(pod)
}

// CreatePod starts the pod's life; its status follows through NotifyPods.
func (p *Provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pods[pod.UID] != nil {
		return nil
	}
	pod = pod.DeepCopy()
	r := newPodRun(p, pod)
	ctx, cancel := context.WithCancel(p.ctx)
	r.cancel = cancel
	p.pods[pod.UID] = r
	go func() {
		r.run(ctx)
		p.mu.Lock()
		delete(p.pods, pod.UID)
		p.mu.Unlock()
	}()
	return nil
}

// UpdatePod takes the pod's new metadata; a running container is not changed.
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	r, err := p.get(pod)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.pod.Labels, r.pod.Annotations = pod.Labels, pod.Annotations
	r.mu.Unlock()
	return nil
}

// DeletePod starts the pod's termination: SIGTERM, then SIGKILL after the grace period.
func (p *Provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	r, err := p.get(pod)
	if err != nil {
		return err
	}
	grace := 30 * time.Second
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	r.terminate(grace)
	return nil
}

// get is the pod's run, or virtual-kubelet's NotFound.
func (p *Provider) get(pod *corev1.Pod) (*podRun, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.pods[pod.UID]; r != nil {
		return r, nil
	}
	return nil, errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
}

func (p *Provider) find(namespace, name string) *podRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.pods {
		if r.pod.Namespace == namespace && r.pod.Name == name {
			return r
		}
	}
	return nil
}

// GetPod returns the pod with its status.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	r := p.find(namespace, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return r.snapshot(), nil
}

// GetPodStatus returns the pod's status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod on the node.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.snapshot())
	}
	return out, nil
}

// shutdown ends every pod at once (the node is stopping) and waits for them.
func (p *Provider) shutdown() {
	p.mu.Lock()
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	for _, r := range runs {
		r.terminate(0)
	}
	for _, r := range runs {
		<-r.done
	}
}

var errNotSupported = errdefs.InvalidInput("not supported by the testbed node")

// RunInContainer is kubectl exec: not supported.
func (p *Provider) RunInContainer(context.Context, string, string, string, []string, api.AttachIO) error {
	return errNotSupported
}

// AttachToContainer is kubectl attach: not supported.
func (p *Provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errNotSupported
}

// PortForward is kubectl port-forward: not supported.
func (p *Provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errNotSupported
}

// GetStatsSummary reports the node and its pods, without usage figures.
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.nodeName}}
	p.mu.Lock()
	for _, r := range p.pods {
		s.Pods = append(s.Pods, statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{
			Name: r.pod.Name, Namespace: r.pod.Namespace, UID: string(r.pod.UID)}})
	}
	p.mu.Unlock()
	return s, nil
}

// GetMetricsResource has no resource metrics to report.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}
