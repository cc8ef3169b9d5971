package translate

import (
	"cmp"
	"encoding/hex"
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/operator/bootstrap"
)

// Envoy sidecars get the same services, clusters and endpoints as proxyless gRPC, in the
// shape of an iptables-captured sidecar: outbound traffic arrives on a virtual outbound
// listener and is matched to a per-port listener by its original destination; inbound
// traffic arrives on a virtual inbound listener, is TLS-terminated with the workload
// certificate and handed to the application on localhost. Certificates come over SDS,
// pointing at the same three files proxyless workloads read.
const (
	// EnvoyCertDir holds an Envoy sidecar's certificate files (bootstrap.CertFile...).
	EnvoyCertDir = "/etc/meshfed/certs"
	// OutboundPort and InboundPort are where iptables sends a pod's traffic.
	OutboundPort = 15001
	InboundPort  = 15006
	// Secret names served over SDS.
	SecretIdentity = "default"
	SecretRoots    = "ROOTCA"
	// PassthroughCluster takes outbound traffic to destinations the mesh does not know;
	// InboundPassthroughCluster inbound traffic to ports no service uses.
	PassthroughCluster        = "PassthroughCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
)

// EnvoyResources are the resources of Envoy sidecars: Resources and the SDS secrets.
type EnvoyResources struct {
	Resources
	Secrets []*tlsv3.Secret
	// SecretsVersion identifies the secrets' content.
	SecretsVersion string
}

// TranslateEnvoy builds the configuration of the member's Envoy sidecars.
func TranslateEnvoy(m *Model) *EnvoyResources {
	g := Translate(m) // the routes and endpoints are the same
	out := &EnvoyResources{}
	out.Endpoints = g.Endpoints
	faults := envoyFaults(m)
	routes := envoyRouteConfigs(m, g.Routes)
	byPort := map[uint32][]*routev3.VirtualHost{}
	for _, rc := range routes {
		_, port, _ := splitHostPort(rc.Name)
		for _, vh := range rc.VirtualHosts {
			if f := faults[vh.Name]; f != nil {
				// The listener's fault filter has no fault of its own; the virtual host of a
				// service with faults gives it the service's (a copy: the proxyless routes
				// are shared with gRPC clients).
				vh = proto.Clone(vh).(*routev3.VirtualHost)
				vh.TypedPerFilterConfig = map[string]*anypb.Any{wellknown.Fault: f}
			}
			byPort[port] = append(byPort[port], vh)
		}
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	for _, p := range ports {
		name := strconv.Itoa(int(p))
		out.Routes = append(out.Routes, &routev3.RouteConfiguration{Name: name, VirtualHosts: byPort[p]})
		out.Listeners = append(out.Listeners, outboundListener("0.0.0.0_"+name, "0.0.0.0", p, name, len(faults) > 0))
	}
	addClusterSetIPs(m, routes, out, faults)
	out.Listeners = append(out.Listeners, &listenerv3.Listener{
		Name:           "virtualOutbound",
		Address:        socketAddress("0.0.0.0", OutboundPort),
		UseOriginalDst: wrapperspb.Bool(true),
		FilterChains:   []*listenerv3.FilterChain{passthrough(PassthroughCluster)},
	})
	for _, name := range []string{PassthroughCluster, InboundPassthroughCluster} {
		out.Clusters = append(out.Clusters, &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(connectTimeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}, LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED})
	}
	for _, c := range g.Clusters {
		out.Clusters = append(out.Clusters, m.envoyCluster(c))
	}
	inbound := &listenerv3.Listener{
		Name:               "virtualInbound",
		Address:            socketAddress("0.0.0.0", InboundPort),
		DefaultFilterChain: passthrough(InboundPassthroughCluster),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: wellknown.OriginalDestination,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: packAny(&originaldstv3.OriginalDst{})}}},
	}
	for _, p := range localTargetPorts(m) {
		cluster := "inbound|" + strconv.Itoa(int(p)) + "||"
		inbound.FilterChains = append(inbound.FilterChains, m.inboundChain(cluster, cluster, &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p)}))
		out.Clusters = append(out.Clusters, &clusterv3.Cluster{Name: cluster, ConnectTimeout: durationpb.New(connectTimeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.0.1", p)}}}}}}}})
	}
	// A service with authorization gets chains of its own, matched on its pods' addresses
	// too, so more specific than the port's: the RBAC filters run before the router. A pod
	// address and port take the authorization of the first such service (by namespace and
	// name): Envoy refuses two chains with one match.
	claimed := map[string]bool{}
	for i := range m.Services {
		s := &m.Services[i]
		if s.Authz == nil {
			continue
		}
		for _, t := range localTargets(m, s) {
			cluster := "inbound|" + strconv.Itoa(int(t.port)) + "||"
			match := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(t.port)}
			for _, a := range t.addresses {
				if key := net.JoinHostPort(a, strconv.Itoa(int(t.port))); !claimed[key] {
					claimed[key] = true
					match.PrefixRanges = append(match.PrefixRanges, hostRange(a))
				}
			}
			if len(match.PrefixRanges) > 0 {
				inbound.FilterChains = append(inbound.FilterChains, m.inboundChain(cluster+s.Namespace+"/"+s.Name, cluster, match, authzFilters(s.Authz, nil)...))
			}
		}
	}
	out.Listeners = append(out.Listeners, inbound)
	out.Secrets = envoySecrets()
	out.sort()
	slices.SortFunc(out.Secrets, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.Name, b.Name) })
	out.Versions = envoyVersions(out)
	out.SecretsVersion = secretsVersion(out.Secrets)
	return out
}

