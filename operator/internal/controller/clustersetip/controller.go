// Package clustersetip gives the ClusterSetIP services a member imports their ClusterSet
// IPs (KEP-1645): one address per IP family of the ServiceImport, from the Mesh's
// spec.clusterSetIPs.ranges, written into ServiceImport.spec.ips, where it stays for as
// long as the service is imported (the hub keeps what the member wrote there). The
// import's Ready condition says whether it has them.
package clustersetip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/vip"
)

var ipsGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_clusterset_ips",
	Help: "ClusterSet IPs of the member's ranges, by IP family: held by an imported service, or the range's capacity.",
}, []string{"family", "state"})

func init() { crmetrics.Registry.MustRegister(ipsGauge) }

// retryAfter paces the retries of a service that got no address: the range may have room
// again once another import goes.
const retryAfter = 30 * time.Second

// Reconciler keeps the ServiceImports' ClusterSet IPs.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Changed receives a signal (without blocking) when a service gets or loses its
	// addresses' failure, for the Mesh's ClusterSetIPsReady condition.
	Changed chan struct{}

	mu     sync.Mutex
	ranges []string
	pool   *vip.Pool
	// failed are the services that lack an address, and why; retry brings them back when
	// an import goes and frees its addresses.
	failed map[string]error
	retry  chan event.GenericEvent
}

// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports/status,verbs=patch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshes,verbs=get;list;watch

// SetupWithManager reconciles every ServiceImport, one at a time (the pool is one), and all
// of them when the Mesh's ranges change.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.failed = map[string]error{}
	r.retry = make(chan event.GenericEvent, 64)
	allImports := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list mcsv1beta1.ServiceImportList
		if err := r.Client.List(ctx, &list); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, si := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&si)})
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clustersetip").
		For(&mcsv1beta1.ServiceImport{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&meshv1.Mesh{}, allImports, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.retry, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// Status says which services lack their ClusterSet IPs, and why.
func (r *Reconciler) Status() map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.failed)
}

// Reconcile gives one ServiceImport its addresses, or takes them back.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var mesh meshv1.Mesh
	if err := r.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); err != nil {
		// Without a Mesh there are no ranges: the Mesh's creation brings every import back.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool == nil || !slices.Equal(r.ranges, mesh.Spec.ClusterSetIPs.Ranges) {
		if err := r.rebuild(ctx, mesh.Spec.ClusterSetIPs.Ranges); err != nil {
			return ctrl.Result{}, err
		}
	}
	key := req.String()
	var si mcsv1beta1.ServiceImport
	if err := r.Client.Get(ctx, req.NamespacedName, &si); apierrors.IsNotFound(err) {
		r.release(key)
		r.setFailed(key, nil)
		return ctrl.Result{}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	var want []string
	var assignErr error
	if si.Spec.Type == mcsv1beta1.ClusterSetIP {
		want, assignErr = r.pool.Assign(key, families(&si), si.Spec.IPs)
	} else {
		r.release(key) // headless: no address
	}
	r.report()
	if !slices.Equal(want, si.Spec.IPs) {
		patched := si.DeepCopy()
		patched.Spec.IPs = want
		if err := r.Client.Patch(ctx, patched, client.MergeFrom(&si)); err != nil {
			return ctrl.Result{}, fmt.Errorf("ServiceImport %s: write its ClusterSet IPs: %w", key, err)
		}
		si = *patched // the condition observes the generation that holds the addresses
	}
	if err := r.reportReady(ctx, &si, want, assignErr); err != nil {
		return ctrl.Result{}, fmt.Errorf("ServiceImport %s: write its Ready condition: %w", key, err)
	}
	if r.setFailed(key, assignErr) && assignErr != nil {
		r.Recorder.Eventf(&si, corev1.EventTypeWarning, reasonOf(assignErr), "no ClusterSet IP: %v (see Mesh spec.clusterSetIPs.ranges)", assignErr)
	}
	if assignErr != nil {
		return ctrl.Result{RequeueAfter: retryAfter}, nil
	}
	return ctrl.Result{}, nil
}

