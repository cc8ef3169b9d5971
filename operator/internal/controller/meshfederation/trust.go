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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/mcs"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Reasons of the MeshFederation's TrustReady condition.
const (
	ReasonIssuerNotFound       = "IssuerNotFound"
	ReasonIssuerNotReady       = "IssuerNotReady"
	ReasonIntermediatePending  = "IntermediatePending"
	ReasonInvalidCertificate   = "InvalidCertificate"
	ReasonIntermediateExpiring = "IntermediateExpiring"
)

// renewalSlack is how long after the start of an intermediate's renewal window the hub
// checks that cert-manager renewed it.
const renewalSlack = 5 * time.Second

var caExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshfed_ca_cert_expiry_seconds",
	Help: "Unix time at which a member's intermediate CA expires.",
}, []string{"federation", "member"})

func init() { crmetrics.Registry.MustRegister(caExpiry) }

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates;issuers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=delete

// trustView is what one reconcile knows of the federation's certificates.
type trustView struct {
	// issuer says why the root issuer cannot sign (nil when it can).
	issuer       error
	issuerReason string
	bundle       trust.Bundle
	// root signs the intermediates now.
	root *x509.Certificate
	cas  map[string]*trust.IntermediateCA
	// problems says, per member, why it has no usable intermediate (or that it expires).
	problems map[string]memberTrustProblem
}

type memberTrustProblem struct {
	reason string
	err    error
}

// reconcileTrust keeps the root (when bootstrapped) and one intermediate Certificate per
// member in the hub, and checks what cert-manager issued. A broken issuer or certificate
// is reported; members whose intermediates are fine keep them.
func (r *Reconciler) reconcileTrust(ctx context.Context, s *scope) error {
	s.trust = trustView{cas: map[string]*trust.IntermediateCA{}, problems: map[string]memberTrustProblem{}}
	labels := mcs.OwnedLabels(s.label)
	var errs []error
	if s.fed.Spec.Trust.IssuerRef == nil {
		selfSigned, root, ca := trust.Bootstrap(s.fed, labels)
		for _, obj := range []client.Object{selfSigned, root, ca} {
			errs = append(errs, r.ensureOwned(ctx, s.fed, obj))
		}
	}
	s.trust.issuerReason, s.trust.issuer = r.checkIssuer(ctx, trust.RootIssuer(s.fed), s.fed.Namespace)

	renewBefore := trust.DefaultIntermediateRenewBefore
	if rb := s.fed.Spec.Trust.IntermediateRenewBefore; rb != nil {
		renewBefore = rb.Duration
	}
	wanted := map[string]bool{}
	for _, mv := range s.members {
		name := mv.spec.Name
		cert := trust.Intermediate(s.fed, name, labels)
		wanted[cert.Name] = true
		if err := r.ensureOwned(ctx, s.fed, cert); err != nil {
			errs = append(errs, err)
		}
		var secret corev1.Secret
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, &secret)
		if apierrors.IsNotFound(err) {
			s.trust.problems[name] = memberTrustProblem{ReasonIntermediatePending,
				fmt.Errorf("waiting for cert-manager to issue Certificate %s/%s%s", cert.Namespace, cert.Name, r.certificateState(ctx, cert))}
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		ca, err := trust.ParseIntermediate(&secret)
		if err != nil {
			s.trust.problems[name] = memberTrustProblem{ReasonInvalidCertificate, err}
			continue
		}
		s.trust.cas[name] = ca
		s.trust.bundle.Add(ca.Root)
		if s.trust.root == nil || ca.Root.NotBefore.After(s.trust.root.NotBefore) {
			s.trust.root = ca.Root
		}
		caExpiry.WithLabelValues(s.owner, name).Set(float64(ca.NotAfter().Unix()))
		// cert-manager renews when renewBefore is left; a pass then checks it did.
		if left := time.Until(ca.NotAfter()); left < renewBefore {
			s.trust.problems[name] = memberTrustProblem{ReasonIntermediateExpiring,
				fmt.Errorf("the intermediate of %s expires in %s and cert-manager has not renewed it: see the Events of Certificate %s/%s", name, left.Round(time.Second), cert.Namespace, cert.Name)}
		} else {
			s.requeue(left - renewBefore + renewalSlack)
		}
	}
	// Intermediates of members that left go (their Secrets follow through owner references).
	var certs cmapi.CertificateList
	if err := r.Client.List(ctx, &certs, client.InNamespace(s.fed.Namespace), client.MatchingLabels(labels)); err != nil {
		errs = append(errs, err)
	}
	for i := range certs.Items {
		c := &certs.Items[i]
		if c.Spec.IsCA && c.Name != trust.RootName(s.fed.Name) && !wanted[c.Name] {
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, c)))
			var secret corev1.Secret
			secret.Namespace, secret.Name = c.Namespace, c.Spec.SecretName
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, &secret)))
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
			return ReasonIssuerNotReady, fmt.Errorf("cert-manager %s is not ready: %s", where, c.Message)
		}
	}
	return ReasonIssuerNotReady, fmt.Errorf("cert-manager %s has not reported Ready yet", where)
}

func issuerGetError(where string, err error) (string, error) {
	if apierrors.IsNotFound(err) {
		return ReasonIssuerNotFound, fmt.Errorf("cert-manager %s not found: create it (a CA issuer that can sign CA certificates) or fix spec.trust.issuerRef", where)
	}
	return ReasonIssuerNotReady, fmt.Errorf("read cert-manager %s: %w", where, err)
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
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: join.MemberNamespace, Name: trust.CACertsSecret, Labels: mcs.OwnedLabels(s.label),
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
	mv.trustVersion = version
	return nil
}

// trustStatus reports the roots, each member's bundle, and the TrustReady condition.
func (r *Reconciler) trustStatus(s *scope) metav1.Condition {
	fed := s.fed
	t := &s.trust
	fed.Status.Trust = &meshv1.TrustStatus{TrustedRoots: t.bundle.Fingerprints(), BundleVersion: t.bundle.Version()}
	if t.root != nil {
		fed.Status.Trust.RootFingerprint = trust.Fingerprint(t.root)
		fed.Status.Trust.RootNotAfter = &metav1.Time{Time: t.root.NotAfter}
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
