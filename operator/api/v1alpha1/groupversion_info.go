// Package v1alpha1 holds the meshfed.io/v1alpha1 API: Mesh (one per cluster), MeshFederation
// (the hub's list of members, trust root and traffic policies), MeshPeer (what the hub tells
// a member about every other member) and ServicePolicy (authorization of a service's
// callers).
//
// +kubebuilder:object:generate=true
// +groupName=meshfed.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "meshfed.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers every kind of the package (an API package stays light: apimachinery
// only, no controller-runtime).
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Mesh{}, &MeshList{},
		&MeshFederation{}, &MeshFederationList{},
		&MeshPeer{}, &MeshPeerList{},
		&ServicePolicy{}, &ServicePolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
