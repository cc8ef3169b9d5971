package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/inject"
)

// InjectPath serves the mutating webhook that injects pods (MutatingWebhookConfiguration
// meshfed-injector, config/webhook/injection.yaml).
const InjectPath = "/inject-pod"

// InjectorWebhook is the name of the MutatingWebhookConfiguration, and NamespaceWebhook
// the webhook in it whose namespaceSelector the Mesh controller keeps equal to the Mesh's.
const (
	InjectorWebhook  = "meshfed-injector"
	NamespaceWebhook = "namespace.inject.meshfed.io"
)

// SystemNamespaces are the namespaces injection never touches, whatever the selectors say: a down webhook must not
// block the cluster's own pods or meshfed's.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

var injections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meshfed_injections_total",
	Help: "Pods the injection webhook saw, by result: injected, skipped, unchanged (injected before), refused, error.",
}, []string{"result"})

func init() {
	crmetrics.Registry.MustRegister(injections)
}

// Injector decides about each new pod and injects those that join the mesh.
type Injector struct {
	// Client reads the Mesh and the pod's Namespace.
	Client  client.Reader
	Decoder admission.Decoder
	// AgentImage, EnvoyImage and OperatorNamespace complete inject.Config; the rest
	// comes from the Mesh.
	AgentImage, EnvoyImage string
	OperatorNamespace      string
}

// DefaultSelector is the namespace selector of a Mesh that sets none.
func DefaultSelector() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{inject.LabelInject: inject.Enabled}}
}

// Handle implements admission.Handler.
func (i *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := i.Decoder.Decode(req, pod); err != nil {
		injections.WithLabelValues("error").Inc()
		return admission.Errored(http.StatusBadRequest, err)
	}
	if slices.Contains(SystemNamespaces, req.Namespace) || req.Namespace == i.OperatorNamespace {
		// The webhook configuration leaves them out; a configuration changed by hand (or
		// by OLM) must not bring meshfed into the cluster's own pods or its own.
		injections.WithLabelValues("skipped").Inc()
		return admission.Allowed("not injected: meshfed never injects pods of " + req.Namespace)
	}
	var mesh meshv1.Mesh
	if err := i.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); apierrors.IsNotFound(err) {
		injections.WithLabelValues("skipped").Inc()
		return admission.Allowed("not injected: this cluster has no Mesh").WithWarnings("meshfed: the pod asks for injection, but this cluster has no Mesh; create Mesh \"default\"")
	} else if err != nil {
		injections.WithLabelValues("error").Inc()
		return admission.Errored(http.StatusInternalServerError, err)
	}
	var ns corev1.Namespace
	if err := i.Client.Get(ctx, client.ObjectKey{Name: req.Namespace}, &ns); err != nil {
		injections.WithLabelValues("error").Inc()
		return admission.Errored(http.StatusInternalServerError, err)
	}
	sel := mesh.Spec.Injection.NamespaceSelector
	if sel == nil {
		sel = DefaultSelector()
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		selector = labels.Nothing() // the Mesh webhook refuses such a selector
	}
	if ok, why := inject.Decide(pod, ns.Labels, selector); !ok {
		injections.WithLabelValues("skipped").Inc()
		return admission.Allowed("not injected: " + why)
	}
	injected, changed, err := inject.Inject(pod, inject.Config{
		AgentImage: i.AgentImage, EnvoyImage: i.EnvoyImage, TrustDomain: mesh.Spec.TrustDomainOrDefault(), Cluster: mesh.Spec.ClusterName,
		OperatorNamespace: i.OperatorNamespace, XDSPort: mesh.Spec.XDSPortOrDefault(),
	})
	if err != nil {
		injections.WithLabelValues("refused").Inc()
		return admission.Denied("meshfed cannot inject this pod: " + err.Error())
	}
	if !changed {
		injections.WithLabelValues("unchanged").Inc()
		return admission.Allowed("injected before")
	}
	raw, err := json.Marshal(injected)
	if err != nil {
		injections.WithLabelValues("error").Inc()
		return admission.Errored(http.StatusInternalServerError, err)
	}
	injections.WithLabelValues("injected").Inc()
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}
