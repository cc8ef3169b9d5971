package meshfederation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/mcs"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// updateStatus writes what the reconcile learned into the federation's status and emits an
// Event when a member's connection changes.
func (r *Reconciler) updateStatus(s *scope, reconcileErr error) {
	fed := s.fed
	previous := map[string]meshv1.MemberStatus{}
	for _, ms := range fed.Status.Members {
		previous[ms.Name] = ms
	}
	now := metav1.NewTime(time.Now())
	fed.Status.Members = nil
	fed.Status.ConnectedMembers = 0
	var problems []string
	for _, mv := range s.members {
		ms := meshv1.MemberStatus{Name: mv.spec.Name, Connected: mv.usable, Imported: mv.imported,
			LastSyncTime: previous[mv.spec.Name].LastSyncTime, KubeconfigSecretRef: mv.spec.KubeconfigSecretRef.DeepCopy()}
		if rep := mv.reportedTrust(); rep.BundleVersion != "" {
			ms.TrustBundleVersion, ms.IntermediateFingerprint = rep.BundleVersion, rep.IntermediateFingerprint
		} else {
			ms.TrustBundleVersion, ms.IntermediateFingerprint = previous[mv.spec.Name].TrustBundleVersion, previous[mv.spec.Name].IntermediateFingerprint
		}
		for _, e := range mv.exports {
			if mcs.Validate(e.export, s.exportPolicy).Valid {
				ms.Exported++
			}
		}
		if mv.synced {
			ms.LastSyncTime = &now
		}
		switch {
		case mv.err != nil:
			ms.Message = mv.err.Error()
		case mv.syncErr != nil:
			ms.Message = "sync failed: " + mv.syncErr.Error()
		case len(mv.pendingNamespaces) > 0:
			ms.Message = fmt.Sprintf("imports wait for namespaces that do not exist in this member: %s", strings.Join(mv.pendingNamespaces, ", "))
		}
		if mv.withdrawn {
			ms.Message += fmt.Sprintf(" (endpoints withdrawn after the %s grace period)", r.GracePeriod)
		}
		if ms.Connected {
			fed.Status.ConnectedMembers++
		} else {
			problems = append(problems, fmt.Sprintf("%s: %s", mv.spec.Name, ms.Message))
		}
		if prev, ok := previous[mv.spec.Name]; ok && prev.Connected != ms.Connected {
			if ms.Connected {
				r.Recorder.Eventf(fed, corev1.EventTypeNormal, meshv1.EventMemberConnected, "member %s is connected", mv.spec.Name)
			} else {
				r.Recorder.Eventf(fed, corev1.EventTypeWarning, meshv1.EventMemberDisconnected, "member %s: %s", mv.spec.Name, ms.Message)
			}
		} else if !ok && !ms.Connected && mv.err != nil && mv.member == nil {
			r.Recorder.Eventf(fed, corev1.EventTypeWarning, meshv1.EventMemberConfigInvalid, "member %s: %s", mv.spec.Name, ms.Message)
		}
		fed.Status.Members = append(fed.Status.Members, ms)
	}
	fed.Status.LeavingMembers = s.leaving
	fed.Status.ObservedGeneration = fed.Generation
	cond := metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReconciled,
		Message: fmt.Sprintf("%d members connected and synced", fed.Status.ConnectedMembers), ObservedGeneration: fed.Generation}
	switch {
	case len(problems) > 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonMembersNotConnected, strings.Join(problems, "; ")
	case reconcileErr != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, meshv1.ReasonSyncFailed, reconcileErr.Error()
	}
	meta.SetStatusCondition(&fed.Status.Conditions, cond)

	trustCond := r.trustStatus(s)
	if old := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionTrustReady); trustCond.Status == metav1.ConditionFalse &&
		(old == nil || old.Status != trustCond.Status || old.Reason != trustCond.Reason) {
		r.Recorder.Event(fed, corev1.EventTypeWarning, trustCond.Reason, trustCond.Message)
	}
	meta.SetStatusCondition(&fed.Status.Conditions, trustCond)
	meta.SetStatusCondition(&fed.Status.Conditions, r.rotationCondition(s))
}

// reconcileDelete cleans every member and lets the MeshFederation go. A member that cannot
// be reached is reported in an Event and not waited for, so a dead cluster never blocks
// deletion.
func (r *Reconciler) reconcileDelete(ctx context.Context, s *scope) (ctrl.Result, error) {
	// A hub that restarted has not connected the members yet: connect them and give them
	// until the grace period to sync before calling any of them unreachable.
	r.connectMembers(ctx, s)
	for _, lm := range leavingMembers(s.fed, nil, metav1.Now()) {
		_, _ = r.reachLeaving(ctx, s, lm) // registers it; the loop below reports what fails
	}
	for _, name := range r.registry.Names(s.owner) {
		m, ok := r.registry.Lookup(s.owner, name)
		if !ok {
			continue
		}
		if st := m.State(); (!st.Connected || !st.Synced) && time.Since(r.started) < r.GracePeriod {
			return ctrl.Result{RequeueAfter: 500 * time.Millisecond}, nil
		}
	}
	var errs []error
	for _, name := range r.registry.Names(s.owner) {
		m, err := r.registry.Get(s.owner, name)
		if err != nil {
			r.Recorder.Eventf(s.fed, corev1.EventTypeWarning, meshv1.EventMemberCleanupSkipped,
				"member %s is unreachable; delete the objects labelled %s=%s there by hand", name, meshv1.LabelFederation, s.label)
		} else if err := cleanupMember(ctx, m, s.label); err != nil {
			errs = append(errs, fmt.Errorf("clean member %s: %w", name, err))
			continue
		}
		r.registry.Disconnect(s.owner, name)
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteTrust(ctx, s); err != nil {
		return ctrl.Result{}, fmt.Errorf("delete the federation's certificates: %w", err)
	}
	if controllerutil.RemoveFinalizer(s.fed, meshv1.FinalizerFederation) {
		return ctrl.Result{}, r.Client.Update(ctx, s.fed)
	}
	return ctrl.Result{}, nil
}
