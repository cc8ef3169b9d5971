package meshfederation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// renewalSlack is how long after the start of an intermediate's renewal window the hub
// checks that cert-manager renewed it.
const renewalSlack = 5 * time.Second

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

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates;issuers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=delete

// trustView is what one reconcile knows of the federation's certificates.
type trustView struct {
	// issuer says why a root issuer in use cannot sign (nil when it can).
	issuer       error
	issuerReason string
	// root and rotation are the rotation state after this pass.
	root           meshv1.RootRef
	rotation       *meshv1.RotationStatus
	lastGeneration int32
	// transition is the rotation step this pass took; waiting lists what a rotation
	// stage still waits for, per member.
	transition trust.Transition
	waiting    []string
	bundle     trust.Bundle
	// rootCert is the root of the generation members issue with.
	rootCert *x509.Certificate
	// cas are the intermediates members get.
	cas map[string]*trust.IntermediateCA
	// problems says, per member, why it has no usable intermediate (or that it expires).
	problems map[string]memberTrustProblem
}

type memberTrustProblem struct {
	reason string
	err    error
}

// generation is what the hub holds of one root generation: its members' intermediates.
type generation struct {
	ref          meshv1.RootRef
	issuer       error
	issuerReason string
	cas          map[string]*trust.IntermediateCA
	problems     map[string]memberTrustProblem
	root         *x509.Certificate
}

// reconcileTrust keeps the root generations in use (bootstrapped roots and one
// intermediate Certificate per member each), moves a root rotation along, and decides
// what every member gets. A broken issuer or certificate is reported; members whose
// intermediates are fine keep them.
func (r *Reconciler) reconcileTrust(ctx context.Context, s *scope) error {
	t := &s.trust
	*t = trustView{cas: map[string]*trust.IntermediateCA{}, problems: map[string]memberTrustProblem{}}
	desired := trust.DesiredRoot(s.fed)
	t.root = desired
	if prev := s.fed.Status.Trust; prev != nil && prev.Root != nil {
		t.root, t.rotation, t.lastGeneration = *prev.Root, prev.Rotation.DeepCopy(), prev.LastGeneration
	}
	var errs []error
	gens := map[int32]*generation{}
	load := func(ref meshv1.RootRef) *generation {
		if g, ok := gens[ref.Generation]; ok {
			return g
		}
		g, err := r.loadGeneration(ctx, s, ref)
		errs = append(errs, err)
		gens[ref.Generation] = g
		return g
	}

	// Move the rotation along on what the members report for the current stage.
	before := trust.PlanFor(t.root, t.rotation)
	bundle := bundleOf(before, load)
	rotBefore := t.rotation
	done := false
	if rotBefore != nil {
		t.waiting = stageWaiting(s, rotBefore.Stage, bundle.Version(), load(before.Serve), load(rotBefore.To))
		done = len(t.waiting) == 0
	}
	var wait time.Duration
	t.root, t.rotation, t.transition, wait = trust.Advance(t.root, t.rotation, trust.Step{Desired: desired, LastGeneration: t.lastGeneration,
		Paused: s.fed.Spec.Trust.Rotation.Paused, Done: done, Delay: trust.PropagationDelay(s.fed), Now: time.Now()})
	if wait > 0 {
		s.requeue(wait)
	}
	if t.transition.Reason != "" {
		// A stage may need nothing new from the members (an abort keeps what they hold),
		// so no member event would start the next pass.
		s.requeue(0)
	}
	t.lastGeneration = max(t.lastGeneration, t.root.Generation)
	if t.rotation != nil {
		t.lastGeneration = max(t.lastGeneration, t.rotation.To.Generation)
	}
	if t.rotation != nil && (rotBefore == nil || t.rotation.Stage != rotBefore.Stage) {
		t.waiting = nil // a new stage: its progress shows from the next pass on
	}

	// What the members get in the new state.
	plan := trust.PlanFor(t.root, t.rotation)
	t.bundle = bundleOf(plan, load)
	serve := load(plan.Serve)
	t.cas, t.problems, t.rootCert = serve.cas, serve.problems, serve.root
	for name, ca := range t.cas {
		caExpiry.WithLabelValues(s.owner, name).Set(float64(ca.NotAfter().Unix()))
	}
	rotationStage.WithLabelValues(s.owner).Set(trust.StageNumber(t.rotation))
	switch t.transition.Reason {
	case meshv1.ReasonRotationCompleted:
		rotations.WithLabelValues(s.owner, "completed").Inc()
	case meshv1.ReasonRotationCanceled:
		rotations.WithLabelValues(s.owner, "canceled").Inc()
	case meshv1.ReasonRotationAborted:
		rotations.WithLabelValues(s.owner, "aborted").Inc()
	}
	for _, ref := range plan.Trust {
		if g := load(ref); g.issuer != nil && t.issuer == nil {
			t.issuer, t.issuerReason = g.issuer, g.issuerReason
		}
	}
	if g := load(t.root); g.root != nil {
		t.root.Fingerprint = trust.Fingerprint(g.root)
	}
	if t.rotation != nil {
		if g := load(t.rotation.To); g.root != nil {
			t.rotation.To.Fingerprint = trust.Fingerprint(g.root)
		}
	}

	// The generations in use keep their objects; the others go.
	inUse := []meshv1.RootRef{t.root}
	if t.rotation != nil {
		inUse = append(inUse, t.rotation.To)
	}
	wanted := map[string]bool{}
	for _, ref := range inUse {
		for _, obj := range generationObjects(s, ref) {
			wanted[obj.GetName()] = true
			errs = append(errs, r.ensureOwned(ctx, s.fed, obj))
		}
	}
	errs = append(errs, r.deleteUnwanted(ctx, s, wanted))
	return errors.Join(errs...)
}

