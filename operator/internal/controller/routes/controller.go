// Package routes reports, in each GRPCRoute's and HTTPRoute's status, what meshfed makes of
// the route for each parent that is a Service or a ServiceImport (GAMMA): Accepted and
// ResolvedRefs with the Gateway API's reasons, decided by translate.ResolveGRPCRoute and
// ResolveHTTPRoute, the functions the control plane programs the proxies by. Parents of
// other kinds (Gateways) are other controllers' to report, and their entries are kept.
package routes

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/operator/internal/translate"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes;httproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes/status;httproutes/status,verbs=get;update;patch

// Kind is what the Reconciler needs of one route kind.
type Kind struct {
	Name string
	// New returns an empty route and a pointer to its status; List an empty list.
	New  func() (client.Object, *gatewayv1.RouteStatus)
	List func() client.ObjectList
	// Resolve is the translate function of the kind.
	Resolve func(client.Object, translate.RouteLookup) []translate.ParentResult
	// Related are other kinds whose objects decide the routes of their namespace.
	Related []client.Object
}

// GRPCRoutes and HTTPRoutes are the route kinds meshfed reports.
var (
	GRPCRoutes = Kind{Name: "GRPCRoute",
		New: func() (client.Object, *gatewayv1.RouteStatus) {
			r := &gatewayv1.GRPCRoute{}
			return r, &r.Status.RouteStatus
		},
		List: func() client.ObjectList { return &gatewayv1.GRPCRouteList{} },
		Resolve: func(o client.Object, lookup translate.RouteLookup) []translate.ParentResult {
			parents, _ := translate.ResolveGRPCRoute(o.(*gatewayv1.GRPCRoute), lookup)
			return parents
		},
	}
	HTTPRoutes = Kind{Name: "HTTPRoute",
		New: func() (client.Object, *gatewayv1.RouteStatus) {
			r := &gatewayv1.HTTPRoute{}
			return r, &r.Status.RouteStatus
		},
		List: func() client.ObjectList { return &gatewayv1.HTTPRouteList{} },
		Resolve: func(o client.Object, lookup translate.RouteLookup) []translate.ParentResult {
			parents, _ := translate.ResolveHTTPRoute(o.(*gatewayv1.HTTPRoute), lookup)
			return parents
		},
		// A GRPCRoute on an HTTPRoute's parent makes it Conflicted.
		Related: []client.Object{&gatewayv1.GRPCRoute{}},
	}
)

// Reconciler writes the parent statuses of the routes of one kind.
type Reconciler struct {
	Client client.Client
	Kind   Kind
}

// Reconcile reports one route.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	route, status := r.Kind.New()
	if err := r.Client.Get(ctx, req.NamespacedName, route); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	lookup := &cacheLookup{ctx: ctx, client: r.Client}
	parents := r.Kind.Resolve(route, lookup)
	if lookup.err != nil {
		return reconcile.Result{}, lookup.err
	}
	updated := ParentStatuses(status.Parents, parents, route.GetGeneration())
	if apiequality.Semantic.DeepEqual(status.Parents, updated) {
		return reconcile.Result{}, nil
	}
	status.Parents = updated
	// An update, not a merge patch: status.parents is a list that other controllers
	// write too, and the resourceVersion guards their entries.
	if err := r.Client.Status().Update(ctx, route); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("update the status of %s %s/%s: %w", r.Kind.Name, route.GetNamespace(), route.GetName(), err)
	}
	return reconcile.Result{}, nil
}

