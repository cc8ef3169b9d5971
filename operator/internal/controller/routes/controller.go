// Package routes reports, in each GRPCRoute's status, what meshfed makes of the route for
// each parent that is a Service or a ServiceImport (GAMMA): Accepted and ResolvedRefs with
// the Gateway API's reasons, decided by translate.ResolveGRPCRoute, the function the
// control plane programs the proxies by. Parents of other kinds (Gateways) are other
// controllers' to report, and their entries are kept.
package routes

import (
	"context"
	"fmt"

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

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes/status,verbs=get;update;patch

// Reconciler writes the GRPCRoutes' parent statuses.
type Reconciler struct {
	Client client.Client
}

// Reconcile reports one route.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var route gatewayv1.GRPCRoute
	if err := r.Client.Get(ctx, req.NamespacedName, &route); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	lookup := &cacheLookup{ctx: ctx, client: r.Client}
	parents, _ := translate.ResolveGRPCRoute(&route, lookup)
	if lookup.err != nil {
		return reconcile.Result{}, lookup.err
	}
	base := route.DeepCopy()
	route.Status.Parents = ParentStatuses(route.Status.Parents, parents, route.Generation)
	if apiequality.Semantic.DeepEqual(base.Status, route.Status) {
		return reconcile.Result{}, nil
	}
	// An update, not a merge patch: status.parents is a list that other controllers
	// write too, and the resourceVersion guards their entries.
	if err := r.Client.Status().Update(ctx, &route); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("update the status of GRPCRoute %s/%s: %w", route.Namespace, route.Name, err)
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
		conditions := previous[parentKey(p.Ref)]
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

func (l *cacheLookup) get(namespace, name string, obj client.Object) bool {
	err := l.client.Get(l.ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	if err != nil && !apierrors.IsNotFound(err) && l.err == nil {
		l.err = err
	}
	return err == nil
}

// SetupWithManager reconciles a route when it changes, and the routes of a namespace when
// a Service or ServiceImport there comes, goes or changes its ports.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	inNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list gatewayv1.GRPCRouteList
		if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, route := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&route)})
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
	return ctrl.NewControllerManagedBy(mgr).Named("grpcroute").
		For(&gatewayv1.GRPCRoute{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Service{}, inNamespace, builder.WithPredicates(portsChange)).
		Watches(&mcsv1beta1.ServiceImport{}, inNamespace, builder.WithPredicates(portsChange)).
		Complete(r)
}
