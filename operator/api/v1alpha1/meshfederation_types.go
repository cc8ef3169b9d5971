package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshFederationSpec lists the member clusters, the trust root they share and the traffic
// policies that apply across them.
type MeshFederationSpec struct {
	// Members are the clusters of the federation. The hub reaches each through the
	// kubeconfig in a Secret next to this MeshFederation.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Members []Member `json:"members"`

	// Trust selects the root CA the federation shares.
	Trust TrustSpec `json:"trust"`

	// ExportPolicy limits which namespaces may export services.
	// +optional
	ExportPolicy ExportPolicy `json:"exportPolicy,omitempty"`

	// TrafficPolicies set failover order and weights for individual services.
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	// +optional
	TrafficPolicies []TrafficPolicy `json:"trafficPolicies,omitempty"`
}

// Member is one cluster of the federation.
type Member struct {
	// Name of the member; it must equal the clusterName of that cluster's Mesh.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
	Name string `json:"name"`

	// KubeconfigSecretRef names the Secret, in the MeshFederation's namespace, whose key
	// holds a kubeconfig for the member's API server.
	KubeconfigSecretRef SecretKeyRef `json:"kubeconfigSecretRef"`

	// Locality overrides the locality the member's Mesh declares.
	// +optional
	Locality *Locality `json:"locality,omitempty"`
}

// SecretKeyRef points at one key of a Secret in the referrer's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in the Secret's data.
	// +kubebuilder:default=kubeconfig
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// BootstrapMode asks meshfed to create the root CA itself.
// +kubebuilder:validation:Enum=SelfSigned
type BootstrapMode string

// BootstrapSelfSigned makes meshfed create a self-signed root CA through cert-manager.
const BootstrapSelfSigned BootstrapMode = "SelfSigned"

// TrustSpec selects the root of trust.
// +kubebuilder:validation:XValidation:rule="has(self.issuerRef) != has(self.bootstrap)",message="set exactly one of trust.issuerRef (your own cert-manager issuer) or trust.bootstrap: SelfSigned"
type TrustSpec struct {
	// IssuerRef is a cert-manager Issuer (in this namespace) or ClusterIssuer that can sign
	// CA certificates; it signs one intermediate CA per member.
	// +optional
	IssuerRef *IssuerRef `json:"issuerRef,omitempty"`

	// Bootstrap asks meshfed to create a root CA through cert-manager.
	// +optional
	Bootstrap BootstrapMode `json:"bootstrap,omitempty"`

	// IntermediateDuration is the lifetime of each member's intermediate CA.
	// +kubebuilder:default="720h"
	// +optional
	IntermediateDuration *metav1.Duration `json:"intermediateDuration,omitempty"`

	// IntermediateRenewBefore is how long before expiry an intermediate is renewed.
	// +kubebuilder:default="240h"
	// +optional
	IntermediateRenewBefore *metav1.Duration `json:"intermediateRenewBefore,omitempty"`

	// Rotation controls root rotations. Changing issuerRef, or rotation.revision, starts one.
	// +optional
	Rotation RotationSpec `json:"rotation,omitempty"`
}