// ParentStatuses returns the route's parent statuses with meshfed's entries replaced by
// those of parents, and the other controllers' entries kept. A condition keeps its
// lastTransitionTime while its status stays.
func ParentStatuses(current []gatewayv1.RouteParentStatus, parents []translate.ParentResult, generation int64) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	previous := map[string][]metav1.Condition{}
	for _, s := range current {
		if s.ControllerName != translate.ControllerName {
			out = append(out, s)
			continue
		}
		previous[parentKey(s.ParentRef)] = s.Conditions
	}
	for _, p := range parents {
		// A copy: setting a condition changes it in place, and current must stay as it
		// was for Reconcile to see the change.
		conditions := slices.Clone(previous[parentKey(p.Ref)])
		meta.SetStatusCondition(&conditions, condition(gatewayv1.RouteConditionAccepted, p.Accepted, generation))
		meta.SetStatusCondition(&conditions, condition(gatewayv1.RouteConditionResolvedRefs, p.ResolvedRefs, generation))
		out = append(out, gatewayv1.RouteParentStatus{ParentRef: p.Ref, ControllerName: translate.ControllerName, Conditions: conditions})
	}
	return out
}

func condition(t gatewayv1.RouteConditionType, c translate.Condition, generation int64) metav1.Condition {
	status := metav1.ConditionFalse
	if c.OK {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(t), Status: status, Reason: string(c.Reason), Message: c.Message, ObservedGeneration: generation}
}

func parentKey(ref gatewayv1.ParentReference) string {
	return fmt.Sprintf("%v/%v/%v/%s/%v/%v", deref(ref.Group), deref(ref.Kind), deref(ref.Namespace), ref.Name, deref(ref.SectionName), deref(ref.Port))
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// cacheLookup answers translate.RouteLookup from the manager's cache; the first error
// other than NotFound is kept for Reconcile to return.
type cacheLookup struct {
	ctx    context.Context
	client client.Client
	err    error
}

func (l *cacheLookup) ServicePorts(namespace, name string) ([]translate.Port, bool) {
	var svc corev1.Service
	if !l.get(namespace, name, &svc) {
		return nil, false
	}
	return translate.ServicePorts(&svc), true
}

func (l *cacheLookup) ImportPorts(namespace, name string) ([]translate.Port, bool) {
	var imp mcsv1beta1.ServiceImport
	if !l.get(namespace, name, &imp) {
		return nil, false
	}
	return translate.ImportPorts(&imp), true
}

func (l *cacheLookup) GRPCRoutes(namespace string) []gatewayv1.GRPCRoute {
	var list gatewayv1.GRPCRouteList
	if err := l.client.List(l.ctx, &list, client.InNamespace(namespace)); err != nil {
		if l.err == nil {
			l.err = err
		}
		return nil
	}
	return list.Items
}

func (l *cacheLookup) get(namespace, name string, obj client.Object) bool {
	err := l.client.Get(l.ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	if err != nil && !apierrors.IsNotFound(err) && l.err == nil {
		l.err = err
	}
	return err == nil
}

// SetupWithManager reconciles a route when it changes, and the routes of a namespace when
// a Service or ServiceImport there comes, goes or changes its ports, or a Related object
// there changes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	inNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		list := r.Kind.List()
		if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, item := range items {
			if route, ok := item.(client.Object); ok {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(route)})
			}
		}
		return reqs
	})
	portsChange := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		switch old := e.ObjectOld.(type) {
		case *corev1.Service:
			cur, ok := e.ObjectNew.(*corev1.Service)
			return !ok || !apiequality.Semantic.DeepEqual(old.Spec.Ports, cur.Spec.Ports)
		case *mcsv1beta1.ServiceImport:
			cur, ok := e.ObjectNew.(*mcsv1beta1.ServiceImport)
			return !ok || !apiequality.Semantic.DeepEqual(old.Spec.Ports, cur.Spec.Ports)
		}
		return true
	}}
	route, _ := r.Kind.New()
	b := ctrl.NewControllerManagedBy(mgr).Named(strings.ToLower(r.Kind.Name)).
		For(route, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Service{}, inNamespace, builder.WithPredicates(portsChange)).
		Watches(&mcsv1beta1.ServiceImport{}, inNamespace, builder.WithPredicates(portsChange))
	for _, o := range r.Kind.Related {
		b = b.Watches(o, inNamespace, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	return b.Complete(r)
}