// generationObjects are the cert-manager objects of a root generation: for a bootstrapped
// root its self-signed Issuer, root Certificate and CA Issuer, then one intermediate
// Certificate per member.
func generationObjects(s *scope, ref meshv1.RootRef) []client.Object {
	labels := mcs.OwnedLabels(s.label)
	var objs []client.Object
	if ref.IssuerKind == trust.KindSelfSigned {
		selfSigned, root, ca := trust.Bootstrap(s.fed, ref.Generation, labels)
		objs = append(objs, selfSigned, root, ca)
	}
	for _, mv := range s.members {
		objs = append(objs, trust.Intermediate(s.fed, mv.spec.Name, ref, labels))
	}
	return objs
}

// bundleOf is the trust bundle of a plan: the roots of its trusted generations.
func bundleOf(p trust.Plan, load func(meshv1.RootRef) *generation) trust.Bundle {
	var b trust.Bundle
	for _, ref := range p.Trust {
		for _, ca := range load(ref).cas {
			b.Add(ca.Root)
		}
	}
	return b
}

// stageWaiting lists, per member, what a rotation stage still waits for; empty means
// every member reports the stage done.
func stageWaiting(s *scope, stage, bundleVersion string, serving, next *generation) []string {
	var waiting []string
	for _, mv := range s.members {
		name := mv.spec.Name
		rep := mv.reportedTrust()
		switch stage {
		case meshv1.StageAddRoot, meshv1.StageDropRoot:
			if stage == meshv1.StageAddRoot && next.cas[name] == nil {
				waiting = append(waiting, name+": its intermediate under the new root is not issued yet")
			} else if rep.BundleVersion != bundleVersion {
				waiting = append(waiting, fmt.Sprintf("%s: reports trust bundle %q, waiting for %q", name, rep.BundleVersion, bundleVersion))
			}
		case meshv1.StageReissue:
			ca := serving.cas[name]
			switch {
			case ca == nil:
				waiting = append(waiting, name+": its intermediate under the new root is not issued yet")
			case rep.IntermediateFingerprint != trust.Fingerprint(ca.Chain[0]):
				waiting = append(waiting, name+": has not loaded its new intermediate yet")
			case rep.WorkloadCertificatesCurrent < rep.WorkloadCertificates:
				waiting = append(waiting, fmt.Sprintf("%s: %d of %d workload certificates re-issued", name, rep.WorkloadCertificatesCurrent, rep.WorkloadCertificates))
			}
		}
	}
	return waiting
}