// reportReady sets the import's Ready condition (mcs-api): True once a ClusterSetIP
// import holds its addresses here (a headless one at once), else False with why.
func (r *Reconciler) reportReady(ctx context.Context, si *mcsv1beta1.ServiceImport, ips []string, assignErr error) error {
	cond := mcsv1beta1.NewServiceImportCondition(mcsv1beta1.ServiceImportConditionReady, metav1.ConditionTrue, mcsv1beta1.ServiceImportReasonReady,
		"headless: clients reach its endpoints by name")
	switch {
	case errors.Is(assignErr, vip.ErrNoRange):
		cond.Status, cond.Reason = metav1.ConditionFalse, string(mcsv1beta1.ServiceImportReasonIPFamilyNotSupported)
		cond.Message = fmt.Sprintf("no ClusterSet IP: %v; add a range of that family to the Mesh's spec.clusterSetIPs.ranges", assignErr)
	case assignErr != nil:
		cond.Status, cond.Reason = metav1.ConditionFalse, meshv1.ReasonRangeExhausted
		cond.Message = fmt.Sprintf("no ClusterSet IP: %v; widen the Mesh's spec.clusterSetIPs.ranges", assignErr)
	case si.Spec.Type == mcsv1beta1.ClusterSetIP:
		cond.Message = "ClusterSet IPs " + strings.Join(ips, ", ")
	}
	if other := nonTCPPorts(si); cond.Status == metav1.ConditionTrue && len(other) > 0 {
		cond.Message += "; ports " + strings.Join(other, ", ") + " are imported, but the mesh data plane carries TCP only"
	}
	cond.ObservedGeneration = si.Generation
	patched := si.DeepCopy()
	if !meta.SetStatusCondition(&patched.Status.Conditions, cond) {
		return nil
	}
	return r.Client.Status().Patch(ctx, patched, client.MergeFrom(si))
}

// nonTCPPorts names the import's UDP and SCTP ports.
func nonTCPPorts(si *mcsv1beta1.ServiceImport) []string {
	var out []string
	for _, p := range si.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			out = append(out, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	return out
}

// release frees key's addresses and has the services that lack one try again (those that
// find no room wait for the next release, or retryAfter).
func (r *Reconciler) release(key string) {
	r.pool.Release(key)
	r.report()
	for waiting := range r.failed {
		if waiting == key {
			continue
		}
		ns, name, _ := strings.Cut(waiting, "/")
		select {
		case r.retry <- event.GenericEvent{Object: &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
		default: // full: retryAfter brings it back
		}
	}
}

// families are the IP families a ServiceImport asks addresses of: IPv4 when it names none.
func families(si *mcsv1beta1.ServiceImport) []corev1.IPFamily {
	if len(si.Spec.IPFamilies) == 0 {
		return []corev1.IPFamily{corev1.IPv4Protocol}
	}
	return si.Spec.IPFamilies
}

// rebuild starts a pool over ranges, holding what the imports hold: the oldest import
// keeps an address two claim (after a change of ranges, say), and an address a range no
// longer holds is given anew when its import is reconciled.
func (r *Reconciler) rebuild(ctx context.Context, ranges []string) error {
	pool, err := vip.NewPool(ranges)
	if err != nil {
		return fmt.Errorf("Mesh spec.clusterSetIPs.ranges: %w", err)
	}
	var list mcsv1beta1.ServiceImportList
	if err := r.Client.List(ctx, &list); err != nil {
		return err
	}
	slices.SortFunc(list.Items, func(a, b mcsv1beta1.ServiceImport) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name))
	})
	for i := range list.Items {
		si := &list.Items[i]
		if si.Spec.Type == mcsv1beta1.ClusterSetIP && len(si.Spec.IPs) > 0 {
			_, _ = pool.Assign(client.ObjectKeyFromObject(si).String(), families(si), si.Spec.IPs)
		}
	}
	r.pool, r.ranges = pool, slices.Clone(ranges)
	return nil
}

// setFailed records why key lacks addresses (nil: it has them) and tells whether that
// changed.
func (r *Reconciler) setFailed(key string, err error) bool {
	old, had := r.failed[key]
	if err == nil {
		delete(r.failed, key)
	} else {
		r.failed[key] = err
	}
	changed := had != (err != nil) || (had && old.Error() != err.Error())
	if changed && r.Changed != nil {
		select {
		case r.Changed <- struct{}{}:
		default:
		}
	}
	return changed
}

func (r *Reconciler) report() {
	for f, u := range r.pool.Usage() {
		ipsGauge.WithLabelValues(string(f), "held").Set(float64(u.Held))
		ipsGauge.WithLabelValues(string(f), "capacity").Set(float64(u.Capacity))
	}
}

func reasonOf(err error) string {
	if errors.Is(err, vip.ErrExhausted) {
		return meshv1.ReasonRangeExhausted
	}
	return meshv1.ReasonNoRange
}
