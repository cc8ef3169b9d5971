package mesh

import (
	"context"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/operator/internal/xds"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// reconcileControlPlane reports the xDS server in the Mesh status.
func (r *Reconciler) reconcileControlPlane(ctx context.Context, s *scope) (metav1.Condition, error) {
	m := s.mesh
	st := r.XDS.Status()
	proxies, err := r.connectedProxies(ctx, st)
	if err != nil {
		return metav1.Condition{}, err
	}
	m.Status.ConnectedProxies, m.Status.SnapshotVersion = int32(proxies), st.Version
	cond := metav1.Condition{Type: meshv1.ConditionControlPlaneReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonServing,
		Message: fmt.Sprintf("serving xDS configuration %s on port %d", st.Version, m.Spec.XDSPortOrDefault())}
	switch {
	case st.Err != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonConfigNotServed, st.Err.Error()
		if st.Version != "" {
			cond.Message += fmt.Sprintf(" (proxies keep configuration %s)", st.Version)
		}
	case st.Version == "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonPending, "no xDS configuration built yet"
	}
	return cond, nil
}

// connectedProxies counts the proxies of every replica from their census Leases, or this
// replica's when there is no census.
func (r *Reconciler) connectedProxies(ctx context.Context, st xds.Status) (int, error) {
	if !r.Census {
		return st.Proxies, nil
	}
	var leases coordinationv1.LeaseList
	if err := r.Client.List(ctx, &leases, client.InNamespace(r.OperatorNamespace), client.HasLabels{xds.CensusLabel}); err != nil {
		return 0, fmt.Errorf("list the operator replicas' census Leases: %w", err)
	}
	return xds.CountProxies(leases.Items, time.Now()), nil
}

// statusEvents turns xDS server changes (a new snapshot, proxies coming and going) into
// Mesh reconciles, at most one a second.
func statusEvents(ctx context.Context, kick <-chan struct{}, out chan<- event.GenericEvent) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		m := &meshv1.Mesh{}
		m.Name = meshv1.MeshSingletonName
		select {
		case out <- event.GenericEvent{Object: m}:
		case <-ctx.Done():
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
