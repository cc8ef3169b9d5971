package meshfederation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/clusters"
	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// DefaultGracePeriod is how long a disconnected member's endpoints stay imported elsewhere.
const DefaultGracePeriod = 30 * time.Second

// Reconciler reconciles MeshFederations in the hub.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Namespace is the only namespace whose MeshFederations the hub honours (its
	// --federation-namespace): whoever may write one there chooses the members' Secrets.
	Namespace string
	// GracePeriod keeps a disconnected member's endpoints imported elsewhere; after it they
	// are withdrawn so that traffic fails over.
	GracePeriod time.Duration
	// TokenTTL is the life of the token the hub asks a member for when it renews its own,
	// a third of TokenTTL before the old one ends (default join.DefaultTokenTTL).
	TokenTTL time.Duration
	// QPS and Burst of the clients to the members.
	QPS   float32
	Burst int

	registry  *clusters.Registry
	apiReader client.Reader
	started   time.Time
	changes   chan event.GenericEvent
	mu        sync.Mutex
	dirty     map[string]bool
	kick      chan struct{}
}

// +kubebuilder:rbac:groups=meshfed.io,resources=meshfederations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshfederations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshfederations/finalizers,verbs=update
// +kubebuilder:rbac:groups="",namespace=meshfed-system,resources=secrets,verbs=get;list;watch;patch

// SetupWithManager builds the member registry and wires the controller: a MeshFederation
// is reconciled when it changes, when a kubeconfig Secret next to it changes, and when
// anything it watches in a member changes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.GracePeriod == 0 {
		r.GracePeriod = DefaultGracePeriod
	}
	if r.TokenTTL == 0 {
		r.TokenTTL = join.DefaultTokenTTL
	}
	if r.TokenTTL < 10*time.Minute || r.TokenTTL > join.MaxTokenTTL {
		return fmt.Errorf("member token life %s (--member-token-ttl): give one between 10m and %s", r.TokenTTL, join.MaxTokenTTL)
	}
	r.started = time.Now()
	r.apiReader = mgr.GetAPIReader()
	r.changes = make(chan event.GenericEvent, 64)
	r.dirty = map[string]bool{}
	r.kick = make(chan struct{}, 1)
	r.registry = clusters.New(clusters.Options{
		Scheme: mgr.GetScheme(),
		Watch: []client.Object{
			&mcsv1beta1.ServiceExport{}, &mcsv1beta1.ServiceImport{}, &corev1.Service{},
			&discoveryv1.EndpointSlice{}, &corev1.Namespace{}, &meshv1.Mesh{}, &meshv1.MeshPeer{},
		},
		OnChange: r.markDirty,
		QPS:      r.QPS,
		Burst:    r.Burst,
		Log:      mgr.GetLogger().WithName("member-registry"),
	})
	if err := mgr.Add(manager(r.forwardChanges)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1.MeshFederation{}, builder.WithPredicates(specOrDeletion(), predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Namespace
		}))).
		Owns(&cmapi.Certificate{}).
		Owns(&cmapi.CertificateRequest{}).
		Owns(&cmapi.Issuer{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.federationsInNamespace)).
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile runs one pass for a MeshFederation: connect, gather, aggregate, write, report.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Namespace != r.Namespace {
		return ctrl.Result{}, nil // not the hub's: see Namespace
	}
	var fed meshv1.MeshFederation
	if err := r.Client.Get(ctx, req.NamespacedName, &fed); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if rotating(&fed) {
		// The cache may not hold this controller's last status write yet, and a rotation
		// must decide on its latest state.
		if err := r.apiReader.Get(ctx, req.NamespacedName, &fed); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	s := newScope(&fed, req.String())
	if !fed.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, s)
	}
	if controllerutil.AddFinalizer(&fed, meshv1.FinalizerFederation) {
		if err := r.Client.Update(ctx, &fed); err != nil {
			return ctrl.Result{}, err
		}
	}
	base := fed.DeepCopy()
	result, err := r.reconcileNormal(ctx, s)
	r.updateStatus(s, err)
	if perr := r.Client.Status().Patch(ctx, &fed, client.MergeFrom(base)); perr != nil {
		err = errors.Join(err, perr)
	}
	return result, err
}

// rotating tells whether a root rotation is in progress or asked for.
func rotating(fed *meshv1.MeshFederation) bool {
	t := fed.Status.Trust
	return t != nil && t.Root != nil && (t.Rotation != nil || !trust.SameSource(*t.Root, trust.DesiredRoot(fed)))
}

// specOrDeletion lets through spec changes and deletions, not the controller's own status
// writes.
func specOrDeletion() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectNew.GetGeneration() != e.ObjectOld.GetGeneration() || !e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

func (r *Reconciler) federationsInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var list meshv1.MeshFederationList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, f := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: f.Namespace, Name: f.Name}})
	}
	return reqs
}

// markDirty records that a federation's members changed. It never blocks: it runs in the
// members' informer callbacks.
func (r *Reconciler) markDirty(owner string) {
	r.mu.Lock()
	r.dirty[owner] = true
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// passInterval is the least time between two member-triggered passes: a burst of member
// events (hundreds of exports, or the hub's own writes coming back) becomes a pass every
// passInterval rather than one per event, while a lone change still goes at once.
const passInterval = 100 * time.Millisecond

// forwardChanges turns dirty marks into reconcile requests, coalescing bursts of member
// events into one request per federation.
func (r *Reconciler) forwardChanges(ctx context.Context) error {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		if wait := passInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		last = time.Now()
		r.mu.Lock()
		dirty := r.dirty
		r.dirty = map[string]bool{}
		r.mu.Unlock()
		for owner := range dirty {
			ns, name, _ := strings.Cut(owner, "/")
			obj := &meshv1.MeshFederation{}
			obj.Namespace, obj.Name = ns, name
			select {
			case r.changes <- event.GenericEvent{Object: obj}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// manager adapts a function to a manager.Runnable.
type manager func(context.Context) error

func (f manager) Start(ctx context.Context) error { return f(ctx) }
