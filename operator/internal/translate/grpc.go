package translate

import (
	"cmp"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Translate builds the resources proxyless gRPC clients and servers of the member need:
// per service port an api_listener for each host clients dial, its route and clusters, the
// clusters' endpoints by priority, and a server Listener for every local endpoint. Each
// list is sorted by name.
func Translate(m *Model) *Resources {
	r := NewTranslator().Translate(m)
	r.sort()
	return r
}

// translateService builds the resources of one service, and the listening addresses
// (host:port) of its server listeners, which are the last of its listeners. It only reads
// t, so services can be translated in parallel.
func (t *translation) translateService(s *Service) (*Resources, []string) {
	m := t.Model
	r := &Resources{}
	e := newEndpoints(m, s)
	s = e.s // its endpoints in the model's order
	// The service's clusters verify its servers alike: one TLS context, encoded in each.
	var tls *tlsv3.CommonTlsContext
	if m.MTLS {
		tls = m.commonTLS(m.serverIdentity(s))
	}
	if s.Local {
		for _, p := range s.Ports {
			host := s.localHost()
			name := ClusterName(p.Port, "", host)
			if rules := ruleRoutes(s.LocalRoutes, p.Port, keep, false); rules != nil {
				r.addClientRoutes(host, p.Port, rules, faultFilters(s)...)
			} else {
				r.addClient(host, p.Port, routeTo(name), faultFilters(s)...)
			}
			r.Clusters = append(r.Clusters, m.cluster(s, name, name, tls))
			r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, name, []string{m.Cluster}))
		}
	}
	if s.Imported {
		order := e.failoverOrder(m)
		for _, p := range s.ImportPorts {
			host := s.clustersetHost()
			name := ClusterName(p.Port, "", host)
			r.Clusters = append(r.Clusters, s.affine(m.cluster(s, name, name, tls)))
			r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, name, order))
			if rules := ruleRoutes(s.ClusterSetRoutes, p.Port, s.clusterSetAction, false); rules != nil {
				r.addClientRoutes(host, p.Port, rules, faultFilters(s)...)
				continue
			}
			if len(s.Policy.Weights) == 0 {
				r.addClient(host, p.Port, s.clusterSetAction(routeTo(name)), faultFilters(s)...)
				continue
			}
			// A split: one leg per weighted cluster, each failing over on its own, all
			// with the service's SNI so the gateways route them alike.
			var legs []*routev3.WeightedCluster_ClusterWeight
			for _, w := range s.Policy.Weights {
				leg := ClusterName(p.Port, w.Cluster, host)
				legs = append(legs, &routev3.WeightedCluster_ClusterWeight{Name: leg, Weight: wrapperspb.UInt32(w.Weight)})
				r.Clusters = append(r.Clusters, s.affine(m.cluster(s, leg, name, tls)))
				legOrder := append([]string{w.Cluster}, slices.DeleteFunc(slices.Clone(order), func(c string) bool { return c == w.Cluster })...)
				r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, leg, legOrder))
			}
			r.addClient(host, p.Port, s.clusterSetAction(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: legs}}}), faultFilters(s)...)
		}
	}
	var listening []string
	if s.Local {
		listening = r.addServers(t, e)
	}
	return r, listening
}

// addServers adds the server listeners of the service's local endpoints, one per endpoint
// and service port, and returns the listening address (host:port) of each.
func (r *Resources) addServers(t *translation, e *endpoints) []string {
	var listening []string
	chain := t.serverChain
	if e.s.Authz != nil {
		chain = t.serverFilterChain(authzFilters(e.s.Authz, refusalLogging(e.s.Namespace+"/"+e.s.Name))...)
	}
	for i, ep := range e.s.Endpoints {
		if ep.Cluster != t.Cluster {
			continue
		}
		for _, p := range e.s.Ports {
			port, ok := ep.port(p.Name)
			if !ok {
				continue
			}
			name := ServerListenerName(ep.Address, port)
			r.Listeners = append(r.Listeners, &listenerv3.Listener{
				Name:         name,
				Address:      e.lb(i, p.Name).GetEndpoint().GetAddress(),
				FilterChains: []*listenerv3.FilterChain{chain},
			})
			listening = append(listening, name[len(serverListenerPrefix):len(name)-len(serverListenerSuffix)])
		}
	}
	return listening
}

