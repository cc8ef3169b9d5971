package translate

import (
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GatewayListener is the name of the east-west gateway's listener.
const GatewayListener = "eastwest"

// TranslateGateway builds the configuration of the member's east-west gateway, in the
// shape an Envoy would take too: one listener with the TLS inspector, and per port of a
// service this cluster exports a filter chain matching the service's SNI
// (outbound_.<port>_._.<svc>.<ns>.svc.clusterset.local) with a tcp_proxy to an EDS cluster
// of the ready local endpoints. The chain of the port HostPort picks also matches the bare
// clusterset host, the name clients that take the TLS server name from their target
// (grpc-js) send. Services this cluster does not export get no chain, so other clusters
// cannot reach them through it.
func TranslateGateway(m *Model) *Resources {
	r := &Resources{}
	l := &listenerv3.Listener{
		Name:    GatewayListener,
		Address: socketAddress("0.0.0.0", m.GatewayPort),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: wellknown.TlsInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: packAny(&tlsinspectorv3.TlsInspector{})}}},
	}
	t := newTranslation(m)
	for i := range m.Services {
		s := &m.Services[i]
		if !s.ExportedHere || !s.Local {
			continue
		}
		e := newEndpoints(m, s)
		hostPort, hostRouted := HostPort(s.ImportPorts)
		for _, p := range s.ImportPorts {
			name := ClusterName(p.Port, "", s.clustersetHost())
			serverNames := []string{name}
			if hostRouted && p.Port == hostPort.Port {
				serverNames = append(serverNames, s.clustersetHost())
			}
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             name,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: serverNames},
				Filters: []*listenerv3.Filter{{Name: wellknown.TCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{
					TypedConfig: packAny(&tcpproxyv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: name}})}}},
			})
			r.Clusters = append(r.Clusters, &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(connectTimeout),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: sharedADS}})
			r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, name, []string{m.Cluster}))
		}
	}
	r.Listeners = []*listenerv3.Listener{l}
	r.sort()
	for i, h := range contentHashes(r) {
		r.Versions[i] = strconv.FormatUint(h, 16)
	}
	return r
}
