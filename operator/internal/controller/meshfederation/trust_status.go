package meshfederation

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

var caExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_ca_cert_expiry_seconds",
	Help: "Unix time at which a member's intermediate CA expires.",
}, []string{"federation", "member"})

var rotationStage = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_trust_rotation_stage",
	Help: "Stage of the federation's root rotation: 0 none, 1 AddRoot, 2 Reissue, 3 DropRoot.",
}, []string{"federation"})

var rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meshfed_trust_rotations_total",
	Help: "Root rotations that ended, by result (completed, canceled, aborted).",
}, []string{"federation", "result"})

func init() { crmetrics.Registry.MustRegister(caExpiry, rotationStage, rotations) }

// reportedTrust is what the member's operator reports holding of meshfed-cacerts.
func (mv *memberView) reportedTrust() meshv1.MeshTrustStatus {
	if mv.mesh == nil || mv.mesh.Status.Trust == nil {
		return meshv1.MeshTrustStatus{}
	}
	return *mv.mesh.Status.Trust
}

// trustStatus reports the roots, the rotation and the TrustReady condition.
func (r *Reconciler) trustStatus(s *scope) metav1.Condition {
	fed := s.fed
	t := &s.trust
	root := t.root
	fed.Status.Trust = &meshv1.TrustStatus{TrustedRoots: t.bundle.Fingerprints(), BundleVersion: t.bundle.Version(),
		Root: &root, Rotation: t.rotation, LastGeneration: t.lastGeneration}
	if t.rootCert != nil {
		fed.Status.Trust.RootFingerprint = trust.Fingerprint(t.rootCert)
		fed.Status.Trust.RootNotAfter = &metav1.Time{Time: t.rootCert.NotAfter}
	}
	cond := metav1.Condition{Type: meshv1.ConditionTrustReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReconciled,
		Message: fmt.Sprintf("every member holds an intermediate CA under root %.16s", fed.Status.Trust.RootFingerprint), ObservedGeneration: fed.Generation}
	var msgs []string
	reason := ""
	for _, mv := range s.members {
		if p, ok := t.problems[mv.spec.Name]; ok {
			msgs = append(msgs, fmt.Sprintf("%s: %v", mv.spec.Name, p.err))
			if reason == "" {
				reason = p.reason
			}
		}
	}
	if t.issuer != nil {
		msgs = append([]string{t.issuer.Error()}, msgs...)
		reason = t.issuerReason
	}
	if len(msgs) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reason, strings.Join(msgs, "; ")
	}
	return cond
}

// rotationCondition describes the rotation in progress (stage and members' progress), or
// the last one.
func (r *Reconciler) rotationCondition(s *scope) metav1.Condition {
	t := &s.trust
	fed := s.fed
	cond := metav1.Condition{Type: meshv1.ConditionRootRotation, Status: metav1.ConditionFalse, Reason: meshv1.ReasonNoRotation,
		Message: "no root rotation in progress: change spec.trust.issuerRef or spec.trust.rotation.revision to start one", ObservedGeneration: fed.Generation}
	if old := meta.FindStatusCondition(fed.Status.Conditions, meshv1.ConditionRootRotation); old != nil && old.Status == metav1.ConditionFalse {
		cond.Reason, cond.Message = old.Reason, old.Message
	}
	if t.transition.Reason != "" && t.rotation == nil {
		cond.Reason, cond.Message = t.transition.Reason, t.transition.Message
	}
	if t.transition.Reason != "" {
		r.Recorder.Event(fed, corev1.EventTypeNormal, t.transition.Reason, t.transition.Message)
	}
	rot := t.rotation
	if rot == nil {
		return cond
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, rot.Stage
	direction := "rotating"
	if rot.Reversed {
		direction = "aborted, rotating back"
	}
	msg := fmt.Sprintf("%s from %s to %s, stage %s (since %s)", direction, trust.Describe(t.root), trust.Describe(rot.To), rot.Stage, rot.StageTime.UTC().Format(time.RFC3339))
	switch {
	case fed.Spec.Trust.Rotation.Paused:
		cond.Reason = meshv1.ReasonRotationPaused
		msg += ": paused (set spec.trust.rotation.paused to false to resume)"
	case len(t.waiting) > 0:
		msg += ": waiting for " + strings.Join(t.waiting, "; ")
	case rot.DoneTime != nil:
		msg += fmt.Sprintf(": every member is done; the next stage begins after the %s propagation delay", trust.PropagationDelay(fed))
	}
	if want := trust.DesiredRoot(fed); !trust.SameSource(want, rot.To) && !trust.SameSource(want, t.root) {
		msg += fmt.Sprintf("; %s was asked for and starts once this rotation ends", trust.Describe(want))
	}
	cond.Message = msg
	return cond
}