// apply sets the policy's timeout and retries on a route to the service's clusterset host.
// gRPC clients honour max_stream_duration and retry_policy (codes, attempts, backoff) and
// ignore per_try_timeout (gRFC A44), which Envoy applies.
func (p Policy) apply(a *routev3.RouteAction) *routev3.RouteAction {
	if p.Timeout > 0 {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(p.Timeout)}
	}
	if r := p.Retry; r != nil {
		a.RetryPolicy = &routev3.RetryPolicy{RetryOn: strings.Join(r.On, ","), NumRetries: wrapperspb.UInt32(r.Attempts)}
		if r.PerTry > 0 {
			a.RetryPolicy.PerTryTimeout = durationpb.New(r.PerTry)
		}
	}
	return a
}

// clusterSetAction is a route action to the service's clusterset host with the service's
// policy and hashing.
func (s *Service) clusterSetAction(a *routev3.RouteAction) *routev3.RouteAction {
	return s.hashed(s.Policy.apply(a))
}

// affine makes a clusterset cluster of a service with ClientIP affinity hash its
// endpoints on a ring (gRFC A42), so that one hash always meets one endpoint.
func (s *Service) affine(c *clusterv3.Cluster) *clusterv3.Cluster {
	if s.ClientIPAffinity {
		c.LbPolicy = clusterv3.Cluster_RING_HASH
	}
	return c
}

// hashed gives a route to a service with ClientIP affinity the hash of its client: gRPC
// hashes the channel (the only client key gRFC A42 offers; it ignores the source address
// policy), Envoy, which has no channel filter state, the source address.
func (s *Service) hashed(a *routev3.RouteAction) *routev3.RouteAction {
	if s.ClientIPAffinity {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{
			{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}},
			{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}},
		}
	}
	return a
}

func routeTo(cluster string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
}

// addClient adds the api_listener and route of a host:port clients dial; filters run
// before the router.
func (r *Resources) addClient(host string, port uint32, action *routev3.RouteAction, filters ...*hcmv3.HttpFilter) {
	r.addClientRoutes(host, port, []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: action},
	}}, filters...)
}

// keep leaves a route action as it is.
func keep(a *routev3.RouteAction) *routev3.RouteAction { return a }

// addClientRoutes is addClient with the routes given.
func (r *Resources) addClientRoutes(host string, port uint32, routes []*routev3.Route, filters ...*hcmv3.HttpFilter) {
	name := ListenerName(host, port)
	r.Listeners = append(r.Listeners, &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: connectionManager(name, filters...)},
	})
	r.Routes = append(r.Routes, &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    host,
			Domains: []string{host, name},
			Routes:  routes,
		}},
	})
}

// connectionManager is the packed HttpConnectionManager of the api_listener name: its
// route configuration of the same name, from ADS, and filters before the router.
func connectionManager(name string, filters ...*hcmv3.HttpFilter) *anypb.Any {
	return packAny(&hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: sharedADS, RouteConfigName: name}},
		HttpFilters:    append(filters, sharedRouter),
	})
}

// cluster is an EDS cluster; sni is the name of the service port's main cluster, tls
// what connections to the service's servers present and verify (nil: plaintext).
func (m *Model) cluster(s *Service, name, sni string, tls *tlsv3.CommonTlsContext) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: sharedADS},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		ConnectTimeout:       sharedConnectTimeout,
	}
	if o := s.Policy.Outlier; o != nil {
		// consecutive_5xx is Envoy's; gRPC (gRFC A50) ejects on failure percentage.
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:                wrapperspb.UInt32(o.ConsecutiveErrors),
			Interval:                       durationpb.New(o.Interval),
			BaseEjectionTime:               durationpb.New(o.BaseEjectionTime),
			MaxEjectionPercent:             wrapperspb.UInt32(100),
			EnforcingSuccessRate:           wrapperspb.UInt32(0),
			FailurePercentageThreshold:     wrapperspb.UInt32(50),
			EnforcingFailurePercentage:     wrapperspb.UInt32(100),
			FailurePercentageMinimumHosts:  wrapperspb.UInt32(1),
			FailurePercentageRequestVolume: wrapperspb.UInt32(o.ConsecutiveErrors),
		}
	}
	if cb := s.Policy.CircuitBreaker; cb != nil {
		// gRPC honours max_requests (gRFC A32); max_pending_requests is Envoy's.
		t := &clusterv3.CircuitBreakers_Thresholds{MaxRequests: wrapperspb.UInt32(cb.MaxRequests)}
		if cb.MaxPending > 0 {
			t.MaxPendingRequests = wrapperspb.UInt32(cb.MaxPending)
		}
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	}
	if tls != nil {
		c.TransportSocket = transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: tls, Sni: sni})
	}
	return c
}

// serverIdentity matches the SPIFFE IDs servers of s may present.
func (m *Model) serverIdentity(s *Service) *matcherv3.StringMatcher {
	prefix := "spiffe://" + m.TrustDomain + "/ns/" + s.Namespace + "/sa/"
	if s.ServiceAccount != "" {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + s.ServiceAccount}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}
}