// RotationSpec controls how the federation moves from one root to the next: the new root
// joins every trust bundle, the intermediates are re-issued under it, and the old root
// leaves last. Setting issuerRef (or revision) back to what it was aborts a rotation.
type RotationSpec struct {
	// Revision names the root generation wanted: changing it (to any new value, a date for
	// example) rotates to a fresh root — a new bootstrapped root, or intermediates
	// re-issued by issuerRef (use it after the issuer's own CA changed).
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Revision string `json:"revision,omitempty"`

	// Paused holds a running rotation at its current stage; unpausing resumes it.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// PropagationDelay is how long each stage waits, once every member reports it done,
	// before the next begins: the time workloads need to load new files (a Secret volume
	// takes up to about a minute to refresh).
	// +kubebuilder:default="60s"
	// +optional
	PropagationDelay *metav1.Duration `json:"propagationDelay,omitempty"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Kind of the issuer.
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=Issuer
	// +optional
	Kind string `json:"kind,omitempty"`
	// Group of the issuer.
	// +kubebuilder:default="cert-manager.io"
	// +optional
	Group string `json:"group,omitempty"`
}

// ExportPolicy limits exports.
type ExportPolicy struct {
	// AllowedNamespaces may export services; empty allows every namespace. An export from
	// any other namespace is not imported and gets Valid=False, reason NamespaceNotAllowed.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	AllowedNamespaces []string `json:"allowedNamespaces,omitempty"`
}

// TrafficPolicy steers one service's traffic across clusters.
// +kubebuilder:validation:XValidation:rule="has(self.failover) || has(self.weights) || has(self.outlierDetection) || has(self.timeout) || has(self.retries)",message="a traffic policy needs at least one of failover, weights, outlierDetection, timeout or retries"
type TrafficPolicy struct {
	// Service the policy applies to.
	Service ServiceRef `json:"service"`

	// Failover is the order in which other clusters take over when the local cluster has no
	// healthy endpoints. Clusters not listed come last.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Failover []string `json:"failover,omitempty"`

	// Weights split the service's traffic between clusters.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.exists(w, w.weight > 0)",message="at least one weight must be greater than 0"
	// +listType=map
	// +listMapKey=cluster
	// +optional
	Weights []ClusterWeight `json:"weights,omitempty"`

	// OutlierDetection ejects endpoints that keep failing.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// Timeout bounds every call to the service (the route's max stream duration).
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Retries retries calls that fail with one of the given gRPC status codes.
	// +optional
	Retries *RetryPolicy `json:"retries,omitempty"`
}

// RetryPolicy retries failed calls.
type RetryPolicy struct {
	// Attempts is how many times a call is retried.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=5
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// On lists the gRPC status codes that are retried.
	// +kubebuilder:default={"unavailable"}
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:items:Enum=unavailable;cancelled;deadline-exceeded;internal;resource-exhausted
	// +listType=set
	// +optional
	On []string `json:"on,omitempty"`
	// PerTryTimeout bounds each attempt, so that a retry goes out while the call's timeout
	// leaves room for it. Envoy sidecars apply it; proxyless gRPC clients (grpc-go,
	// grpc-js) have no per-attempt timeout and ignore it (gRFC A44).
	// +optional
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
}

// ServiceRef names a Service by namespace sameness: the same name in every cluster.
type ServiceRef struct {
	// Name of the Service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Namespace of the Service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
}

// ClusterWeight is one cluster's share of a split.
type ClusterWeight struct {
	// Cluster is a member name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster"`
	// Weight relative to the other clusters' weights.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	Weight int32 `json:"weight"`
}

// OutlierDetection ejects failing endpoints for a while.
type OutlierDetection struct {
	// ConsecutiveErrors before an endpoint is ejected.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +optional
	ConsecutiveErrors int32 `json:"consecutiveErrors,omitempty"`
	// Interval between ejection sweeps.
	// +kubebuilder:default="10s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// BaseEjectionTime is how long an endpoint stays ejected the first time.
	// +kubebuilder:default="30s"
	// +optional
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
}

// MemberStatus is the hub's view of one member.
type MemberStatus struct {
	// Name of the member.
	Name string `json:"name"`
	// Connected tells whether the hub reaches the member's API server.
	Connected bool `json:"connected"`
	// LastSyncTime is when the hub last finished syncing the member.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// Exported counts the services the member exports.
	// +optional
	Exported int32 `json:"exported,omitempty"`
	// Imported counts the services imported into the member.
	// +optional
	Imported int32 `json:"imported,omitempty"`
	// TrustBundleVersion is the version of the trust bundle the member reports holding.
	// +optional
	TrustBundleVersion string `json:"trustBundleVersion,omitempty"`
	// IntermediateFingerprint is the SHA-256 fingerprint of the intermediate CA the member
	// reports issuing with.
	// +optional
	IntermediateFingerprint string `json:"intermediateFingerprint,omitempty"`
	// Message explains a failure, naming what to fix.
	// +optional
	Message string `json:"message,omitempty"`
	// KubeconfigSecretRef is the Secret the hub reaches the member with, remembered here so
	// that a member removed from the spec while the hub was down can still be cleaned.
	// +optional
	KubeconfigSecretRef *SecretKeyRef `json:"kubeconfigSecretRef,omitempty"`
}

// LeavingMember is a member removed from the spec that still holds what the federation
// wrote there: the hub cleans it once it answers.
type LeavingMember struct {
	// Name of the member.
	Name string `json:"name"`
	// KubeconfigSecretRef is the Secret the hub reaches the member with.
	// +optional
	KubeconfigSecretRef *SecretKeyRef `json:"kubeconfigSecretRef,omitempty"`
	// Since is when the hub first saw the member leave.
	Since metav1.Time `json:"since"`
	// Message says why the member is not cleaned yet.
	// +optional
	Message string `json:"message,omitempty"`
}

