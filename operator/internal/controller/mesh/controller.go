// Package mesh reconciles a member cluster's Mesh: it checks the spec and reports whether
// the member side of the mesh accepts it.
package mesh

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/webhook"
)

// ReasonInvalidSpec marks a Mesh the checks refuse (possible when the webhook is not
// installed); the message lists what to fix.
const ReasonInvalidSpec = "InvalidSpec"

// Reconciler reports the state of the member's Mesh.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups=meshfed.io,resources=meshes,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshes/status,verbs=get;update;patch

// SetupWithManager watches Meshes; status writes do not trigger a new pass.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1.Mesh{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// Reconcile sets the Mesh's Ready condition and observed generation.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m meshv1.Mesh
	if err := r.Client.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := m.DeepCopy()
	ready := Ready(&m)
	ready.ObservedGeneration = m.Generation
	meta.SetStatusCondition(&m.Status.Conditions, ready)
	m.Status.ObservedGeneration = m.Generation
	if apiequality.Semantic.DeepEqual(base.Status, m.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &m, client.MergeFrom(base)); err != nil {
		return ctrl.Result{}, err
	}
	if ready.Status == metav1.ConditionFalse {
		r.Recorder.Event(&m, corev1.EventTypeWarning, ready.Reason, ready.Message)
	}
	return ctrl.Result{}, nil
}

// Ready is the Ready condition a Mesh's spec earns.
func Ready(m *meshv1.Mesh) metav1.Condition {
	if m.Name != meshv1.MeshSingletonName {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidSpec,
			Message: fmt.Sprintf("a cluster has one Mesh, named %q: recreate it under that name", meshv1.MeshSingletonName)}
	}
	if errs := webhook.CheckMesh(m); len(errs) > 0 {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidSpec,
			Message: errs.ToAggregate().Error()}
	}
	return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReconciled,
		Message: fmt.Sprintf("cluster %s in network %s is a mesh member", m.Spec.ClusterName, m.Spec.Network)}
}
