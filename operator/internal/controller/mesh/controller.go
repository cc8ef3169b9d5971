// Package mesh reconciles a member cluster's Mesh: it checks the spec and reports whether
// the member side of the mesh accepts it.
package mesh

import (
	"context"
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshfed/meshfed/federation/trust"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/xds"
)

// Reconciler reports the state of the member's Mesh and keeps the member's cert-manager
// CA Issuer, backed by the intermediate CA the hub writes.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Namespace is the mesh namespace: the hub writes meshfed-cacerts there and the
	// workload certificates are issued there.
	Namespace string
	// XDS is the member's xDS server, whose state the Mesh reports; nil leaves it out.
	XDS *xds.Server
	// XDSChanged receives a signal when the xDS server's state changes.
	XDSChanged <-chan struct{}
	// GatewayImage is the east-west gateway's container image.
	GatewayImage string
}

// +kubebuilder:rbac:groups=meshfed.io,resources=meshes,verbs=get;list;watch
// +kubebuilder:rbac:groups=meshfed.io,resources=meshes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=issuers,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates/status,verbs=update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// SetupWithManager watches Meshes (status writes do not trigger a new pass), and the
// Secrets, Issuer and workload Certificates of the mesh namespace.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	toMesh := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if o.GetNamespace() != r.Namespace {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: meshv1.MeshSingletonName}}}
	})
	b := ctrl.NewControllerManagedBy(mgr)
	if r.XDSChanged != nil {
		events := make(chan event.GenericEvent)
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			statusEvents(ctx, r.XDSChanged, events)
			return nil
		})); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{}))
	}
	return b.
		For(&meshv1.Mesh{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, toMesh).
		Watches(&cmapi.Issuer{}, toMesh).
		Watches(&cmapi.Certificate{}, toMesh).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Complete(r)
}

// Reconcile sets the Mesh's Ready condition and observed generation.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m meshv1.Mesh
	if err := r.Client.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := m.DeepCopy()
	ready := Ready(&m)
	ready.ObservedGeneration = m.Generation
	meta.SetStatusCondition(&m.Status.Conditions, ready)
	trustReady, err := r.reconcileIssuer(ctx, &m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if m.Status.Trust, err = r.reconcileWorkloads(ctx); err != nil {
		return ctrl.Result{}, err
	}
	trustReady.ObservedGeneration = m.Generation
	meta.SetStatusCondition(&m.Status.Conditions, trustReady)
	gwReady, err := r.reconcileGateway(ctx, &m)
	if err != nil {
		return ctrl.Result{}, err
	}
	gwReady.ObservedGeneration = m.Generation
	meta.SetStatusCondition(&m.Status.Conditions, gwReady)
	if r.XDS != nil {
		cp := r.controlPlaneStatus(&m)
		cp.ObservedGeneration = m.Generation
		meta.SetStatusCondition(&m.Status.Conditions, cp)
	}
	m.Status.ObservedGeneration = m.Generation
	if apiequality.Semantic.DeepEqual(base.Status, m.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &m, client.MergeFrom(base)); err != nil {
		return ctrl.Result{}, err
	}
	if ready.Status == metav1.ConditionFalse {
		r.Recorder.Event(&m, corev1.EventTypeWarning, ready.Reason, ready.Message)
	}
	return ctrl.Result{}, nil
}

// reconcileIssuer keeps the CA Issuer that signs workload certificates with the member's
// intermediate, once the hub has written it, and reports whether it is ready.
func (r *Reconciler) reconcileIssuer(ctx context.Context, m *meshv1.Mesh) (metav1.Condition, error) {
	cond := metav1.Condition{Type: meshv1.ConditionTrustReady, Status: metav1.ConditionFalse}
	var secret corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.CACertsSecret}, &secret)
	if apierrors.IsNotFound(err) {
		cond.Reason = meshv1.ReasonWaitingForHub
		cond.Message = fmt.Sprintf("no intermediate CA yet: the hub writes Secret %s/%s once this cluster is a member of a MeshFederation", r.Namespace, trust.CACertsSecret)
		return cond, nil
	} else if err != nil {
		return cond, err
	}
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
				cond.Message = fmt.Sprintf("workload certificates are issued by Issuer %s/%s (trust bundle %s)",
					r.Namespace, trust.MemberIssuer, secret.Annotations[meshv1.AnnotationTrustBundleVersion])
			} else {
				cond.Message = fmt.Sprintf("Issuer %s/%s: %s", r.Namespace, trust.MemberIssuer, c.Message)
			}
		}
	}
	return cond, nil
}

// Ready is the Ready condition a Mesh's spec earns.
func Ready(m *meshv1.Mesh) metav1.Condition {
	if m.Name != meshv1.MeshSingletonName {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonInvalidSpec,
			Message: fmt.Sprintf("a cluster has one Mesh, named %q: recreate it under that name", meshv1.MeshSingletonName)}
	}
	if errs := meshv1.CheckMesh(m); len(errs) > 0 {
		return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonInvalidSpec,
			Message: errs.ToAggregate().Error()}
	}
	return metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonReconciled,
		Message: fmt.Sprintf("cluster %s in network %s is a mesh member", m.Spec.ClusterName, m.Spec.Network)}
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
			corev1.EventTypeWarning, "InvalidCACerts", "%v", err)
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
		if err := r.reissue(ctx, c); err != nil {
			return nil, err
		}
	}
	return status, nil
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
