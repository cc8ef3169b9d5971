package translate

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshfed/meshfed/operator/bootstrap"
)

// Host names of a service.
func (s *Service) localHost() string { return s.Name + "." + s.Namespace + ".svc.cluster.local" }
func (s *Service) clustersetHost() string {
	return s.Name + "." + s.Namespace + ".svc.clusterset.local"
}

// HostPort is the port a connection that names only the service's host in its TLS server
// name (clusterset host, no port: what grpc-js sends) reaches through an east-west
// gateway: the service's only port, or else its only gRPC port (appProtocol grpc, or a
// name "grpc" or "grpc-*" as Istio reads port names). A service with several gRPC ports
// has none: such a client must name the port (docs/user-guide.md, "grpc-js clients").
func HostPort(ports []Port) (Port, bool) {
	if len(ports) == 1 {
		return ports[0], true
	}
	var found []Port
	for _, p := range ports {
		if p.AppProtocol == "grpc" || p.Name == "grpc" || strings.HasPrefix(p.Name, "grpc-") {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return Port{}, false
	}
	return found[0], true
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

// ServerListenerName is the Listener an xDS gRPC server listening on host:port asks for;
// the listening address is written as grpc-go writes it (IPv6 in brackets).
func ServerListenerName(host string, port uint32) string {
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	var digits [10]byte
	return serverListenerPrefix + host + ":" + string(strconv.AppendUint(digits[:0], uint64(port), 10)) + serverListenerSuffix
}

var serverListenerPrefix, serverListenerSuffix, _ = strings.Cut(bootstrap.ServerListenerTemplate, "%s")

// CertProviderInstance is the certificate provider instance the bootstraps define; it
// holds the workload certificate and the member's trust bundle.
const CertProviderInstance = bootstrap.CertProviderInstance

// connectTimeout bounds TCP connect plus TLS handshake to an endpoint.
const connectTimeout = 5 * time.Second
