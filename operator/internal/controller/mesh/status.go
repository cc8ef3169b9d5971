package mesh

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// patchStatus writes the conditions of the pass and Ready (reconcileErr, when set, makes
// it False with reason ReconcileFailed), and emits a Warning when Ready turns or stays
// False with a new message.
func (r *Reconciler) patchStatus(ctx context.Context, s *scope, reconcileErr error) error {
	m := s.mesh
	ready := readyCondition(m)
	if reconcileErr != nil && ready.Status == metav1.ConditionTrue {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, meshv1.ReasonReconcileFailed, reconcileErr.Error()
	}
	s.set(ready)
	for _, c := range s.conditions {
		c.ObservedGeneration = m.Generation
		meta.SetStatusCondition(&m.Status.Conditions, c)
	}
	m.Status.ObservedGeneration = m.Generation
	if apiequality.Semantic.DeepEqual(s.base.Status, m.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, m, client.MergeFrom(s.base)); err != nil {
		return fmt.Errorf("patch the Mesh status: %w", err)
	}
	if ready.Status == metav1.ConditionFalse {
		r.Recorder.Event(m, corev1.EventTypeWarning, ready.Reason, ready.Message)
	}
	return nil
}

// readyCondition is the Ready condition a Mesh's spec earns.
func readyCondition(m *meshv1.Mesh) metav1.Condition {
	if m.Name != meshv1.MeshSingletonName {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonInvalidSpec,
			Message: fmt.Sprintf("a cluster has one Mesh, named %q: recreate it under that name", meshv1.MeshSingletonName)}
	}
	if errs := meshv1.CheckMesh(m); len(errs) > 0 {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonInvalidSpec,
			Message: errs.ToAggregate().Error()}
	}
	return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReconciled,
		Message: fmt.Sprintf("cluster %s in network %s is a mesh member", m.Spec.ClusterName, m.Spec.Network)}
}
