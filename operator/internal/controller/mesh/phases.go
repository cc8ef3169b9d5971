package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/ca"
	"github.com/meshfed/meshfed/operator/internal/vip"
)

// phase is one step of the member's reconcile: it returns the condition it reports, or an
// error that becomes that condition, False with reason ReconcileFailed.
type phase struct {
	condition string
	run       func(context.Context, *scope) (metav1.Condition, error)
}

// reconcileNormal runs every phase, even after one fails (each reports on its own part),
// and joins their errors.
func (r *Reconciler) reconcileNormal(ctx context.Context, s *scope) error {
	phases := []phase{
		{meshv1.ConditionTrustReady, r.reconcileTrust},
		{meshv1.ConditionGatewayReady, r.reconcileGateway},
		{meshv1.ConditionDNSReady, r.reconcileDNS},
	}
	if r.XDS != nil {
		phases = append(phases, phase{meshv1.ConditionControlPlaneReady, r.reconcileControlPlane})
	}
	if r.OperatorNamespace != "" {
		phases = append(phases, phase{meshv1.ConditionInjectionReady, r.reconcileInjection})
	}
	if r.ClusterSetIPs != nil {
		phases = append(phases, phase{meshv1.ConditionClusterSetIPsReady, r.reportClusterSetIPs})
	}
	errs := []error{r.writeClusterProperties(ctx, s.mesh)}
	for _, p := range phases {
		cond, err := p.run(ctx, s)
		if err != nil {
			err = fmt.Errorf("%s: %w", p.condition, err)
			cond = metav1.Condition{Type: p.condition, Status: metav1.ConditionFalse, Reason: meshv1.ReasonReconcileFailed, Message: err.Error()}
			errs = append(errs, err)
		}
		s.set(cond)
	}
	return errors.Join(errs...)
}

// reconcileTrust keeps the member's intermediate CA and its CA Issuer, and has workload
// certificates follow the intermediate.
func (r *Reconciler) reconcileTrust(ctx context.Context, s *scope) (metav1.Condition, error) {
	csr, held, err := r.reconcileIntermediate(ctx, s.mesh)
	waiting := errors.Is(err, errWaitingForHub)
	if err != nil && !waiting {
		return metav1.Condition{}, err
	}
	cond := metav1.Condition{Type: meshv1.ConditionTrustReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonWaitingForHub}
	switch {
	case held != nil:
		if cond, err = r.reconcileIssuer(ctx, s.mesh, held); err != nil {
			return cond, err
		}
	case waiting:
		cond.Message = fmt.Sprintf("no intermediate CA yet: %v", err)
	default:
		cond.Message = fmt.Sprintf("no intermediate CA yet: this cluster's request is in Mesh status.trust.intermediateRequest; the hub answers in ConfigMap %s/%s once this cluster is a member of a MeshFederation", r.Namespace, trust.IntermediateConfigMap)
	}
	status, err := r.reconcileWorkloads(ctx)
	if err != nil {
		return cond, err
	}
	if status == nil {
		status = &meshv1.MeshTrustStatus{}
	}
	status.IntermediateRequest = csr
	s.mesh.Status.Trust = status
	return cond, nil
}

// reconcileIssuer keeps the CA Issuer that signs workload certificates with the member's
// intermediate (Secret held) and reports whether it is ready.
func (r *Reconciler) reconcileIssuer(ctx context.Context, m *meshv1.Mesh, held *corev1.Secret) (metav1.Condition, error) {
	cond := metav1.Condition{Type: meshv1.ConditionTrustReady, Status: metav1.ConditionFalse}
	issuer := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: trust.MemberIssuer}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, issuer, func() error {
		issuer.Labels = map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}
		issuer.Spec = cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: trust.CACertsSecret}}}
		return controllerutil.SetControllerReference(m, issuer, r.Client.Scheme())
	}); err != nil {
		return cond, fmt.Errorf("Issuer %s/%s: %w", r.Namespace, trust.MemberIssuer, err)
	}
	cond.Reason, cond.Message = meshv1.ReasonIssuerNotReady, fmt.Sprintf("cert-manager has not reported Issuer %s/%s ready yet", r.Namespace, trust.MemberIssuer)
	for _, c := range issuer.Status.Conditions {
		if c.Type == cmapi.IssuerConditionReady {
			if c.Status == cmmeta.ConditionTrue {
				cond.Status, cond.Reason = metav1.ConditionTrue, meshv1.ReasonReconciled
				cond.Message = fmt.Sprintf("workload certificates are issued by Issuer %s/%s with this cluster's own intermediate CA (trust bundle %s)",
					r.Namespace, trust.MemberIssuer, held.Annotations[meshv1.AnnotationTrustBundleVersion])
			} else {
				cond.Message = fmt.Sprintf("Issuer %s/%s: %s", r.Namespace, trust.MemberIssuer, c.Message)
			}
		}
	}
	return cond, nil
}

