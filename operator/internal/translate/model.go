package translate

import (
	"fmt"

	"strconv"
	"strings"
	"time"

	"github.com/meshfed/meshfed/operator/bootstrap"
)

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
	// ExportedHere is set when this cluster is one of the exporters (the ServiceImport's
	// status.clusters): only then does its east-west gateway let other clusters in.
	ExportedHere bool
	// ServiceAccount, when set, pins the SPIFFE identity the servers must present;
	// otherwise any service account of the namespace is accepted.
	ServiceAccount string
	// Endpoints in every cluster, local and remote, sorted by cluster and then address.
	Endpoints []Endpoint
	Policy    Policy
}

// Port is one port of a service.
type Port struct {
	Name string
	Port uint32
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
}

// Retry is a retry policy: attempts, and the gRPC codes retried (grpc-go's names).
type Retry struct {
	Attempts uint32
	On       []string
}

// Weight is one cluster's share of a split.
type Weight struct {
	Cluster string
	Weight  uint32
}

// Outlier configures outlier detection.
type Outlier struct {
	ConsecutiveErrors uint32
	IntervalSeconds   float64
	BaseEjectionSecs  float64
}

// Host names of a service.
func (s *Service) localHost() string { return s.Name + "." + s.Namespace + ".svc.cluster.local" }
func (s *Service) clustersetHost() string {
	return s.Name + "." + s.Namespace + ".svc.clusterset.local"
}

// ListenerName is the name of the api_listener a client dialing host:port asks for.
func ListenerName(host string, port uint32) string { return host + ":" + strconv.Itoa(int(port)) }

// ClusterName is the Istio-style name of a service port's cluster, also the SNI the
// east-west gateways route on: outbound_.<port>_.<subset>_.<host>, so
// outbound_.<port>_._.<host> without a subset.
func ClusterName(port uint32, subset, host string) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_." + subset + "_." + host
}

// ParseClusterName splits a cluster name (or SNI) into port, subset and host.
func ParseClusterName(name string) (port uint32, subset, host string, err error) {
	rest, ok := strings.CutPrefix(name, "outbound_.")
	if !ok {
		return 0, "", "", fmt.Errorf("%q does not start with \"outbound_.\"", name)
	}
	parts := strings.SplitN(rest, "_.", 3)
	if len(parts) != 3 || parts[2] == "" {
		return 0, "", "", fmt.Errorf("%q is not outbound_.<port>_.<subset>_.<host>", name)
	}
	p, err := strconv.ParseUint(parts[0], 10, 16)
	if err != nil || p == 0 {
		return 0, "", "", fmt.Errorf("%q has no valid port", name)
	}
	return uint32(p), parts[1], parts[2], nil
}

// ServerListenerName is the Listener an xDS gRPC server listening on host:port asks for.
func ServerListenerName(host string, port uint32) string {
	var b strings.Builder
	b.Grow(maxServerListenerName(host))
	writeServerListenerName(&b, host, port)
	return b.String()
}

// maxServerListenerName bounds the length of the server listener names of host.
func maxServerListenerName(host string) int {
	return len(serverListenerPrefix) + len(host) + len("[]:65535") + len(serverListenerSuffix)
}

// writeServerListenerName writes ServerListenerName(host, port) to b: a service's server
// listeners (one per local endpoint) have their names written in one string.
func writeServerListenerName(b *strings.Builder, host string, port uint32) {
	b.WriteString(serverListenerPrefix)
	if strings.IndexByte(host, ':') >= 0 { // IPv6, as net.JoinHostPort writes it
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
	} else {
		b.WriteString(host)
	}
	b.WriteByte(':')
	var digits [10]byte
	b.Write(strconv.AppendUint(digits[:0], uint64(port), 10))
	b.WriteString(serverListenerSuffix)
}

var serverListenerPrefix, serverListenerSuffix, _ = strings.Cut(bootstrap.ServerListenerTemplate, "%s")

// CertProviderInstance is the certificate provider instance the bootstraps define; it
// holds the workload certificate and the member's trust bundle.
const CertProviderInstance = bootstrap.CertProviderInstance

// connectTimeout bounds TCP connect plus TLS handshake to an endpoint.
const connectTimeout = 5 * time.Second

func secondsToDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
