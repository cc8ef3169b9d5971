package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshPeerSpec is what a member needs to know about another member. The hub writes it.
type MeshPeerSpec struct {
	// ClusterName of the peer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	ClusterName string `json:"clusterName"`
	// Network of the peer.
	// +optional
	Network string `json:"network,omitempty"`
	// GatewayAddress is where the peer's east-west gateway accepts traffic (host or IP).
	// +optional
	GatewayAddress string `json:"gatewayAddress,omitempty"`
	// GatewayPort of the peer's east-west gateway.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	// +optional
	GatewayPort int32 `json:"gatewayPort,omitempty"`
	// Locality of the peer.
	// +optional
	Locality Locality `json:"locality,omitempty"`
	// TrustDomain of the peer's workloads.
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
}

// MeshPeerStatus is the hub's latest word on the peer.
type MeshPeerStatus struct {
	// ObservedGeneration is the generation of the spec last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Connected.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MeshPeer describes another member of the federation to this cluster. It is written by
// the hub and read by the member's control plane; users do not edit it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=meshfed
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Network",type=string,JSONPath=`.spec.network`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.gatewayAddress`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshPeerSpec   `json:"spec"`
	Status MeshPeerStatus `json:"status,omitempty"`
}

// MeshPeerList is a list of MeshPeers.
// +kubebuilder:object:root=true
type MeshPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshPeer `json:"items"`
}
