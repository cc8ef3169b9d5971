package meshfederation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// renewalSlack is how long after the start of an intermediate's renewal window the hub
// checks that cert-manager renewed it.
const renewalSlack = 5 * time.Second

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates;issuers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=get;list;watch;create;delete;deletecollection
// +kubebuilder:rbac:groups=cert-manager.io,resources=clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=meshfed-system,resources=secrets,verbs=delete

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
	// plans and requests are, per member, what to sign and what the member asks for.
	plans    map[string]trust.SigningPlan
	requests map[string]memberRequest
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
	generations := map[string]bool{}
	for _, ref := range inUse {
		for _, obj := range generationObjects(s, ref) {
			wanted[obj.GetName()] = true
			errs = append(errs, r.ensureOwned(ctx, s.fed, obj))
		}
		generations[strconv.Itoa(int(ref.Generation))] = true
		errs = append(errs, r.applySigning(ctx, s, load(ref)))
	}
	errs = append(errs, r.deleteUnwanted(ctx, s, wanted, generations))
	return errors.Join(errs...)
}

// generationObjects are the cert-manager objects of a bootstrapped root generation: its
// self-signed Issuer, root Certificate and CA Issuer. Members' intermediates are
// CertificateRequests, which applySigning keeps.
func generationObjects(s *scope, ref meshv1.RootRef) []client.Object {
	if ref.IssuerKind != trust.KindSelfSigned {
		return nil
	}
	selfSigned, root, ca := trust.Bootstrap(s.fed, ref.Generation, mcs.OwnedLabels(s.label))
	return []client.Object{selfSigned, root, ca}
}

// bootstrappedRoot is the root certificate a bootstrapped generation's CA Issuer signs
// with (from the Secret cert-manager wrote); nil for another issuer, or while there is no
// readable root yet.
func (r *Reconciler) bootstrappedRoot(ctx context.Context, s *scope, ref meshv1.RootRef) *x509.Certificate {
	if ref.IssuerKind != trust.KindSelfSigned {
		return nil
	}
	var secret corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.fed.Namespace, Name: trust.RootName(s.fed.Name, ref.Generation)}, &secret); err != nil {
		return nil
	}
	certs, err := trust.ParseCertificates(secret.Data[corev1.TLSCertKey])
	if err != nil || len(certs) == 0 {
		return nil
	}
	return certs[0]
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

// loadGeneration reads the members' intermediate CertificateRequests of one root
// generation, checks what the issuer signed, and plans, per member, which intermediate it
// gets and what to request next (see trust.PlanSigning).
func (r *Reconciler) loadGeneration(ctx context.Context, s *scope, ref meshv1.RootRef) (*generation, error) {
	g := &generation{ref: ref, cas: map[string]*trust.IntermediateCA{}, problems: map[string]memberTrustProblem{}, plans: map[string]trust.SigningPlan{}, requests: map[string]memberRequest{}}
	g.issuerReason, g.issuer = r.checkIssuer(ctx, trust.RootIssuer(s.fed, ref), s.fed.Namespace)
	var list cmapi.CertificateRequestList
	sel := client.MatchingLabels(mcs.OwnedLabels(s.label))
	sel[meshv1.LabelRootGeneration] = strconv.Itoa(int(ref.Generation))
	if err := r.Client.List(ctx, &list, client.InNamespace(s.fed.Namespace), sel); err != nil {
		return g, err
	}
	// Each member's requests, and the root the issuer signs with now: a root's key may be
	// replaced (cert-manager has issued a fresh Certificate twice under load, and its Secret
	// may be deleted), and an intermediate under the old root is then signed again.
	signings := map[string][]trust.Signing{}
	refused := map[string]*cmapi.CertificateRequest{}
	for i := range list.Items {
		cr := &list.Items[i]
		name := cr.Labels[meshv1.LabelMember]
		sg := readSigning(cr)
		if !sg.FailedSince.IsZero() {
			refused[name] = cr
		}
		if sg.Invalid != nil {
			r.Recorder.Eventf(s.fed, corev1.EventTypeWarning, meshv1.ReasonInvalidCertificate, "member %s: %v", name, sg.Invalid)
		}
		signings[name] = append(signings[name], sg)
		if sg.CA != nil && (g.root == nil || sg.CA.Root.NotBefore.After(g.root.NotBefore)) {
			g.root = sg.CA.Root
		}
	}
	if root := r.bootstrappedRoot(ctx, s, ref); root != nil {
		g.root = root
	}

	now := time.Now()
	renewBefore := trust.IntermediateRenewBefore(s.fed)
	for _, mv := range s.members {
		name := mv.spec.Name
		req := requestOf(mv)
		g.requests[name] = req
		plan := trust.PlanSigning(signings[name], req.sha, g.root, trust.IntermediateDuration(s.fed), renewBefore, now)
		g.plans[name] = plan
		if !plan.RenewAt.IsZero() {
			s.requeue(plan.RenewAt.Sub(now) + renewalSlack)
		}
		if plan.Current != nil {
			g.cas[name] = plan.Current.CA
		}
		if p, ok := signingProblem(s.fed, name, plan, req, refused[name], g.root, renewBefore, now); ok {
			g.problems[name] = p
		}
	}
	return g, nil
}

// memberRequest is a member's published intermediate CSR, checked.
type memberRequest struct {
	csr []byte
	sha string // empty unless the CSR passed CheckIntermediateRequest
	err error  // why the CSR cannot be signed
}

