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

// deleteUnwanted removes the federation's CA objects that no generation in use needs: the
// intermediate requests of other generations, and the objects of a bootstrapped root
// rotated away from (its Certificate with the Secret holding the root's key).
func (r *Reconciler) deleteUnwanted(ctx context.Context, s *scope, wanted, generations map[string]bool) error {
	labels := client.MatchingLabels(mcs.OwnedLabels(s.label))
	var errs []error
	var crs cmapi.CertificateRequestList
	errs = append(errs, r.Client.List(ctx, &crs, client.InNamespace(s.fed.Namespace), labels))
	for i := range crs.Items {
		if cr := &crs.Items[i]; !generations[cr.Labels[meshv1.LabelRootGeneration]] {
			errs = append(errs, client.IgnoreNotFound(r.Client.Delete(ctx, cr)))
		}
	}
	var certs cmapi.CertificateList
	errs = append(errs, r.Client.List(ctx, &certs, client.InNamespace(s.fed.Namespace), labels))
	for i := range certs.Items {
		if c := &certs.Items[i]; c.Spec.IsCA && !wanted[c.Name] {
			errs = append(errs, r.deleteCertificate(ctx, c))
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

// deleteCertificate deletes a Certificate and then its Secret: cert-manager leaves Secrets
// behind, and a Certificate whose Secret vanished would be issued again.
func (r *Reconciler) deleteCertificate(ctx context.Context, c *cmapi.Certificate) error {
	if err := client.IgnoreNotFound(r.Client.Delete(ctx, c)); err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Spec.SecretName}}
	return client.IgnoreNotFound(r.Client.Delete(ctx, secret))
}

// deleteTrust removes the federation's CA objects from the hub, so that no root key
// outlives the federation, and the federation's gauges.
func (r *Reconciler) deleteTrust(ctx context.Context, s *scope) error {
	labels := client.MatchingLabels(mcs.OwnedLabels(s.label))
	var errs []error
	var certs cmapi.CertificateList
	errs = append(errs, r.Client.List(ctx, &certs, client.InNamespace(s.fed.Namespace), labels))
	for i := range certs.Items {
		errs = append(errs, r.deleteCertificate(ctx, &certs.Items[i]))
	}
	errs = append(errs, client.IgnoreNotFound(r.Client.DeleteAllOf(ctx, &cmapi.CertificateRequest{}, client.InNamespace(s.fed.Namespace), labels)))
	caExpiry.DeletePartialMatch(prometheus.Labels{"federation": s.owner})
	tokenExpiry.DeletePartialMatch(prometheus.Labels{"federation": s.owner})
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
