package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Paths the validators are served on; config/webhook and the OLM bundle use the same.
const (
	MeshPath           = "/validate-meshfed-io-v1alpha1-mesh"
	MeshFederationPath = "/validate-meshfed-io-v1alpha1-meshfederation"
)

// +kubebuilder:webhook:path=/validate-meshfed-io-v1alpha1-mesh,mutating=false,failurePolicy=fail,sideEffects=None,groups=meshfed.io,resources=meshes,verbs=create;update,versions=v1alpha1,name=vmesh.meshfed.io,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-meshfed-io-v1alpha1-meshfederation,mutating=false,failurePolicy=fail,sideEffects=None,groups=meshfed.io,resources=meshfederations,verbs=create;update,versions=v1alpha1,name=vmeshfederation.meshfed.io,admissionReviewVersions=v1

// Setup registers both validators with the manager's webhook server. reader looks up the
// kubeconfig Secrets a MeshFederation names (a missing one is a warning, not an error:
// `meshfedctl join` may run after the federation is written).
func Setup(mgr ctrl.Manager, reader client.Reader, federationNamespace string) error {
	if err := ctrl.NewWebhookManagedBy(mgr, &meshv1.Mesh{}).
		WithValidator(MeshValidator{}).WithValidatorCustomPath(MeshPath).Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &meshv1.MeshFederation{}).
		WithValidator(FederationValidator{Reader: reader, Namespace: federationNamespace}).WithValidatorCustomPath(MeshFederationPath).Complete()
}

// MeshValidator admits Meshes that meshv1.CheckMesh finds nothing wrong with.
type MeshValidator struct{}

var _ admission.Validator[*meshv1.Mesh] = MeshValidator{}

// ValidateCreate implements admission.Validator.
func (MeshValidator) ValidateCreate(_ context.Context, m *meshv1.Mesh) (admission.Warnings, error) {
	return nil, invalid(meshv1.GroupVersion.WithKind("Mesh").GroupKind(), m.Name, meshv1.CheckMesh(m))
}

// ValidateUpdate implements admission.Validator.
func (v MeshValidator) ValidateUpdate(ctx context.Context, _, m *meshv1.Mesh) (admission.Warnings, error) {
	return v.ValidateCreate(ctx, m)
}

// ValidateDelete implements admission.Validator; deletion is always allowed.
func (MeshValidator) ValidateDelete(context.Context, *meshv1.Mesh) (admission.Warnings, error) {
	return nil, nil
}

// FederationValidator admits MeshFederations that meshv1.CheckFederation finds nothing wrong
// with, and warns about kubeconfig Secrets that do not exist.
type FederationValidator struct {
	Reader client.Reader
	// Namespace, when set, is the only namespace MeshFederations are admitted in.
	Namespace string
}

var _ admission.Validator[*meshv1.MeshFederation] = FederationValidator{}

// ValidateCreate implements admission.Validator.
func (v FederationValidator) ValidateCreate(ctx context.Context, f *meshv1.MeshFederation) (admission.Warnings, error) {
	errs := meshv1.CheckFederation(f)
	if v.Namespace != "" && f.Namespace != v.Namespace {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "namespace"), f.Namespace,
			fmt.Sprintf("the hub honours MeshFederations only in namespace %s (the operator's --federation-namespace): create it there", v.Namespace)))
	}
	if err := invalid(meshv1.GroupVersion.WithKind("MeshFederation").GroupKind(), f.Name, errs); err != nil {
		return nil, err
	}
	warnings := v.missingSecrets(ctx, f)
	if len(f.Spec.TrafficPolicies) > 0 {
		warnings = append(warnings, "spec.trafficPolicies is deprecated: a ServicePolicy's traffic in each member takes its place for the service it targets (docs/user-guide.md, \"Traffic: failover, weights, outlier detection, circuit breaking\")")
	}
	return warnings, nil
}

// ValidateUpdate implements admission.Validator.
func (v FederationValidator) ValidateUpdate(ctx context.Context, _, f *meshv1.MeshFederation) (admission.Warnings, error) {
	return v.ValidateCreate(ctx, f)
}

// ValidateDelete implements admission.Validator; deletion is always allowed.
func (FederationValidator) ValidateDelete(context.Context, *meshv1.MeshFederation) (admission.Warnings, error) {
	return nil, nil
}

func (v FederationValidator) missingSecrets(ctx context.Context, f *meshv1.MeshFederation) admission.Warnings {
	if v.Reader == nil {
		return nil
	}
	var warnings admission.Warnings
	for _, m := range f.Spec.Members {
		var s corev1.Secret
		err := v.Reader.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: m.KubeconfigSecretRef.Name}, &s)
		if apierrors.IsNotFound(err) {
			warnings = append(warnings, fmt.Sprintf("member %s: kubeconfig Secret %s/%s does not exist yet; the member stays disconnected until it does (`meshfedctl join` creates it)",
				m.Name, f.Namespace, m.KubeconfigSecretRef.Name))
		}
	}
	return warnings
}

func invalid(gk schema.GroupKind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(gk, name, errs)
}