// requestOf reads the intermediate CSR a member publishes in its Mesh status. The member is
// not trusted to ask for more than its own intermediate: trust.CheckIntermediateRequest.
func requestOf(mv *memberView) memberRequest {
	if mv.mesh == nil {
		return memberRequest{}
	}
	rep := mv.reportedTrust()
	if rep.IntermediateRequest == "" {
		return memberRequest{err: errors.New("its Mesh publishes no intermediate CA request yet (status.trust.intermediateRequest): is its operator running?")}
	}
	csr := []byte(rep.IntermediateRequest)
	if _, err := trust.CheckIntermediateRequest(csr, mv.spec.Name, mv.mesh.Spec.TrustDomainOrDefault()); err != nil {
		return memberRequest{err: fmt.Errorf("its intermediate CA request (Mesh status.trust.intermediateRequest) is refused: %w", err)}
	}
	return memberRequest{csr: csr, sha: trust.RequestSHA256(csr)}
}

// readSigning reads one intermediate CertificateRequest: signed and checked, waiting, or
// refused by the issuer.
func readSigning(cr *cmapi.CertificateRequest) trust.Signing {
	sg := trust.Signing{Name: cr.Name, RequestSHA: cr.Annotations[meshv1.AnnotationRequestSHA256]}
	if cr.Spec.Duration != nil {
		sg.Duration = cr.Spec.Duration.Duration
	}
	where := fmt.Sprintf("CertificateRequest %s/%s", cr.Namespace, cr.Name)
	if len(cr.Status.Certificate) > 0 {
		sg.CA, sg.Invalid = trust.ParseIssued(where, cr.Status.Certificate, cr.Status.CA, cr.Spec.Request)
		if sg.Invalid != nil {
			sg.CA = nil
		}
		return sg
	}
	for _, c := range cr.Status.Conditions {
		refused := c.Status == cmmeta.ConditionTrue && (c.Type == cmapi.CertificateRequestConditionDenied || c.Type == cmapi.CertificateRequestConditionInvalidRequest)
		failed := c.Type == cmapi.CertificateRequestConditionReady && c.Reason == cmapi.CertificateRequestReasonFailed
		if refused || failed {
			sg.FailedSince = cr.CreationTimestamp.Time
			if c.LastTransitionTime != nil {
				sg.FailedSince = c.LastTransitionTime.Time
			}
		}
	}
	return sg
}

// signingProblem says why a member has no usable intermediate, or that it expires unrenewed.
func signingProblem(fed *meshv1.MeshFederation, name string, plan trust.SigningPlan, req memberRequest, refused *cmapi.CertificateRequest, root *x509.Certificate, renewBefore time.Duration, now time.Time) (memberTrustProblem, bool) {
	why := req.err
	if why == nil && refused != nil {
		why = fmt.Errorf("the root issuer refused CertificateRequest %s/%s%s", refused.Namespace, refused.Name, requestState(refused))
	}
	if plan.Current == nil {
		if why == nil {
			why = fmt.Errorf("waiting for the root issuer to sign its intermediate (CertificateRequests %s/%s-*)", fed.Namespace, trust.IntermediateName(fed.Name, name, 0))
		}
		return memberTrustProblem{meshv1.ReasonIntermediatePending, why}, true
	}
	if !plan.Current.CA.ChainsTo(root) {
		why := fmt.Errorf("its intermediate chains to root %.16s, but the root issuer now signs with %.16s: waiting for it to sign the intermediate again",
			trust.Fingerprint(plan.Current.CA.Root), trust.Fingerprint(root))
		return memberTrustProblem{meshv1.ReasonIntermediatePending, why}, true
	}
	if left := plan.Current.CA.NotAfter().Sub(now); left < renewBefore {
		msg := fmt.Sprintf("the intermediate of %s expires in %s and the root issuer has not signed its renewal", name, left.Round(time.Second))
		if why != nil {
			msg += ": " + why.Error()
		}
		return memberTrustProblem{meshv1.ReasonIntermediateExpiring, errors.New(msg)}, true
	}
	return memberTrustProblem{}, false
}

// requestState quotes a CertificateRequest's failing condition, for messages.
func requestState(cr *cmapi.CertificateRequest) string {
	for _, c := range cr.Status.Conditions {
		if c.Status == cmmeta.ConditionTrue || c.Type == cmapi.CertificateRequestConditionReady {
			return " (" + c.Reason + ": " + c.Message + ")"
		}
	}
	return ""
}

// applySigning carries out a generation's signing plans: it asks the root issuer to sign
// members' current CSRs and deletes the requests no longer needed. Members whose exports
// are unknown (not synced since the hub started) are left as they are.
func (r *Reconciler) applySigning(ctx context.Context, s *scope, g *generation) error {
	var errs []error
	for _, mv := range s.members {
		name := mv.spec.Name
		if mv.mesh == nil {
			continue
		}
		plan := g.plans[name]
		for _, n := range plan.Delete {
			cr := &cmapi.CertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: s.fed.Namespace, Name: n}}
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, cr)))
		}
		if plan.Create {
			req := g.requests[name]
			cr := trust.IntermediateRequest(s.fed, name, req.sha, req.csr, g.ref, mcs.OwnedLabels(s.label))
			if err := controllerutil.SetControllerReference(s.fed, cr, r.Client.Scheme()); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := r.Client.Create(ctx, cr); err != nil {
				errs = append(errs, fmt.Errorf("request the intermediate of %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}
