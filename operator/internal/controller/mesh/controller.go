package mesh

import (
	"context"
	"errors"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshfed/meshfed/federation/trust"
	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/xds"
)

// Reconciler reports the state of the member's Mesh and keeps the member's intermediate CA
// (its own key, signed through the hub) and the cert-manager CA Issuer it backs.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Namespace is the mesh namespace: the member's CA key and meshfed-cacerts are kept
	// there, the hub answers its intermediate request there, and the
	// workload certificates are issued there.
	Namespace string
	// XDS is the member's xDS server, whose state the Mesh reports; nil leaves it out.
	XDS *xds.Server
	// StatusChanged receives a signal when what the Mesh reports of other parts changes:
	// the xDS server's state, the imports lacking ClusterSet IPs.
	StatusChanged <-chan struct{}
	// ClusterSetIPs says which imported services lack their ClusterSet IPs; nil leaves the
	// ClusterSetIPsReady condition out.
	ClusterSetIPs interface{ Status() map[string]error }
	// OperatorNamespace is the operator's namespace: it holds the replicas' census Leases
	// and the CA and xDS Services meshed pods use.
	OperatorNamespace string
	// Census: every replica publishes its proxy count (xds.Census); without, the Mesh
	// counts this replica's.
	Census bool
	// Reader reads from the API server: the Mesh each pass starts from, and what the
	// cache does not hold (the injection webhook's configuration).
	Reader client.Reader
	// GatewayImage is the east-west gateway's container image.
	GatewayImage string
	// DNSImage is meshfed-dns's container image.
	DNSImage string
}

// +kubebuilder:rbac:groups=meshfed.io,resources=meshes,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=issuers,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates/status,verbs=update;patch
// +kubebuilder:rbac:groups="",namespace=meshfed-system,resources=secrets,verbs=get;list;watch

// SetupWithManager watches Meshes (status writes do not trigger a new pass), and the
// Secrets, Issuer and workload Certificates of the mesh namespace.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	toMesh := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if o.GetNamespace() != r.Namespace {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: meshv1.MeshSingletonName}}}
	})
	b := ctrl.NewControllerManagedBy(mgr)
	if r.StatusChanged != nil {
		events := make(chan event.GenericEvent)
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			statusEvents(ctx, r.StatusChanged, events)
			return nil
		})); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{}))
	}
	if r.OperatorNamespace != "" {
		// The replicas' census, new namespaces (the trust bundle goes there), the bundle
		// ConfigMaps (a changed or deleted one is put back), and the agents' requests.
		mesh := func(_ context.Context, _ client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: meshv1.MeshSingletonName}}}
		}
		census := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			if _, ok := o.GetLabels()[xds.CensusLabel]; !ok || o.GetNamespace() != r.OperatorNamespace {
				return nil
			}
			return mesh(ctx, o)
		})
		// A census Lease is renewed every few seconds: only a changed count (or a replica
		// coming or going) is news.
		counted := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetAnnotations()[xds.ProxiesAnnotation] != e.ObjectNew.GetAnnotations()[xds.ProxiesAnnotation]
		}}
		b = b.Watches(&coordinationv1.Lease{}, census, builder.WithPredicates(counted)).
			Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(mesh), builder.WithPredicates(predicate.Funcs{
				UpdateFunc: func(event.UpdateEvent) bool { return false }, DeleteFunc: func(event.DeleteEvent) bool { return false }})).
			Watches(&cmapi.CertificateRequest{}, toMesh)
	}
	// The hub's answer to the member's intermediate request, and the bundle ConfigMaps.
	configMaps := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		ours := o.GetName() == trust.IntermediateConfigMap && o.GetNamespace() == r.Namespace
		if !ours && (r.OperatorNamespace == "" || o.GetName() != caapi.TrustBundleConfigMap) {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: meshv1.MeshSingletonName}}}
	})
	return b.
		For(&meshv1.Mesh{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.ConfigMap{}, configMaps).
		Watches(&corev1.Secret{}, toMesh).
		Watches(&cmapi.Issuer{}, toMesh).
		Watches(&cmapi.Certificate{}, toMesh).
		Owns(&aboutv1alpha1.ClusterProperty{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Complete(r)
}

// Reconcile runs the member's phases for its Mesh (trust, gateway, control plane) and
// patches the status once, in a defer, so that a failed phase is reported in its
// condition and in Ready, not only logged.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, err error) {
	// Read from the API server, not the cache: the status is written as a patch against
	// what was read, and this controller's own status writes do not wake it (generation
	// predicate). A cache behind its last write would make a pass whose status equals that
	// stale copy skip the write, or patch only part of the trust report, and leave the
	// Mesh saying what no pass computed (a rotation then waits for nothing).
	var m meshv1.Mesh
	if err := r.Reader.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	s := &scope{mesh: &m, base: m.DeepCopy()}
	defer func() {
		err = errors.Join(err, r.patchStatus(ctx, s, err))
	}()
	if err := r.reconcileNormal(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	// While workload certificates wait for the current intermediate (a rotation's
	// Reissue), count again now and then, whatever events come.
	if t := m.Status.Trust; t != nil && len(t.Pending) > 0 {
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return ctrl.Result{}, nil
}
