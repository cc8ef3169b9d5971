package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServicePolicySpec is what meshfed applies to the services it targets, beyond what
// Gateway API routes say (policy attachment, GEP-713). Today: authorization and fault
// injection.
// +kubebuilder:validation:XValidation:rule="has(self.authorization) || has(self.faultInjection) || has(self.traffic)",message="a ServicePolicy sets authorization, faultInjection or traffic"
type ServicePolicySpec struct {
	// TargetRefs are the Services (group "", kind Service) or ServiceImports (group
	// multicluster.x-k8s.io, kind ServiceImport) of this namespace the policy applies to.
	// A Service and its ServiceImport are one service to meshfed: either name works.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	TargetRefs []PolicyTargetReference `json:"targetRefs"`

	// Authorization decides which callers may call the targets' servers. Once a policy
	// with authorization targets a service, calls to it are refused unless a rule allows
	// them; a call any Deny rule matches is refused.
	// +optional
	Authorization *Authorization `json:"authorization,omitempty"`

	// FaultInjection makes the clients of this cluster delay or fail a share of their calls
	// to the targets, to test how callers cope (proxyless gRPC clients apply it).
	// +optional
	FaultInjection *FaultInjection `json:"faultInjection,omitempty"`

	// Traffic shapes how the clients of this cluster call the targets across clusters:
	// failover order, weights, outlier detection, circuit breaking, timeout and retries.
	// It takes the place of the MeshFederation's trafficPolicies entry for the service in
	// this cluster (that field is deprecated).
	// +optional
	Traffic *ServiceTraffic `json:"traffic,omitempty"`
}

// ServiceTraffic is how a cluster's clients call a service.
type ServiceTraffic struct {
	// Failover is the order in which other clusters take over when the local cluster has no
	// healthy endpoints. Clusters not listed come last, by name.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Failover []string `json:"failover,omitempty"`

	// Weights split the calls between clusters, each failing over on its own.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.exists(w, w.weight > 0)",message="at least one weight must be greater than 0"
	// +listType=map
	// +listMapKey=cluster
	// +optional
	Weights []ClusterWeight `json:"weights,omitempty"`

	// OutlierDetection ejects endpoints that keep failing; calls go to the others, and to
	// the next cluster once every endpoint of one is ejected.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// CircuitBreaker bounds the calls in flight from one client to the service.
	// +optional
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`

	// Timeout bounds every call to the service.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Retries retries calls that fail with one of the given gRPC status codes.
	// +optional
	Retries *RetryPolicy `json:"retries,omitempty"`
}

// CircuitBreaker limits the calls in flight; a call over the limit fails at once with
// Unavailable instead of queueing.
type CircuitBreaker struct {
	// MaxRequests is the most calls a client has in flight to the service at once
	// (gRPC clients and Envoy alike; gRFC A32).
	// +kubebuilder:validation:Minimum=1
	MaxRequests int32 `json:"maxRequests"`
	// MaxPendingRequests is the most calls an Envoy sidecar queues while it waits for a
	// connection; gRPC clients have no such queue and ignore it.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
}

// FaultInjection delays and aborts calls: the delay comes first, then the abort.
// +kubebuilder:validation:XValidation:rule="has(self.delay) || has(self.abort)",message="faultInjection sets delay or abort"
type FaultInjection struct {
	// Delay holds a share of the calls for a while before they go out.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`
	// Abort fails a share of the calls with a gRPC status, without sending them.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays a percentage of the calls by a fixed time.
type FaultDelay struct {
	// FixedDelay each delayed call waits.
	FixedDelay metav1.Duration `json:"fixedDelay"`
	// Percentage of the calls delayed, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percentage int32 `json:"percentage"`
}

// FaultAbort fails a percentage of the calls with a gRPC status code.
type FaultAbort struct {
	// GRPCStatus is the code the aborted calls end with (1 to 16, e.g. 14 Unavailable).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	GRPCStatus int32 `json:"grpcStatus"`
	// Percentage of the calls aborted, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percentage int32 `json:"percentage"`
}

// PolicyTargetReference names a Service or ServiceImport in the policy's namespace (Gateway
// API's LocalPolicyTargetReference).
// +kubebuilder:validation:XValidation:rule="(size(self.group) == 0 && self.kind == 'Service') || (self.group == 'multicluster.x-k8s.io' && self.kind == 'ServiceImport')",message="targetRefs name a Service (group \"\") or a ServiceImport (group multicluster.x-k8s.io)"
type PolicyTargetReference struct {
	// Group of the target: "" for a Service, multicluster.x-k8s.io for a ServiceImport.
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group"`
	// Kind of the target: Service or ServiceImport.
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`
	// Name of the target.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Authorization is a list of rules over callers (their SPIFFE IDs, from their mTLS
// certificates) and the methods they call.
type Authorization struct {
	// Rules: a call that matches a Deny rule is refused; else one that matches an Allow
	// rule is served; else it is refused. No rule refuses every call.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationAction says what a rule does with the calls it matches.
// +kubebuilder:validation:Enum=Allow;Deny
type AuthorizationAction string

// The actions of an authorization rule.
const (
	ActionAllow AuthorizationAction = "Allow"
	ActionDeny  AuthorizationAction = "Deny"
)

// AuthorizationRule matches calls from any of its callers to any of its methods.
type AuthorizationRule struct {
	// Action on the calls the rule matches.
	Action AuthorizationAction `json:"action"`

	// From are the callers the rule matches; empty matches every caller that presents a
	// mesh certificate.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	From []Caller `json:"from,omitempty"`

	// Methods are the gRPC methods the rule matches, as "/<package>.<Service>/<Method>", or
	// "/<package>.<Service>/*" for every method of a service; empty matches every method.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(m, m.matches('^/[^/*]+/([^/*]+|[*])$'))",message="a method is /<package>.<Service>/<Method> or /<package>.<Service>/*"
	// +listType=atomic
	// +optional
	Methods []string `json:"methods,omitempty"`
}

// Caller names callers by their SPIFFE ID: exactly one field is set.
// +kubebuilder:validation:XValidation:rule="[has(self.spiffeID), has(self.namespace), has(self.trustDomain)].filter(x, x).size() == 1",message="set exactly one of spiffeID, namespace and trustDomain"
type Caller struct {
	// SPIFFEID is one caller, e.g. spiffe://cluster.local/ns/shop/sa/frontend.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^spiffe://[a-z0-9._-]+(/[^/]+)+$`
	// +optional
	SPIFFEID string `json:"spiffeID,omitempty"`
	// Namespace matches every service account of a namespace, in the mesh's trust domain.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// TrustDomain matches every workload of a trust domain.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
}

// ServicePolicyStatus says whether the policy applies.
type ServicePolicyStatus struct {
	// ObservedGeneration is the generation of the spec last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted (False with reason TargetNotFound while a target does not
	// exist in this cluster).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServicePolicy applies meshfed's policies — authorization of callers, fault injection — to
// Services and ServiceImports of its namespace, in the cluster where it is created: the
// servers of that cluster enforce its authorization on every caller, local or from another
// cluster; the clients of that cluster inject its faults.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshfed
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServicePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ServicePolicySpec   `json:"spec"`
	Status ServicePolicyStatus `json:"status,omitempty"`
}

// ServicePolicyList is a list of ServicePolicies.
// +kubebuilder:object:root=true
type ServicePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServicePolicy `json:"items"`
}