// commonTLS presents the workload certificate and verifies the peer against the trust
// bundle; san, when set, must match the peer's SPIFFE ID. grpc-go reads only the
// deprecated match_subject_alt_names (it ignores the typed field), so that is where the
// check goes.
func (m *Model) commonTLS(san *matcherv3.StringMatcher) *tlsv3.CommonTlsContext {
	vc := &tlsv3.CertificateValidationContext{
		CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: CertProviderInstance, CertificateName: "ROOTCA"},
	}
	if san != nil {
		vc.MatchSubjectAltNames = []*matcherv3.StringMatcher{san} //nolint:staticcheck // grpc-go reads only this deprecated field
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: CertProviderInstance, CertificateName: "default"},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
	}
}

// failoverOrder is the priority order of clusters for the service: this cluster, then the
// policy's failover list, then the other clusters it has endpoints in, by name.
func (e *endpoints) failoverOrder(m *Model) []string {
	order := []string{m.Cluster}
	for _, c := range e.s.Policy.Failover {
		if !slices.Contains(order, c) {
			order = append(order, c)
		}
	}
	var rest []string
	for _, r := range e.runs { // one per cluster
		if !slices.Contains(order, r.cluster) {
			rest = append(rest, r.cluster)
		}
	}
	slices.Sort(rest)
	return append(order, rest...)
}

// loadAssignment gives a cluster one priority per cluster of order that has ready
// endpoints. Endpoints in another network are replaced by that network's gateway,
// weighted by how many ready endpoints it fronts.
func (t *translation) loadAssignment(e *endpoints, p Port, name string, order []string) *endpointv3.ClusterLoadAssignment {
	m := t.Model
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, cluster := range order {
		behindGateway := uint32(0)
		locality := t.localities[cluster]
		if locality == nil {
			continue // not a member this cluster knows of
		}
		network := locality.SubZone
		lo, hi := e.of(cluster)
		size := hi - lo
		if network != m.Network {
			size = 1 // its gateway
		}
		eps := make([]*endpointv3.LbEndpoint, 0, size)
		for i := lo; i < hi; i++ {
			ep := &e.s.Endpoints[i]
			if _, ok := ep.port(p.Name); !ep.Ready || !ok {
				continue
			}
			if ep.Cluster != m.Cluster && ep.Network != m.Network {
				behindGateway++
				continue
			}
			eps = append(eps, e.lb(i, p.Name))
		}
		if behindGateway > 0 {
			if peer := m.Peers[cluster]; peer.GatewayAddress != "" && peer.GatewayPort != 0 {
				eps = append(eps, lbEndpoint(socketAddress(peer.GatewayAddress, peer.GatewayPort), behindGateway))
				slices.SortStableFunc(eps, func(a, b *endpointv3.LbEndpoint) int {
					return cmp.Compare(a.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(), b.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
				})
			}
		}
		if len(eps) == 0 {
			continue // priorities stay contiguous
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            locality,
			LbEndpoints:         eps,
			LoadBalancingWeight: sharedWeightOne,
			Priority:            uint32(len(cla.Endpoints)),
		})
	}
	return cla
}

// translation is one run of Translate: the model and what every service shares.
type translation struct {
	*Model
	serverChain *listenerv3.FilterChain
	// localities are where each member's endpoints are (its region, the cluster as zone,
	// its network as sub-zone), by cluster, shared by all endpoint sets.
	localities map[string]*corev3.Locality
}

func newTranslation(m *Model) *translation {
	t := &translation{Model: m, serverChain: m.serverFilterChain(), localities: map[string]*corev3.Locality{}}
	for name, p := range m.Peers {
		t.localities[name] = &corev3.Locality{Region: p.Region, Zone: name, SubZone: p.Network}
	}
	t.localities[m.Cluster] = &corev3.Locality{Region: m.Region, Zone: m.Cluster, SubZone: m.Network}
	return t
}

// serverFilterChain is what an xDS-enabled gRPC server does with a connection: every RPC
// that the filters let through (a service's authorization) is served
// (non_forwarding_action), with mTLS required when the mesh asks.
func (m *Model) serverFilterChain(filters ...*hcmv3.HttpFilter) *listenerv3.FilterChain {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*routev3.VirtualHost{{Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			}}}},
		}},
		HttpFilters: append(filters, sharedRouter),
	}
	chain := &listenerv3.FilterChain{
		Name:    "inbound",
		Filters: []*listenerv3.Filter{{Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: packAny(hcm)}}},
	}
	if m.MTLS {
		chain.TransportSocket = transportSocket(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext:         m.commonTLS(nil),
		})
	}
	return chain
}
