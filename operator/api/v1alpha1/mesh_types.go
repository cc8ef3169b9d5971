package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshSingletonName is the only name a Mesh may have: there is one Mesh per cluster.
const MeshSingletonName = "default"

// MeshSpec describes this cluster's place in the federated mesh.
type MeshSpec struct {
	// ClusterName names this cluster in the federation. It must be a DNS label and unique
	// among the members; it appears in MeshPeers, EndpointSlice labels and metrics.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterName is immutable: delete and recreate the Mesh to rename the cluster"
	ClusterName string `json:"clusterName"`

	// Network names the network this cluster's workloads live in. Workloads in the same
	// network reach each other directly; traffic to another network goes through that
	// network's east-west gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
	Network string `json:"network"`

	// TrustDomain is the SPIFFE trust domain of workload identities
	// (spiffe://<trustDomain>/ns/<ns>/sa/<sa>). Every member of a federation uses the same one.
	// +kubebuilder:default="cluster.local"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`

	// Locality places the cluster for locality-aware failover.
	// +optional
	Locality Locality `json:"locality,omitempty"`

	// ControlPlane configures the xDS server that programs this cluster's proxies.
	// +kubebuilder:default={}
	// +optional
	ControlPlane ControlPlaneSpec `json:"controlPlane,omitempty"`

	// EastWestGateway configures the gateway that carries traffic from other networks.
	// +kubebuilder:default={}
	// +optional
	EastWestGateway GatewaySpec `json:"eastWestGateway,omitempty"`

	// Injection configures which workloads join the mesh.
	// +optional
	Injection InjectionSpec `json:"injection,omitempty"`

	// ClusterSetIPs configures the virtual IPs this member gives the services it imports.
	// +kubebuilder:default={}
	// +optional
	ClusterSetIPs ClusterSetIPsSpec `json:"clusterSetIPs,omitempty"`

	// DNS configures meshfed-dns, the server of the clusterset.local zone (KEP-1645) that
	// the cluster DNS forwards that zone to.
	// +kubebuilder:default={}
	// +optional
	DNS DNSSpec `json:"dns,omitempty"`
}

// DNSSpec configures meshfed-dns: CoreDNS with meshfed's clusterset plugin, answering
// <service>.<namespace>.svc.clusterset.local from this member's ServiceImports. The cluster
// DNS forwards the zone to the address in status.dnsAddress (docs/user-guide.md).
type DNSSpec struct {
	// Enabled deploys meshfed-dns.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Replicas of the meshfed-dns Deployment.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// TTL of the answers, in seconds.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TTL *int32 `json:"ttl,omitempty"`
}

// ClusterSetIPsSpec configures the ClusterSet IPs (KEP-1645) of the ClusterSetIP services
// this member imports: each gets one address per IP family of its ServiceImport, kept for
// as long as it is imported, written into ServiceImport.spec.ips.
type ClusterSetIPsSpec struct {
	// Ranges are the CIDRs ClusterSet IPs are taken from, at most one per IP family. The
	// defaults are reserved for no network: 243.0.0.0/16 (IPv4 class E, as Submariner's
	// Lighthouse uses) and fd43:4c53::/112 (IPv6 unique local). After a range changes,
	// imports holding an address outside it get a new one.
	// +kubebuilder:default={"243.0.0.0/16","fd43:4c53::/112"}
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(r, isCIDR(r))",message="each range must be a CIDR, e.g. 243.0.0.0/16"
	// +kubebuilder:validation:XValidation:rule="!self.all(r, isCIDR(r)) || self.filter(r, cidr(r).ip().family() == 4).size() <= 1 && self.filter(r, cidr(r).ip().family() == 6).size() <= 1",message="give at most one range per IP family"
	// +kubebuilder:validation:XValidation:rule="!self.all(r, isCIDR(r)) || self.all(r, cidr(r).prefixLength() <= (cidr(r).ip().family() == 4 ? 30 : 126))",message="a range needs at least 4 addresses: /30 for IPv4, /126 for IPv6"
	// +optional
	Ranges []string `json:"ranges,omitempty"`
}

// Locality is a region and zone, as in the topology.kubernetes.io labels.
type Locality struct {
	// Region of the cluster, e.g. eu-west-1.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Region string `json:"region,omitempty"`
	// Zone of the cluster within its region, e.g. eu-west-1a.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Zone string `json:"zone,omitempty"`
}

// ControlPlaneSpec configures the member's xDS server.
type ControlPlaneSpec struct {
	// XDSPort is the port the xDS (ADS) gRPC server listens on.
	// +kubebuilder:default=15010
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	XDSPort int32 `json:"xdsPort,omitempty"`

	// PushDebounce is how long the control plane gathers changes before it pushes.
	// +kubebuilder:default="100ms"
	// +optional
	PushDebounce *metav1.Duration `json:"pushDebounce,omitempty"`

	// MTLS is Strict (every connection between workloads is SPIFFE mTLS, with the
	// certificates of the member's intermediate CA) or Disabled (plaintext).
	// +kubebuilder:default=Strict
	// +optional
	MTLS MTLSMode `json:"mtls,omitempty"`
}