// MeshFederationStatus reports the federation's health.
type MeshFederationStatus struct {
	// ObservedGeneration is the generation of the spec last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Members reports each member.
	// +listType=map
	// +listMapKey=name
	// +optional
	Members []MemberStatus `json:"members,omitempty"`

	// LeavingMembers were removed from the spec and are not cleaned yet (unreachable, or
	// the hub was down when they left).
	// +listType=map
	// +listMapKey=name
	// +optional
	LeavingMembers []LeavingMember `json:"leavingMembers,omitempty"`

	// ConnectedMembers counts the members the hub reaches.
	// +optional
	ConnectedMembers int32 `json:"connectedMembers,omitempty"`

	// Trust reports the federation's root of trust.
	// +optional
	Trust *TrustStatus `json:"trust,omitempty"`
}

// TrustStatus describes the roots the federation trusts. No key material appears here.
type TrustStatus struct {
	// RootFingerprint is the SHA-256 fingerprint of the root that signs the intermediates.
	// +optional
	RootFingerprint string `json:"rootFingerprint,omitempty"`
	// RootNotAfter is when that root expires.
	// +optional
	RootNotAfter *metav1.Time `json:"rootNotAfter,omitempty"`
	// TrustedRoots are the SHA-256 fingerprints of every root in the members' trust bundle.
	// +optional
	TrustedRoots []string `json:"trustedRoots,omitempty"`
	// BundleVersion identifies the trust bundle the members should hold.
	// +optional
	BundleVersion string `json:"bundleVersion,omitempty"`
	// Root is the root generation the members' intermediates chain to (outside a rotation).
	// +optional
	Root *RootRef `json:"root,omitempty"`
	// Rotation is the rotation in progress, if any.
	// +optional
	Rotation *RotationStatus `json:"rotation,omitempty"`
	// LastGeneration is the highest root generation used so far; a new rotation takes the
	// next one, so no name of a canceled rotation comes back.
	// +optional
	LastGeneration int32 `json:"lastGeneration,omitempty"`
}

// RootRef identifies one root generation: the issuer that signs its intermediates and the
// revision asked for.
type RootRef struct {
	// Generation numbers the federation's roots; intermediates of generation N > 0 are
	// named <federation>-<member>-ca-gN.
	Generation int32 `json:"generation"`
	// IssuerKind is Issuer, ClusterIssuer, or SelfSigned for a bootstrapped root.
	IssuerKind string `json:"issuerKind"`
	// IssuerName is the issuer's name (empty for a bootstrapped root).
	// +optional
	IssuerName string `json:"issuerName,omitempty"`
	// Revision is spec.trust.rotation.revision when the generation began.
	// +optional
	Revision string `json:"revision,omitempty"`
	// Fingerprint is the SHA-256 fingerprint of the root, once known.
	// +optional
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Rotation stages, in order.
const (
	// StageAddRoot adds the new root to every member's trust bundle.
	StageAddRoot = "AddRoot"
	// StageReissue gives every member an intermediate under the new root and re-issues its
	// workload certificates.
	StageReissue = "Reissue"
	// StageDropRoot removes the old root from every trust bundle.
	StageDropRoot = "DropRoot"
)

// RotationStatus is the state of a root rotation; the hub resumes from it after a restart.
type RotationStatus struct {
	// To is the root being rotated to.
	To RootRef `json:"to"`
	// Stage is AddRoot, Reissue or DropRoot.
	// +kubebuilder:validation:Enum=AddRoot;Reissue;DropRoot
	Stage string `json:"stage"`
	// Reversed is set once the rotation was aborted after the new root was in use: it then
	// runs back to the old root through the same stages.
	// +optional
	Reversed bool `json:"reversed,omitempty"`
	// StartTime is when the rotation began.
	StartTime metav1.Time `json:"startTime"`
	// StageTime is when the current stage began.
	StageTime metav1.Time `json:"stageTime"`
	// DoneTime is when every member first reported the current stage done; the next stage
	// begins a propagation delay later.
	// +optional
	DoneTime *metav1.Time `json:"doneTime,omitempty"`
}

// MeshFederation is the hub's description of a federated mesh: its members, trust root and
// traffic policies.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshfed,shortName=mfed
// +kubebuilder:printcolumn:name="Connected",type=integer,JSONPath=`.status.connectedMembers`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshFederation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshFederationSpec   `json:"spec"`
	Status MeshFederationStatus `json:"status,omitempty"`
}

// MeshFederationList is a list of MeshFederations.
// +kubebuilder:object:root=true
type MeshFederationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshFederation `json:"items"`
}
