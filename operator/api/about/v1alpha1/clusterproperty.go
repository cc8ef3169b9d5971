// Package v1alpha1 is the About API of SIG Multicluster (KEP-2149), about.k8s.io/v1alpha1:
// ClusterProperty, a cluster-scoped name/value pair. meshfed installs its CRD (the upstream
// module is not served here) and the member operator writes the two well-known properties,
// PropertyClusterID and PropertyClusterSet.
//
// +kubebuilder:object:generate=true
// +groupName=about.k8s.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The well-known properties of KEP-2149.
const (
	// PropertyClusterID names this cluster within its ClusterSet: unique there, and kept
	// for as long as the cluster is a member.
	PropertyClusterID = "cluster.clusterset.k8s.io"
	// PropertyClusterSet names the ClusterSet this cluster belongs to.
	PropertyClusterSet = "clusterset.k8s.io"
)

var (
	// GroupVersion is about.k8s.io/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "about.k8s.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &ClusterProperty{}, &ClusterPropertyList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// ClusterPropertySpec is the value of a property.
type ClusterPropertySpec struct {
	// Value of the property: at most 128 KiB.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128000
	Value string `json:"value"`
}

// ClusterProperty is one property of the cluster, named by the object's name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=https://github.com/kubernetes/enhancements/pull/3084"
// +kubebuilder:printcolumn:name="Value",type=string,JSONPath=`.spec.value`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterProperty struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterPropertySpec `json:"spec"`
}

// ClusterPropertyList is a list of ClusterProperties.
//
// +kubebuilder:object:root=true
type ClusterPropertyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterProperty `json:"items"`
}
