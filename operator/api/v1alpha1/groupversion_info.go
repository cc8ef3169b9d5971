// Package v1alpha1 holds the meshfed.io/v1alpha1 API: Mesh (one per cluster), MeshFederation
// (the hub's list of members, trust root and traffic policies) and MeshPeer (what the hub tells
// a member about every other member).
//
// +kubebuilder:object:generate=true
// +groupName=meshfed.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "meshfed.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