// loadGeneration reads what cert-manager issued for one root generation and checks it.
func (r *Reconciler) loadGeneration(ctx context.Context, s *scope, ref meshv1.RootRef) (*generation, error) {
	g := &generation{ref: ref, cas: map[string]*trust.IntermediateCA{}, problems: map[string]memberTrustProblem{}}
	labels := mcs.OwnedLabels(s.label)
	var errs []error
	g.issuerReason, g.issuer = r.checkIssuer(ctx, trust.RootIssuer(s.fed, ref), s.fed.Namespace)

	renewBefore := trust.DefaultIntermediateRenewBefore
	if rb := s.fed.Spec.Trust.IntermediateRenewBefore; rb != nil {
		renewBefore = rb.Duration
	}
	for _, mv := range s.members {
		name := mv.spec.Name
		cert := trust.Intermediate(s.fed, name, ref, labels)
		var secret corev1.Secret
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, &secret)
		if apierrors.IsNotFound(err) {
			g.problems[name] = memberTrustProblem{meshv1.ReasonIntermediatePending,
				fmt.Errorf("waiting for cert-manager to issue Certificate %s/%s%s", cert.Namespace, cert.Name, r.certificateState(ctx, cert))}
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		ca, err := trust.ParseIntermediate(&secret)
		if err != nil {
			g.problems[name] = memberTrustProblem{meshv1.ReasonInvalidCertificate, err}
			continue
		}
		g.cas[name] = ca
		if g.root == nil || ca.Root.NotBefore.After(g.root.NotBefore) {
			g.root = ca.Root
		}
		// cert-manager renews when renewBefore is left; a pass then checks it did.
		if left := time.Until(ca.NotAfter()); left < renewBefore {
			g.problems[name] = memberTrustProblem{meshv1.ReasonIntermediateExpiring,
				fmt.Errorf("the intermediate of %s expires in %s and cert-manager has not renewed it: see the Events of Certificate %s/%s", name, left.Round(time.Second), cert.Namespace, cert.Name)}
		} else {
			s.requeue(left - renewBefore + renewalSlack)
		}
	}
	return g, errors.Join(errs...)
}

// deleteUnwanted removes the federation's CA Certificates (with their Secrets) and CA
// Issuers that no generation in use needs: intermediates of members that left and the
// objects of a root rotated away from.
func (r *Reconciler) deleteUnwanted(ctx context.Context, s *scope, wanted map[string]bool) error {
	labels := client.MatchingLabels(mcs.OwnedLabels(s.label))
	var errs []error
	var certs cmapi.CertificateList
	errs = append(errs, r.Client.List(ctx, &certs, client.InNamespace(s.fed.Namespace), labels))
	for i := range certs.Items {
		c := &certs.Items[i]
		if c.Spec.IsCA && !wanted[c.Name] {
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, c)))
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Spec.SecretName}}
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, secret)))
		}
	}
	var issuers cmapi.IssuerList
	errs = append(errs, r.Client.List(ctx, &issuers, client.InNamespace(s.fed.Namespace), labels))
	for i := range issuers.Items {
		if is := &issuers.Items[i]; !wanted[is.Name] {
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, is)))
		}
	}
	return errors.Join(errs...)
}

// deleteTrust removes the federation's Certificates and then their Secrets from the hub,
// so that no CA key outlives the federation (cert-manager leaves Secrets behind).
// Certificates go first: a Certificate whose Secret vanished would be issued again.
func (r *Reconciler) deleteTrust(ctx context.Context, s *scope) error {
	var certs cmapi.CertificateList
	if err := r.Client.List(ctx, &certs, client.InNamespace(s.fed.Namespace), client.MatchingLabels(mcs.OwnedLabels(s.label))); err != nil {
		return err
	}
	var errs []error
	for i := range certs.Items {
		c := &certs.Items[i]
		errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, c)))
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Spec.SecretName}}
		errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, secret)))
	}
	caExpiry.DeletePartialMatch(prometheus.Labels{"federation": s.owner})
	rotationStage.DeleteLabelValues(s.owner)
	rotations.DeletePartialMatch(prometheus.Labels{"federation": s.owner})
	return errors.Join(errs...)
}

