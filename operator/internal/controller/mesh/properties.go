package mesh

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/meshfed/meshfed/federation/trust"
	aboutv1alpha1 "github.com/meshfed/meshfed/operator/api/about/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=about.k8s.io,resources=clusterproperties,verbs=get;list;watch;create;update;patch;delete

// writeClusterProperties keeps the cluster's About API identity (KEP-2149):
// cluster.clusterset.k8s.io is the Mesh's clusterName, and clusterset.k8s.io the
// federation whose hub signed this member's intermediate (as the hub labels it), until the
// member leaves it. A property someone else wrote is left alone: the hub compares the
// cluster ID with the member's name and refuses a member they differ for.
func (r *Reconciler) writeClusterProperties(ctx context.Context, m *meshv1.Mesh) error {
	var public corev1.ConfigMap
	federation := ""
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: trust.IntermediateConfigMap}, &public)
	if err == nil {
		federation = public.Labels[meshv1.LabelFederation]
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	if err := errors.Join(
		r.writeProperty(ctx, m, aboutv1alpha1.PropertyClusterID, m.Spec.ClusterName),
		r.writeProperty(ctx, m, aboutv1alpha1.PropertyClusterSet, federation),
	); err != nil {
		return fmt.Errorf("ClusterProperties (KEP-2149): %w", err)
	}
	return nil
}

// writeProperty sets property name to value, or deletes it for "", if the Mesh owns it.
func (r *Reconciler) writeProperty(ctx context.Context, m *meshv1.Mesh, name, value string) error {
	var have aboutv1alpha1.ClusterProperty
	err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &have)
	switch {
	case apierrors.IsNotFound(err):
		if value == "" {
			return nil
		}
		p := &aboutv1alpha1.ClusterProperty{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{meshv1.LabelManagedBy: meshv1.ManagedByValue}},
			Spec:       aboutv1alpha1.ClusterPropertySpec{Value: value},
		}
		if err := controllerutil.SetControllerReference(m, p, r.Client.Scheme()); err != nil {
			return err
		}
		return client.IgnoreAlreadyExists(r.Client.Create(ctx, p))
	case err != nil:
		return err
	case !metav1.IsControlledBy(&have, m):
		return nil // someone else's
	case value == "":
		return client.IgnoreNotFound(r.Client.Delete(ctx, &have))
	case have.Spec.Value != value:
		before := have.DeepCopy()
		have.Spec.Value = value
		return r.Client.Patch(ctx, &have, client.MergeFrom(before))
	}
	return nil
}
