package mesh

import (
	"context"
	"fmt"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/trust"
	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/ca"
	"github.com/meshfed/meshfed/operator/internal/xds"
	meshwebhook "github.com/meshfed/meshfed/operator/webhook"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=deletecollection
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update;patch,resourceNames=meshfed-injector

// ControlPlaneCertificate is the Certificate of the CA service's and the xDS server's
// serving certificate (Secret ca.ServingSecret).
const ControlPlaneCertificate = "meshfed-control-plane"

// reconcileInjection makes the member ready for meshed pods: the serving certificate of
// the CA service and the xDS server, the trust bundle in every namespace, and the
// injection webhook's namespace selector equal to the Mesh's.
func (r *Reconciler) reconcileInjection(ctx context.Context, s *scope) (metav1.Condition, error) {
	cond := metav1.Condition{Type: meshv1.ConditionInjectionReady, Status: metav1.ConditionFalse}
	var secret corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.CACertsSecret}, &secret)
	if apierrors.IsNotFound(err) {
		// Not a member (yet, or any more): what the member's CA issued for the control
		// plane and the agents belongs to no federation.
		if err := r.forgetFederation(ctx); err != nil {
			return cond, err
		}
		cond.Reason, cond.Message = meshv1.ReasonWaitingForHub, "no intermediate CA yet: meshed pods get certificates once the hub has signed this cluster's intermediate (see TrustReady)"
		return cond, nil
	} else if err != nil {
		return cond, err
	}
	held, err := trust.ReadCACerts(&secret)
	if err != nil {
		cond.Reason, cond.Message = meshv1.ReasonInvalidCertificate, err.Error()
		return cond, nil
	}
	if err := r.controlPlaneCertificates(ctx, s.mesh); err != nil {
		return cond, err
	}
	if err := r.distributeBundle(ctx, held); err != nil {
		return cond, err
	}
	selector, found, err := r.syncInjector(ctx, s.mesh)
	if err != nil {
		return cond, err
	}
	if !found {
		cond.Reason, cond.Message = meshv1.ReasonWebhookMissing, fmt.Sprintf("MutatingWebhookConfiguration %s is missing: install meshfed with config/default", meshwebhook.InjectorWebhook)
		return cond, nil
	}
	var serving corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: ca.ServingSecret}, &serving); apierrors.IsNotFound(err) || len(serving.Data[corev1.TLSCertKey]) == 0 {
		cond.Reason, cond.Message = meshv1.ReasonWaitingForCertificate, fmt.Sprintf("cert-manager has not issued Certificate %s/%s (the CA service's and the xDS server's) yet", r.Namespace, ControlPlaneCertificate)
		return cond, nil
	} else if err != nil {
		return cond, err
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, meshv1.ReasonReconciled
	cond.Message = fmt.Sprintf("pods of namespaces matching %s (or labelled meshfed.io/inject=enabled) get meshfed-agent and a certificate for spiffe://%s/ns/<namespace>/sa/<service account>",
		selector, s.mesh.Spec.TrustDomainOrDefault())
	return cond, nil
}

// forgetFederation deletes the control plane's certificates (Certificates and Secrets)
// and the agents' CertificateRequests.
func (r *Reconciler) forgetFederation(ctx context.Context) error {
	for _, name := range []string{ControlPlaneCertificate, GatewayXDSSecret} {
		cert := &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: name}}
		if err := r.Client.Delete(ctx, cert); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	for _, name := range []string{ca.ServingSecret, GatewayXDSSecret} {
		var secret corev1.Secret
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, &secret)
		if apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		// cert-manager wrote them for the Certificates above; a Secret of that name
		// without its annotation is someone else's.
		if secret.Annotations[cmapi.CertificateNameKey] == "" {
			continue
		}
		if err := r.Client.Delete(ctx, &secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return client.IgnoreNotFound(r.Client.DeleteAllOf(ctx, &cmapi.CertificateRequest{}, client.InNamespace(r.Namespace),
		client.MatchingLabels{ca.LabelComponent: ca.ComponentCA}))
}

