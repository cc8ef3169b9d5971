// Package servicepolicy reports whether each ServicePolicy of a member applies: its
// Accepted condition is False (reason TargetNotFound) while a target is neither a Service
// nor a ServiceImport of the policy's namespace. The control plane enforces the policies
// (translate: the RBAC HTTP filters of the targets' server listeners).
package servicepolicy

import (
	"context"
	"fmt"
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
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=meshfed.io,resources=servicepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=servicepolicies/status,verbs=get;update;patch

// Reconciler writes the ServicePolicies' Accepted condition.
type Reconciler struct {
	Client client.Client
}

// Reconcile checks one policy's targets.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p meshv1.ServicePolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var missing []string
	for _, ref := range p.Spec.TargetRefs {
		found, err := r.exists(ctx, p.Namespace, ref.Name)
		if err != nil {
			return reconcile.Result{}, err
		}
		if !found {
			missing = append(missing, ref.Kind+" "+ref.Name)
		}
	}
	base := p.DeepCopy()
	meta.SetStatusCondition(&p.Status.Conditions, Accepted(missing, p.Generation))
	p.Status.ObservedGeneration = p.Generation
	if apiequality.Semantic.DeepEqual(base.Status, p.Status) {
		return reconcile.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &p, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("patch the status of ServicePolicy %s/%s: %w", p.Namespace, p.Name, err)
	}
	return reconcile.Result{}, nil
}

// Accepted is the condition of a policy whose targets named in missing do not exist.
func Accepted(missing []string, generation int64) metav1.Condition {
	if len(missing) > 0 {
		return metav1.Condition{Type: meshv1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: meshv1.ReasonTargetNotFound, ObservedGeneration: generation,
			Message: fmt.Sprintf("no Service or ServiceImport of this namespace for %s: the policy applies to its other targets, and to these once they exist", strings.Join(missing, ", "))}
	}
	return metav1.Condition{Type: meshv1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: meshv1.ReasonAccepted, ObservedGeneration: generation,
		Message: "every target exists; the policy applies in this cluster (its servers enforce the authorization, its clients the traffic and faults)"}
}

// exists tells whether a Service or a ServiceImport named name is in namespace ns (one
// service to meshfed, whichever a policy names).
func (r *Reconciler) exists(ctx context.Context, ns, name string) (bool, error) {
	for _, obj := range []client.Object{&corev1.Service{}, &mcsv1beta1.ServiceImport{}} {
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
		if err == nil {
			return true, nil
		}
		if !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return false, nil
}

// SetupWithManager reconciles a policy when it changes, and the policies of a namespace
// when a Service or ServiceImport there comes or goes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	inNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list meshv1.ServicePolicyList
		if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, p := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
		}
		return reqs
	})
	comesOrGoes := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool { return false }}
	return ctrl.NewControllerManagedBy(mgr).Named("servicepolicy").
		For(&meshv1.ServicePolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Service{}, inNamespace, builder.WithPredicates(comesOrGoes)).
		Watches(&mcsv1beta1.ServiceImport{}, inNamespace, builder.WithPredicates(comesOrGoes)).
		Complete(r)
}