// reconcileWorkloads reports the intermediate and trust bundle of meshfed-cacerts, and has
// cert-manager re-issue every workload certificate that an older intermediate signed.
func (r *Reconciler) reconcileWorkloads(ctx context.Context) (*meshv1.MeshTrustStatus, error) {
	var secret corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.CACertsSecret}, &secret); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	held, err := trust.ReadCACerts(&secret)
	if err != nil {
		r.Recorder.Eventf(&corev1.ObjectReference{Kind: "Secret", Namespace: secret.Namespace, Name: secret.Name, APIVersion: "v1"},
			corev1.EventTypeWarning, meshv1.EventInvalidCACerts, "%v", err)
		return nil, nil
	}
	status := &meshv1.MeshTrustStatus{BundleVersion: held.Bundle.Version(), IntermediateFingerprint: trust.Fingerprint(held.Intermediate)}
	var certs cmapi.CertificateList
	if err := r.Client.List(ctx, &certs, client.InNamespace(r.Namespace), client.MatchingLabels{meshv1.LabelManagedBy: meshv1.ManagedByValue}); err != nil {
		return nil, err
	}
	for i := range certs.Items {
		c := &certs.Items[i]
		if c.Spec.IssuerRef.Name != trust.MemberIssuer || c.Spec.IsCA {
			continue
		}
		status.WorkloadCertificates++
		var issued corev1.Secret
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Spec.SecretName}, &issued)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		if err == nil && trust.SignedBy(issued.Data[corev1.TLSCertKey], held.Intermediate) {
			status.WorkloadCertificatesCurrent++
			continue
		}
		pend(status, "Certificate "+c.Namespace+"/"+c.Name)
		if err := r.reissue(ctx, c); err != nil {
			return nil, err
		}
	}
	if err := r.countAgents(ctx, held, status); err != nil {
		return nil, err
	}
	return status, nil
}

// countAgents adds the agents' certificates (the latest CertificateRequest of each pod,
// see package ca) to status. A request whose pod is gone, or whose certificate has
// expired, is deleted: it stands for no workload.
func (r *Reconciler) countAgents(ctx context.Context, held *trust.CACerts, status *meshv1.MeshTrustStatus) error {
	var crs cmapi.CertificateRequestList
	if err := r.Client.List(ctx, &crs, client.InNamespace(r.Namespace), client.MatchingLabels{ca.LabelComponent: ca.ComponentCA}); err != nil {
		return err
	}
	for i := range crs.Items {
		cr := &crs.Items[i]
		if len(cr.Status.Certificate) == 0 {
			continue // being signed
		}
		if trust.SignedBy(cr.Status.Certificate, held.Intermediate) {
			status.WorkloadCertificates++
			status.WorkloadCertificatesCurrent++
			continue
		}
		live, err := r.agentLives(ctx, cr)
		if err != nil {
			return err
		}
		if !live {
			if err := r.Client.Delete(ctx, cr); client.IgnoreNotFound(err) != nil {
				return err
			}
			continue
		}
		status.WorkloadCertificates++
		pend(status, "the agent of pod "+cr.Labels[ca.LabelPodNamespace]+"/"+cr.Labels[ca.LabelPodName])
	}
	return nil
}