// MTLSMode says whether the data plane uses mutual TLS.
// +kubebuilder:validation:Enum=Strict;Disabled
type MTLSMode string

// mTLS modes.
const (
	MTLSStrict   MTLSMode = "Strict"
	MTLSDisabled MTLSMode = "Disabled"
)

// GatewayServiceType is how the east-west gateway is exposed to other networks.
// +kubebuilder:validation:Enum=LoadBalancer;NodePort;ClusterIP
type GatewayServiceType string

// Gateway Service types.
const (
	GatewayServiceLoadBalancer GatewayServiceType = "LoadBalancer"
	GatewayServiceNodePort     GatewayServiceType = "NodePort"
	GatewayServiceClusterIP    GatewayServiceType = "ClusterIP"
)

// GatewaySpec configures the east-west gateway of a cluster.
type GatewaySpec struct {
	// Enabled deploys the gateway. Clusters that share one network with every other member
	// can run without it.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Replicas of the gateway Deployment.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// ServiceType of the gateway Service.
	// +kubebuilder:default=LoadBalancer
	// +optional
	ServiceType GatewayServiceType `json:"serviceType,omitempty"`

	// Port the gateway accepts mTLS traffic on.
	// +kubebuilder:default=15443
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// AdvertisedAddress overrides the address other clusters use to reach the gateway
	// (an IP or a DNS name), for gateways behind NAT or an external load balancer.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="isIP(self) || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="advertisedAddress must be an IP address or a DNS name"
	// +optional
	AdvertisedAddress string `json:"advertisedAddress,omitempty"`
}

// InjectionSpec selects the workloads that join the mesh.
type InjectionSpec struct {
	// NamespaceSelector picks the namespaces whose workloads are meshed; empty means the
	// namespaces labelled meshfed.io/inject=enabled.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// MeshStatus reports what the member control plane is doing.
type MeshStatus struct {
	// ObservedGeneration is the generation of the spec last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// GatewayAddress is the address other clusters use to reach this cluster's gateway.
	// +optional
	GatewayAddress string `json:"gatewayAddress,omitempty"`

	// DNSAddress is the ClusterIP of the meshfed-dns Service: the address the cluster DNS
	// forwards clusterset.local to.
	// +optional
	DNSAddress string `json:"dnsAddress,omitempty"`

	// ConnectedProxies counts the xDS clients connected to the control plane.
	// +optional
	ConnectedProxies int32 `json:"connectedProxies,omitempty"`

	// SnapshotVersion is the version of the xDS configuration last built.
	// +optional
	SnapshotVersion string `json:"snapshotVersion,omitempty"`

	// Trust reports the intermediate CA and trust bundle this member uses; the hub waits
	// on it during a root rotation.
	// +optional
	Trust *MeshTrustStatus `json:"trust,omitempty"`
}

// MeshTrustStatus is what the member's operator has loaded of meshfed-cacerts.
type MeshTrustStatus struct {
	// IntermediateRequest is the PEM CSR for this member's intermediate CA. Its key stays in
	// this cluster (Secret meshfed-ca-key); the hub has the federation's root sign the CSR
	// and writes back only the certificates (ConfigMap meshfed-intermediate).
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	IntermediateRequest string `json:"intermediateRequest,omitempty"`
	// BundleVersion identifies the trust bundle in meshfed-cacerts.
	// +optional
	BundleVersion string `json:"bundleVersion,omitempty"`
	// IntermediateFingerprint is the SHA-256 fingerprint of the intermediate CA.
	// +optional
	IntermediateFingerprint string `json:"intermediateFingerprint,omitempty"`
	// WorkloadCertificates counts the workload certificates the member's CA Issuer issues.
	// +optional
	WorkloadCertificates int32 `json:"workloadCertificates,omitempty"`
	// WorkloadCertificatesCurrent counts those issued by the current intermediate.
	// +optional
	WorkloadCertificatesCurrent int32 `json:"workloadCertificatesCurrent,omitempty"`
	// Pending names (at most 10) the workload certificates not issued by the current
	// intermediate yet: a Certificate, or an agent's pod.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Pending []string `json:"pending,omitempty"`
}

// Mesh is this cluster's membership in a federated mesh. There is one per cluster, named
// "default".
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=meshfed
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Network",type=string,JSONPath=`.spec.network`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.status.gatewayAddress`
// +kubebuilder:printcolumn:name="Proxies",type=integer,JSONPath=`.status.connectedProxies`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="a cluster has one Mesh and it must be named 'default'"
type Mesh struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshSpec   `json:"spec"`
	Status MeshStatus `json:"status,omitempty"`
}

// MeshList is a list of Meshes.
// +kubebuilder:object:root=true
type MeshList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Mesh `json:"items"`
}
