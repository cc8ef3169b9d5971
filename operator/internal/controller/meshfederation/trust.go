package meshfederation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// renewalSlack is how long after the start of an intermediate's renewal window the hub
// checks that cert-manager renewed it.
const renewalSlack = 5 * time.Second

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
				waiting = append(waiting, fmt.Sprintf("%s: %d of %d workload certificates re-issued (waiting for %s)", name, rep.WorkloadCertificatesCurrent, rep.WorkloadCertificates, strings.Join(rep.Pending, ", ")))
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