// agentLives tells whether the pod of an agent's request still runs (it is not gone,
// deleted or finished) with a certificate that has not expired.
func (r *Reconciler) agentLives(ctx context.Context, cr *cmapi.CertificateRequest) (bool, error) {
	chain, err := trust.ParseCertificates(cr.Status.Certificate)
	if err != nil || len(chain) == 0 || time.Now().After(chain[0].NotAfter) {
		return false, nil
	}
	var pod corev1.Pod
	err = r.Reader.Get(ctx, client.ObjectKey{Namespace: cr.Labels[ca.LabelPodNamespace], Name: cr.Labels[ca.LabelPodName]}, &pod)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	return string(pod.UID) == cr.Labels[ca.LabelPodUID] && pod.DeletionTimestamp == nil && !finished, nil
}

// setIssuing sets c's Issuing condition to True, in place of the one a failed issuance
// left (Issuing False): a second condition of the type would go unseen by cert-manager,
// which reads the first. (cert-manager's apiutil.SetCertificateCondition does the same,
// but its package brings cert-manager's logging set-up into the operator.)
func setIssuing(c *cmapi.Certificate, now metav1.Time) {
	cond := cmapi.CertificateCondition{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue,
		Reason: meshv1.ReasonIntermediateRotated, LastTransitionTime: &now, ObservedGeneration: c.Generation,
		Message: "the member's intermediate CA changed: re-issuing under the new one"}
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == cmapi.CertificateConditionIssuing {
			c.Status.Conditions[i] = cond
			return
		}
	}
	c.Status.Conditions = append(c.Status.Conditions, cond)
}

// reissue asks cert-manager to issue a Certificate again, as `cmctl renew` does, unless an
// issuance is already under way.
func (r *Reconciler) reissue(ctx context.Context, c *cmapi.Certificate) error {
	for _, cond := range c.Status.Conditions {
		if cond.Type == cmapi.CertificateConditionIssuing && cond.Status == cmmeta.ConditionTrue {
			return nil
		}
	}
	setIssuing(c, metav1.Now())
	if err := r.Client.Status().Update(ctx, c); err != nil {
		return fmt.Errorf("re-issue Certificate %s/%s: %w", c.Namespace, c.Name, err)
	}
	return nil
}

// pend names a workload certificate that the current intermediate has not issued yet, in
// the status (the first ten).
func pend(status *meshv1.MeshTrustStatus, what string) {
	if len(status.Pending) < 10 {
		status.Pending = append(status.Pending, what)
	}
}

// reportClusterSetIPs reports the imported services that lack their ClusterSet IPs.
func (r *Reconciler) reportClusterSetIPs(_ context.Context, _ *scope) (metav1.Condition, error) {
	return clusterSetIPsCondition(r.ClusterSetIPs.Status()), nil
}

// clusterSetIPsCondition names up to five services without their addresses, and why.
func clusterSetIPsCondition(failed map[string]error) metav1.Condition {
	if len(failed) == 0 {
		return metav1.Condition{Type: meshv1.ConditionClusterSetIPsReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonAllocated,
			Message: "every ClusterSetIP service imported here holds its ClusterSet IPs"}
	}
	reason := meshv1.ReasonNoRange
	var named []string
	for _, key := range slices.Sorted(maps.Keys(failed)) {
		if errors.Is(failed[key], vip.ErrExhausted) {
			reason = meshv1.ReasonRangeExhausted
		}
		if len(named) < 5 {
			named = append(named, fmt.Sprintf("%s (%v)", key, failed[key]))
		}
	}
	more := ""
	if len(failed) > len(named) {
		more = fmt.Sprintf(" and %d more", len(failed)-len(named))
	}
	return metav1.Condition{Type: meshv1.ConditionClusterSetIPsReady, Status: metav1.ConditionFalse, Reason: reason,
		Message: fmt.Sprintf("%d imported services have no ClusterSet IP: %s%s; widen or add a range in spec.clusterSetIPs.ranges",
			len(failed), strings.Join(named, ", "), more)}
}