// outboundListener is a listener that the virtual outbound listener hands connections to
// address:port (it binds nothing itself), with the HTTP routes of RouteConfiguration routes.
// With faults, the HTTP filters start with a fault filter that injects nothing unless a
// virtual host's typed_per_filter_config says so.
func outboundListener(name, address string, port uint32, routes string, faults bool) *listenerv3.Listener {
	filters := []*hcmv3.HttpFilter{sharedRouter}
	if faults {
		filters = append([]*hcmv3.HttpFilter{{Name: wellknown.Fault, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: packAny(&faultv3.HTTPFault{})}}}, filters...)
	}
	return &listenerv3.Listener{
		Name:       name,
		Address:    socketAddress(address, port),
		BindToPort: wrapperspb.Bool(false),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{httpFilter(&hcmv3.HttpConnectionManager{
			StatPrefix:     "outbound_" + name,
			CodecType:      hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: routes, ConfigSource: sharedADS}},
			HttpFilters:    filters,
		})}}},
	}
}

// envoyFaults are the packed fault configurations of the services that have faults, by the
// names of their virtual hosts (the service's hosts).
func envoyFaults(m *Model) map[string]*anypb.Any {
	out := map[string]*anypb.Any{}
	for i := range m.Services {
		s := &m.Services[i]
		if f := faultFilters(s); len(f) > 0 {
			out[s.localHost()] = f[0].GetTypedConfig()
			out[s.clustersetHost()] = f[0].GetTypedConfig()
		}
	}
	return out
}

