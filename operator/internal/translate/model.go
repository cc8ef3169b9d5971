package translate

import "time"

// Model is what a member's control plane knows, built from its own API server only.
type Model struct {
	// Cluster, Network and TrustDomain are the member's, from its Mesh.
	Cluster     string
	Network     string
	TrustDomain string
	Region      string
	// MTLS makes every cluster and server listener require SPIFFE mTLS.
	MTLS bool
	// GatewayPort is where this cluster's east-west gateway listens.
	GatewayPort uint32
	// Services are sorted by namespace and name.
	Services []Service
	// Peers are the other members, by cluster name.
	Peers map[string]Peer
}

// Peer is another member, as its MeshPeer describes it.
type Peer struct {
	Network        string
	GatewayAddress string
	GatewayPort    uint32
	Region         string
}

// Service is a service the member's workloads may call: a local Service, an imported one,
// or both.
type Service struct {
	Namespace, Name string
	// Local is set when the Service exists in this cluster (the cluster.local host);
	// Ports are its ports.
	Local bool
	Ports []Port
	// Imported is set when a ServiceImport exists (the clusterset.local host);
	// ImportPorts are its ports.
	Imported    bool
	ImportPorts []Port
	// ClusterSetIPs are the import's ClusterSet IPs in this member (ServiceImport
	// spec.ips): Envoy sidecars route traffic to them as to the clusterset host.
	ClusterSetIPs []string
	// ClientIPAffinity is set when the import's sessionAffinity is ClientIP: a client's
	// calls to the clusterset host keep to one endpoint (a ring hash on the gRPC channel
	// for proxyless clients, on the source address for Envoy sidecars).
	ClientIPAffinity bool
	// ExportedHere is set when this cluster is one of the exporters (the ServiceImport's
	// status.clusters): only then does its east-west gateway let other clusters in.
	ExportedHere bool
	// ServiceAccount, when set, pins the SPIFFE identity the servers must present;
	// otherwise any service account of the namespace is accepted.
	ServiceAccount string
	// Endpoints in every cluster, local and remote, sorted by cluster and then address.
	Endpoints []Endpoint
	Policy    Policy
	// Authz decides who may call the service's servers in this cluster; nil lets every
	// caller with a mesh certificate in.
	Authz *Authz
	// Fault is injected into the calls of this cluster's clients to the service.
	Fault *Fault
	// LocalRoutes and ClusterSetRoutes are the rules of the GRPCRoutes attached to the
	// service's cluster.local host (parent Service) and clusterset host (parent
	// ServiceImport), in precedence order; none keeps the one default route.
	LocalRoutes, ClusterSetRoutes []RouteRule
}

// Fault delays DelayPercent of the calls by Delay, then aborts AbortPercent of them with
// the gRPC status AbortCode.
type Fault struct {
	Delay        time.Duration
	DelayPercent uint32
	AbortCode    uint32
	AbortPercent uint32
}

// Authz is the authorization of a service's callers (ServicePolicies): a call a Deny rule
// matches is refused; otherwise one an Allow rule matches is served; others are refused.
type Authz struct {
	Deny, Allow []AuthzRule
}

// AuthzRule matches calls from any of its principals (none: any caller) to any of its
// methods (none: any method).
type AuthzRule struct {
	// Name identifies the rule: <policy namespace>/<policy name>/<index>.
	Name       string
	Principals []Principal
	// Methods are exact gRPC paths (/pkg.Service/Method) or, ending in "/", prefixes.
	Methods []string
}

// Principal matches a caller's SPIFFE ID: exactly, or by prefix.
type Principal struct {
	Exact, Prefix string
}

// Port is one port of a service.
type Port struct {
	Name string
	Port uint32
	// AppProtocol is the port's appProtocol, "" when unset.
	AppProtocol string
}

// Endpoint is one backend of a service in some cluster.
type Endpoint struct {
	Cluster string
	Network string
	Address string
	// Ports are the ports the backend serves the service's ports on, by the service port's
	// name, sorted by name.
	Ports []Port
	Ready bool
}

// port is the port the endpoint serves the service port named name on.
func (e *Endpoint) port(name string) (uint32, bool) {
	for _, p := range e.Ports {
		if p.Name == name {
			return p.Port, true
		}
	}
	return 0, false
}

// Policy is the traffic policy of a service.
type Policy struct {
	// Failover orders the clusters that take over when the local one has no ready
	// endpoint; clusters not listed come last, by name.
	Failover []string
	// Weights split traffic between clusters; empty means no split.
	Weights []Weight
	// Outlier ejects failing endpoints when set.
	Outlier *Outlier
	// Timeout bounds each call; 0 leaves it to the client.
	Timeout time.Duration
	// Retry retries failed calls when set.
	Retry *Retry
	// CircuitBreaker bounds the calls in flight when set.
	CircuitBreaker *CircuitBreaker
}

// CircuitBreaker bounds a client's calls in flight to a service (MaxRequests) and, for
// Envoy, those it queues for a connection (MaxPending, 0: Envoy's default).
type CircuitBreaker struct {
	MaxRequests, MaxPending uint32
}

// Retry is a retry policy: attempts, the gRPC codes retried (grpc-go's names), and the
// timeout of each attempt (0: none), which only Envoy applies.
type Retry struct {
	Attempts uint32
	On       []string
	PerTry   time.Duration
}

// Weight is one cluster's share of a split.
type Weight struct {
	Cluster string
	Weight  uint32
}

// Outlier configures outlier detection.
type Outlier struct {
	ConsecutiveErrors uint32
	Interval          time.Duration
	BaseEjectionTime  time.Duration
}