// ensureOwned creates obj, owned by the federation, or brings its spec and labels back.
func (r *Reconciler) ensureOwned(ctx context.Context, fed *meshv1.MeshFederation, obj client.Object) error {
	desired := obj.DeepCopyObject().(client.Object)
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
		switch o := obj.(type) {
		case *cmapi.Certificate:
			o.Spec = desired.(*cmapi.Certificate).Spec
		case *cmapi.Issuer:
			o.Spec = desired.(*cmapi.Issuer).Spec
		}
		l := obj.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		maps.Copy(l, desired.GetLabels())
		obj.SetLabels(l)
		return controllerutil.SetControllerReference(fed, obj, r.Client.Scheme())
	})
	if err != nil {
		return fmt.Errorf("%T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// checkIssuer tells whether the root issuer exists and is ready.
func (r *Reconciler) checkIssuer(ctx context.Context, ref cmmeta.IssuerReference, namespace string) (string, error) {
	var conds []cmapi.IssuerCondition
	where := fmt.Sprintf("Issuer %s/%s", namespace, ref.Name)
	switch ref.Kind {
	case cmapi.ClusterIssuerKind:
		where = "ClusterIssuer " + ref.Name
		var ci cmapi.ClusterIssuer
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ref.Name}, &ci); err != nil {
			return issuerGetError(where, err)
		}
		conds = ci.Status.Conditions
	default:
		var is cmapi.Issuer
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &is); err != nil {
			return issuerGetError(where, err)
		}
		conds = is.Status.Conditions
	}
	for _, c := range conds {
		if c.Type == cmapi.IssuerConditionReady {
			if c.Status == cmmeta.ConditionTrue {
				return "", nil
			}
			return meshv1.ReasonIssuerNotReady, fmt.Errorf("cert-manager %s is not ready: %s", where, c.Message)
		}
	}
	return meshv1.ReasonIssuerNotReady, fmt.Errorf("cert-manager %s has not reported Ready yet", where)
}

func issuerGetError(where string, err error) (string, error) {
	if apierrors.IsNotFound(err) {
		return meshv1.ReasonIssuerNotFound, fmt.Errorf("cert-manager %s not found: create it (a CA issuer that can sign CA certificates) or fix spec.trust.issuerRef", where)
	}
	return meshv1.ReasonIssuerNotReady, fmt.Errorf("read cert-manager %s: %w", where, err)
}

// certificateState quotes a Certificate's Ready condition, for messages.
func (r *Reconciler) certificateState(ctx context.Context, cert *cmapi.Certificate) string {
	var c cmapi.Certificate
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(cert), &c); err != nil {
		return ""
	}
	for _, cond := range c.Status.Conditions {
		if cond.Type == cmapi.CertificateConditionReady && cond.Status != cmmeta.ConditionTrue {
			return " (" + cond.Reason + ": " + cond.Message + ")"
		}
	}
	return ""
}

// syncTrust writes the member's meshfed-cacerts: its intermediate, the chain and the trust
// bundle. A member without a usable intermediate keeps what it has.
func (r *Reconciler) syncTrust(ctx context.Context, s *scope, mv *memberView, c client.Client) error {
	ca := s.trust.cas[mv.spec.Name]
	if ca == nil {
		return nil
	}
	version := s.trust.bundle.Version()
	if rep := mv.reportedTrust(); rep.BundleVersion == version && rep.IntermediateFingerprint == trust.Fingerprint(ca.Chain[0]) {
		return nil // the member's operator reports holding exactly this
	}
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: mv.member.Namespace, Name: trust.CACertsSecret, Labels: mcs.OwnedLabels(s.label),
			Annotations: map[string]string{meshv1.AnnotationTrustBundleVersion: version}},
		Type: corev1.SecretTypeTLS,
		Data: trust.MemberSecretData(ca, &s.trust.bundle),
	}
	var have corev1.Secret
	err := mv.member.APIReader().Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Create(ctx, want); err != nil {
			return fmt.Errorf("create Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("read Secret %s/%s: %w", want.Namespace, want.Name, err)
	case have.Labels[meshv1.LabelFederation] != s.label:
		return fmt.Errorf("Secret %s/%s exists and this federation did not write it: delete it so the member gets its intermediate CA", want.Namespace, want.Name)
	case !apiequality.Semantic.DeepEqual(have.Data, want.Data) || have.Annotations[meshv1.AnnotationTrustBundleVersion] != version:
		have.Data, have.Annotations = want.Data, want.Annotations
		if err := c.Update(ctx, &have); err != nil {
			return fmt.Errorf("update Secret %s/%s: %w", want.Namespace, want.Name, err)
		}
	}
	return nil
}

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
