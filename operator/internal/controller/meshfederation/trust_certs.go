package meshfederation

import (
	"context"
	"errors"
	"fmt"
	"maps"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/mcs"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

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