// controlPlaneCertificates keeps the Certificates of the control plane: its serving
// certificate (the DNS names of the CA and xDS Services, the operator's SPIFFE ID) and the
// gateway's xDS client certificate (the gateway's SPIFFE ID). Both are workload
// certificates of the member's CA: a root rotation re-issues them.
func (r *Reconciler) controlPlaneCertificates(ctx context.Context, m *meshv1.Mesh) error {
	var dns []string
	for _, svc := range []string{caapi.ServiceName, XDSServiceName} {
		dns = append(dns, svc+"."+r.OperatorNamespace+".svc", svc+"."+r.OperatorNamespace+".svc.cluster.local")
	}
	td := m.Spec.TrustDomainOrDefault()
	for name, spec := range map[string]cmapi.CertificateSpec{
		ControlPlaneCertificate: {SecretName: ca.ServingSecret, DNSNames: dns,
			URIs: []string{fmt.Sprintf("spiffe://%s/ns/%s/sa/meshfed-operator", td, r.OperatorNamespace)}},
		GatewayXDSSecret: {SecretName: GatewayXDSSecret,
			URIs: []string{fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", td, r.Namespace, xds.GatewayServiceAccount)}},
	} {
		spec.Duration = &metav1.Duration{Duration: 24 * time.Hour}
		spec.IssuerRef = cmmeta.IssuerReference{Name: trust.MemberIssuer, Kind: cmapi.IssuerKind, Group: "cert-manager.io"}
		spec.Usages = []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageServerAuth, cmapi.UsageClientAuth}
		spec.PrivateKey = &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways}
		cert := &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: name}}
		if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, cert, func() error {
			cert.Labels = map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}
			cert.Spec = spec
			return controllerutil.SetControllerReference(m, cert, r.Client.Scheme())
		}); err != nil {
			return fmt.Errorf("Certificate %s/%s: %w", r.Namespace, name, err)
		}
	}
	return nil
}

// distributeBundle keeps the trust-bundle ConfigMap in every namespace but the system
// ones: agents trust the CA service through it, and re-issue when the intermediate in it
// changes.
func (r *Reconciler) distributeBundle(ctx context.Context, held *trust.CACerts) error {
	data := map[string]string{caapi.TrustBundleKey: string(held.Bundle.PEM()), caapi.IntermediateKey: trust.Fingerprint(held.Intermediate)}
	var namespaces corev1.NamespaceList
	if err := r.Client.List(ctx, &namespaces); err != nil {
		return err
	}
	for _, ns := range namespaces.Items {
		if ns.DeletionTimestamp != nil || slices.Contains(meshwebhook.SystemNamespaces, ns.Name) {
			continue
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: caapi.TrustBundleConfigMap}}
		if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, cm, func() error {
			cm.Labels = map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}
			cm.Data = data
			return nil
		}); err != nil && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
			// A namespace being deleted refuses new objects: it is gone next pass.
			return fmt.Errorf("ConfigMap %s/%s: %w", ns.Name, caapi.TrustBundleConfigMap, err)
		}
	}
	return nil
}

// syncInjector keeps the namespace selector of the injection webhook equal to the Mesh's
// (plus the exclusion of the system namespaces), and returns it.
func (r *Reconciler) syncInjector(ctx context.Context, m *meshv1.Mesh) (*metav1.LabelSelector, bool, error) {
	want := m.Spec.Injection.NamespaceSelector.DeepCopy()
	if want == nil {
		want = meshwebhook.DefaultSelector()
	}
	shown := want.DeepCopy()
	want.MatchExpressions = append(want.MatchExpressions, metav1.LabelSelectorRequirement{
		Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: append(slices.Clone(meshwebhook.SystemNamespaces), r.OperatorNamespace)})
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := r.Reader.Get(ctx, client.ObjectKey{Name: meshwebhook.InjectorWebhook}, &cfg); apierrors.IsNotFound(err) {
		return shown, false, nil
	} else if err != nil {
		return nil, false, err
	}
	for i := range cfg.Webhooks {
		w := &cfg.Webhooks[i]
		if w.Name != meshwebhook.NamespaceWebhook {
			continue
		}
		if apiequality.Semantic.DeepEqual(w.NamespaceSelector, want) {
			return shown, true, nil
		}
		w.NamespaceSelector = want
		if err := r.Client.Update(ctx, &cfg); err != nil {
			return nil, true, fmt.Errorf("MutatingWebhookConfiguration %s: %w", cfg.Name, err)
		}
		return shown, true, nil
	}
	return shown, false, nil
}