// envoyRouteConfigs are the proxyless route configurations, but for each host one of whose
// routes is EnvoyOnly: Envoy's has the routes of every rule (copies: the proxyless
// configurations are shared with gRPC clients).
func envoyRouteConfigs(m *Model, proxyless []*routev3.RouteConfiguration) []*routev3.RouteConfiguration {
	own := map[string][]*routev3.Route{}
	for i := range m.Services {
		s := &m.Services[i]
		if s.Local && hasEnvoyOnly(s.LocalRoutes) {
			for _, p := range s.Ports {
				own[ListenerName(s.localHost(), p.Port)] = ruleRoutes(s.LocalRoutes, p.Port, keep, true)
			}
		}
		if s.Imported && hasEnvoyOnly(s.ClusterSetRoutes) {
			for _, p := range s.ImportPorts {
				own[ListenerName(s.clustersetHost(), p.Port)] = ruleRoutes(s.ClusterSetRoutes, p.Port, s.clusterSetAction, true)
			}
		}
	}
	if len(own) == 0 {
		return proxyless
	}
	out := slices.Clone(proxyless)
	for i, rc := range out {
		if routes := own[rc.Name]; routes != nil {
			rc = proto.Clone(rc).(*routev3.RouteConfiguration)
			for _, vh := range rc.VirtualHosts {
				vh.Routes = routes
			}
			out[i] = rc
		}
	}
	return out
}

func hasEnvoyOnly(rules []RouteRule) bool {
	return slices.ContainsFunc(rules, func(r RouteRule) bool { return r.EnvoyOnly })
}

// addClusterSetIPs routes traffic to an import's ClusterSet IPs like traffic to its
// clusterset host: a listener of its own for each address and port, which the original
// destination picks over 0.0.0.0:<port>, with the host's routes for any Host header (a
// client that dialled the address sends the address).
func addClusterSetIPs(m *Model, configs []*routev3.RouteConfiguration, out *EnvoyResources, faults map[string]*anypb.Any) {
	routes := make(map[string]*routev3.RouteConfiguration, len(configs))
	for _, rc := range configs {
		routes[rc.Name] = rc
	}
	for i := range m.Services {
		s := &m.Services[i]
		if !s.Imported {
			continue
		}
		for _, ip := range s.ClusterSetIPs {
			for _, p := range s.ImportPorts {
				host := routes[ListenerName(s.clustersetHost(), p.Port)]
				if host == nil {
					continue
				}
				name := ip + "_" + strconv.Itoa(int(p.Port))
				rc := &routev3.RouteConfiguration{Name: name}
				for _, vh := range host.VirtualHosts {
					vh = proto.Clone(vh).(*routev3.VirtualHost)
					vh.Domains = []string{"*"}
					if f := faults[vh.Name]; f != nil {
						vh.TypedPerFilterConfig = map[string]*anypb.Any{wellknown.Fault: f}
					}
					rc.VirtualHosts = append(rc.VirtualHosts, vh)
				}
				out.Routes = append(out.Routes, rc)
				out.Listeners = append(out.Listeners, outboundListener(name, ip, p.Port, name, len(faults) > 0))
			}
		}
	}
}

// envoyCluster is a proxyless cluster with Envoy's transport security: SDS secrets, the
// typed SAN matcher (Envoy reads it; grpc-go does not) and HTTP/2 for gRPC.
func (m *Model) envoyCluster(c *clusterv3.Cluster) *clusterv3.Cluster {
	e := &clusterv3.Cluster{Name: c.Name, ClusterDiscoveryType: c.ClusterDiscoveryType, EdsClusterConfig: c.EdsClusterConfig,
		LbPolicy: c.LbPolicy, ConnectTimeout: c.ConnectTimeout, OutlierDetection: c.OutlierDetection, CircuitBreakers: c.CircuitBreakers,
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": packAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}}),
		}}
	if ts := c.GetTransportSocket(); ts != nil {
		var up tlsv3.UpstreamTlsContext
		if err := ts.GetTypedConfig().UnmarshalTo(&up); err == nil {
			var san *tlsv3.SubjectAltNameMatcher
			//nolint:staticcheck // the gRPC clusters carry the check in the deprecated field, the only one grpc-go reads
			if ms := up.GetCommonTlsContext().GetValidationContext().GetMatchSubjectAltNames(); len(ms) == 1 {
				san = &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: ms[0]}
			}
			e.TransportSocket = transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: sdsTLS(san), Sni: up.Sni})
		}
	}
	return e
}

