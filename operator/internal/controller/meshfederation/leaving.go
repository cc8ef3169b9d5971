package meshfederation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/federation/clusters"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Members leave the federation when they leave its spec. What the hub wrote into them
// goes then, even when the member was unreachable or the hub was down at that moment: the
// status remembers every member with its kubeconfig Secret until it is cleaned.

// leavingRetry paces the cleanup of an unreachable leaving member. (The registry's
// connection change notifications come first when it returns, once it is registered; a
// member whose API server did not answer at all is not.)
const leavingRetry = 5 * time.Second

// errUnreachableForever means a leaving member can no longer be reached at all: its
// kubeconfig Secret is gone or holds a kubeconfig the hub refuses, or no status ever named
// it (it left a hub of an earlier version while that was down).
var errUnreachableForever = errors.New("the hub has no kubeconfig for it any more")

// leavingMembers lists the members not in the spec that may still hold what the
// federation wrote: those the status reports or lists as leaving, and those the registry
// holds. An entry keeps the Since it was first listed with.
func leavingMembers(fed *meshv1.MeshFederation, registered []string, now metav1.Time) []meshv1.LeavingMember {
	inSpec := map[string]bool{}
	for _, m := range fed.Spec.Members {
		inSpec[m.Name] = true
	}
	byName := map[string]meshv1.LeavingMember{}
	add := func(name string, ref *meshv1.SecretKeyRef, since metav1.Time, message string) {
		if inSpec[name] {
			return
		}
		lm, ok := byName[name]
		if !ok {
			lm = meshv1.LeavingMember{Name: name, Since: since, Message: message}
		}
		if lm.KubeconfigSecretRef == nil && ref != nil {
			lm.KubeconfigSecretRef = ref.DeepCopy()
		}
		byName[name] = lm
	}
	for _, lm := range fed.Status.LeavingMembers {
		add(lm.Name, lm.KubeconfigSecretRef, lm.Since, lm.Message)
	}
	for _, ms := range fed.Status.Members {
		add(ms.Name, ms.KubeconfigSecretRef, now, "")
	}
	for _, name := range registered {
		add(name, nil, now, "")
	}
	out := make([]meshv1.LeavingMember, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, byName[name])
	}
	return out
}

// reachLeaving returns a leaving member the hub can write to: the registry's, or one
// connected again from its Secret when the hub restarted since it left.
func (r *Reconciler) reachLeaving(ctx context.Context, s *scope, lm meshv1.LeavingMember) (*clusters.Member, error) {
	m, ok := r.registry.Lookup(s.owner, lm.Name)
	if !ok {
		if lm.KubeconfigSecretRef == nil {
			return nil, errUnreachableForever
		}
		kubeconfig, err := r.readKubeconfig(ctx, s.fed.Namespace, *lm.KubeconfigSecretRef)
		if errors.Is(err, errSecretNotFound) {
			return nil, fmt.Errorf("%w (Secret %s/%s is gone)", errUnreachableForever, s.fed.Namespace, lm.KubeconfigSecretRef.Name)
		} else if err != nil {
			return nil, err
		}
		if _, _, err := clusters.RestConfig(kubeconfig); err != nil {
			// Not a kubeconfig the hub accepts, so none it could have written with.
			return nil, fmt.Errorf("%w (Secret %s/%s: %w)", errUnreachableForever, s.fed.Namespace, lm.KubeconfigSecretRef.Name, err)
		}
		if m, err = r.registry.Connect(s.owner, lm.Name, kubeconfig); err != nil {
			return nil, fmt.Errorf("not reachable: %w", err) // its API server does not answer discovery
		}
	}
	if st := m.State(); !st.Connected {
		return m, fmt.Errorf("not reachable: %w", st.Err)
	}
	return m, nil
}

// cleanLeavingMembers deletes what the federation wrote into members that left its spec,
// and forgets them. One it cannot reach yet stays in status.leavingMembers, with an Event,
// until it answers.
func (r *Reconciler) cleanLeavingMembers(ctx context.Context, s *scope) error {
	previous := map[string]string{}
	for _, lm := range s.fed.Status.LeavingMembers {
		previous[lm.Name] = lm.Message
	}
	var errs []error
	for _, lm := range leavingMembers(s.fed, r.registry.Names(s.owner), metav1.Now()) {
		m, err := r.reachLeaving(ctx, s, lm)
		if err == nil {
			err = cleanupMember(ctx, m, s.label)
		}
		switch {
		case err == nil:
			r.Recorder.Eventf(s.fed, corev1.EventTypeNormal, meshv1.EventMemberRemoved, "removed member %s and everything meshfed wrote there", lm.Name)
		case errors.Is(err, errUnreachableForever):
			r.Recorder.Eventf(s.fed, corev1.EventTypeWarning, meshv1.EventMemberCleanupSkipped,
				"member %s left the federation, but %v: delete the objects labelled %s=%s there by hand", lm.Name, err, meshv1.LabelFederation, s.label)
		default:
			lm.Message = fmt.Sprintf("not cleaned yet, %v; the hub cleans it once it answers", err)
			if previous[lm.Name] != lm.Message {
				r.Recorder.Eventf(s.fed, corev1.EventTypeWarning, meshv1.EventMemberCleanupPending, "member %s left the federation: %s", lm.Name, lm.Message)
			}
			s.leaving = append(s.leaving, lm)
			s.requeue(leavingRetry)
			if m != nil && m.State().Connected {
				errs = append(errs, fmt.Errorf("clean removed member %s: %w", lm.Name, err))
			}
			continue
		}
		r.registry.Disconnect(s.owner, lm.Name)
		caExpiry.DeleteLabelValues(s.owner, lm.Name)
		tokenExpiry.DeleteLabelValues(s.owner, lm.Name)
	}
	return errors.Join(errs...)
}
