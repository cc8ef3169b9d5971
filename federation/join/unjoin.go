package join

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// UnjoinOptions say which member leaves which hub.
type UnjoinOptions struct {
	// Name of the member in the MeshFederation.
	Name string
	// Member is an admin connection to the member cluster; Namespace its mesh namespace
	// (default MemberNamespace), as given to Join.
	Member    client.Client
	Namespace string
	// Hub, when set, is a connection to the hub cluster: Unjoin deletes the kubeconfig
	// Secret Join wrote in HubNamespace.
	Hub          client.Client
	HubNamespace string
}

// UnjoinResult says what Unjoin removed, and which MeshFederations still list the member.
type UnjoinResult struct {
	// Removed counts the objects the hub had written into the member, by kind.
	Removed map[string]int
	// StillListedBy names the hub's MeshFederations whose spec still lists the member
	// (their hub now reports it unreachable): remove it from spec.members.
	StillListedBy []string
}

// Unjoin takes the hub's access to the member away, at once and for good, then removes what
// the hub wrote there. Access goes first, so the hub cannot write anew behind the cleanup:
// the bindings, then the ServiceAccount (which voids every token issued for it), then the
// roles and the admission policy. What the hub wrote is every ServiceImport, EndpointSlice
// and MeshPeer carrying the federation label, and the intermediate ConfigMap; the member's
// own objects (its ServiceExports, its Mesh, its CA key) stay. Unjoin is idempotent.
func Unjoin(ctx context.Context, o UnjoinOptions) (UnjoinResult, error) {
	ns := namespaceOr(o.Namespace)
	res := UnjoinResult{Removed: map[string]int{}}
	named := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	cluster := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }
	// The namespace stays: the member's operator lives there.
	access := []client.Object{
		&rbacv1.ClusterRoleBinding{ObjectMeta: cluster(ClusterRoleName)},
		&rbacv1.RoleBinding{ObjectMeta: named(ClusterRoleName)},
		&corev1.ServiceAccount{ObjectMeta: named(ServiceAccount)},
		&corev1.Secret{ObjectMeta: named(legacyTokenSecret)},
		&rbacv1.ClusterRole{ObjectMeta: cluster(ClusterRoleName)},
		&rbacv1.Role{ObjectMeta: named(ClusterRoleName)},
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: cluster(PolicyName)},
		&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: cluster(PolicyName)},
	}
	for _, obj := range access {
		if err := o.Member.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return res, fmt.Errorf("member %s: delete %T %s: %w", o.Name, obj, obj.GetName(), err)
		}
	}
	if err := waitAccessGone(ctx, o.Member, ns); err != nil {
		return res, fmt.Errorf("member %s: %w", o.Name, err)
	}
	written := client.HasLabels{meshv1.LabelFederation}
	var errs []error
	// The mirrored EndpointSlices first: the ServiceImports own them, and garbage
	// collection would delete them behind the count.
	for _, kind := range []struct {
		name string
		list client.ObjectList
	}{
		{"EndpointSlice", &discoveryv1.EndpointSliceList{}},
		{"ServiceImport", &mcsv1beta1.ServiceImportList{}},
		{"MeshPeer", &meshv1.MeshPeerList{}},
	} {
		n, err := deleteAll(ctx, o.Member, kind.list, written)
		res.Removed[kind.name] = n
		if err != nil {
			errs = append(errs, fmt.Errorf("%ss: %w", kind.name, err))
		}
	}
	intermediate := &corev1.ConfigMap{ObjectMeta: named(trust.IntermediateConfigMap)}
	if err := o.Member.Delete(ctx, intermediate); err == nil {
		res.Removed["ConfigMap"]++
	} else if !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("ConfigMap %s/%s: %w", ns, intermediate.Name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("member %s: the hub's access is gone, but not all it wrote: %w (run unjoin again)", o.Name, err)
	}
	if o.Hub == nil {
		return res, nil
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.HubNamespace, Name: SecretName(o.Name)}}
	if err := o.Hub.Delete(ctx, secret); client.IgnoreNotFound(err) != nil {
		return res, fmt.Errorf("hub: delete Secret %s/%s: %w", o.HubNamespace, secret.Name, err)
	}
	var feds meshv1.MeshFederationList
	if err := o.Hub.List(ctx, &feds, client.InNamespace(o.HubNamespace)); err != nil {
		return res, fmt.Errorf("hub: list MeshFederations in %s: %w", o.HubNamespace, err)
	}
	for _, f := range feds.Items {
		if slices.ContainsFunc(f.Spec.Members, func(m meshv1.Member) bool { return m.Name == o.Name }) {
			res.StillListedBy = append(res.StillListedBy, f.Name)
		}
	}
	return res, nil
}

// waitAccessGone waits until the member's API server authorizes none of the hub's writes:
// its authorizer learns of the deleted bindings from a cache, and a write it still let
// through after the cleanup listed would outlive the unjoin.
func waitAccessGone(ctx context.Context, c client.Client, ns string) error {
	user := serviceaccount.MakeUsername(ns, ServiceAccount)
	writes := []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "multicluster.x-k8s.io", Resource: "serviceimports"},
		{Verb: "create", Group: "discovery.k8s.io", Resource: "endpointslices"},
		{Verb: "create", Group: meshv1.GroupVersion.Group, Resource: "meshpeers"},
		{Verb: "create", Resource: "configmaps", Namespace: ns},
		{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: ns, Name: ServiceAccount},
	}
	var still string
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, w := range writes {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: serviceaccount.MakeGroupNames(ns), ResourceAttributes: &w,
			}}
			if err := c.Create(ctx, sar); err != nil {
				return false, fmt.Errorf("ask whether the hub may still %s %s: %w", w.Verb, w.Resource, err)
			}
			if sar.Status.Allowed {
				still = w.Verb + " " + w.Resource
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil && still != "" {
		return fmt.Errorf("the member still lets the hub %s (is another binding granting it?): %w", still, err)
	}
	return err
}

// deleteAll deletes, in every namespace, the objects of list's kind that match opts, and
// says how many it deleted.
func deleteAll(ctx context.Context, c client.Client, list client.ObjectList, opts ...client.ListOption) (int, error) {
	if err := c.List(ctx, list, opts...); err != nil {
		return 0, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, item := range items {
		obj := item.(client.Object)
		if err := c.Delete(ctx, obj); err == nil {
			n++
		} else if !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s/%s: %w", obj.GetNamespace(), obj.GetName(), err))
		}
	}
	return n, errors.Join(errs...)
}