// sdsTLS presents the SDS identity and verifies peers against the SDS roots.
func sdsTLS(san *tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext {
	sds := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: sharedADS}
	}
	ctx := &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(SecretIdentity)}}
	if san == nil {
		ctx.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds(SecretRoots)}
		return ctx
	}
	ctx.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san}},
		ValidationContextSdsSecretConfig: sds(SecretRoots),
	}}
	return ctx
}

// envoySecrets point Envoy at the workload's certificate files, re-read when they change.
func envoySecrets() []*tlsv3.Secret {
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: EnvoyCertDir + "/" + name}}
	}
	watched := &corev3.WatchedDirectory{Path: EnvoyCertDir}
	return []*tlsv3.Secret{
		{Name: SecretIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file(bootstrap.CertFile), PrivateKey: file(bootstrap.KeyFile), WatchedDirectory: watched}}},
		{Name: SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file(bootstrap.BundleFile), WatchedDirectory: watched}}},
	}
}

// localTargetPorts are the ports local endpoints serve services on.
func localTargetPorts(m *Model) []uint32 {
	seen := map[uint32]bool{}
	for i := range m.Services {
		for _, t := range localTargets(m, &m.Services[i]) {
			seen[t.port] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// inboundChain terminates the mesh's mTLS of inbound connections matched by match and sends
// their requests, through filters, to cluster (the app's port on 127.0.0.1).
func (m *Model) inboundChain(name, cluster string, match *listenerv3.FilterChainMatch, filters ...*hcmv3.HttpFilter) *listenerv3.FilterChain {
	chain := &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: match,
		Filters: []*listenerv3.Filter{httpFilter(&hcmv3.HttpConnectionManager{
			StatPrefix: cluster,
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: cluster,
				VirtualHosts: []*routev3.VirtualHost{{Name: cluster, Domains: []string{"*"}, Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: routeTo(cluster)},
				}}}}}},
			HttpFilters: append(filters, sharedRouter),
		})},
	}
	if m.MTLS {
		chain.TransportSocket = transportSocket(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext:         sdsTLS(nil),
		})
	}
	return chain
}

// target is a port the local endpoints of a service serve it on, and their addresses.
type target struct {
	port      uint32
	addresses []string
}

// localTargets are the ports this cluster's endpoints of s serve it on, with the
// endpoints' addresses, by port.
func localTargets(m *Model, s *Service) []target {
	byPort := map[uint32][]string{}
	for _, e := range s.Endpoints {
		if e.Cluster != m.Cluster {
			continue
		}
		for _, p := range s.Ports {
			if port, ok := e.port(p.Name); ok && !slices.Contains(byPort[port], e.Address) {
				byPort[port] = append(byPort[port], e.Address)
			}
		}
	}
	out := make([]target, 0, len(byPort))
	for _, p := range slices.Sorted(maps.Keys(byPort)) {
		out = append(out, target{port: p, addresses: byPort[p]})
	}
	return out
}

// hostRange is the CIDR of one address.
func hostRange(addr string) *corev3.CidrRange {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return &corev3.CidrRange{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(32)}
	}
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}
}

// passthrough sends a connection on to its original destination.
func passthrough(cluster string) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{Name: cluster, Filters: []*listenerv3.Filter{{Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: packAny(&tcpproxyv3.TcpProxy{StatPrefix: cluster,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})}}}}
}

func httpFilter(hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: packAny(hcm)}}
}

// envoyVersions hashes each type's content (Envoy configurations are built whole).
func envoyVersions(r *EnvoyResources) [4]string {
	var out [4]string
	for i, h := range contentHashes(&r.Resources) {
		out[i] = strconv.FormatUint(h, 16)
	}
	return out
}

// secretsVersion is the content version of the secrets.
func secretsVersion(secrets []*tlsv3.Secret) string {
	h := fnv.New64a()
	for _, s := range secrets {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// splitHostPort splits a listener name host:port.
func splitHostPort(name string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(name)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 32)
	return host, uint32(p), err
}
