package translate

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Resources are the xDS resources of one node group, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Versions identify the content of each list (VersionListeners...).
	Versions [4]string
}

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
			r.addClient(host, p.Port, routeTo(name))
			r.Clusters = append(r.Clusters, m.cluster(s, name, name, tls))
			r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, name, []string{m.Cluster}))
		}
	}
	if s.Imported {
		order := e.failoverOrder(m)
		for _, p := range s.ImportPorts {
			host := s.clustersetHost()
			name := ClusterName(p.Port, "", host)
			r.Clusters = append(r.Clusters, m.cluster(s, name, name, tls))
			r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, name, order))
			if len(s.Policy.Weights) == 0 {
				r.addClient(host, p.Port, s.Policy.apply(routeTo(name)))
				continue
			}
			// A split: one leg per weighted cluster, each failing over on its own, all
			// with the service's SNI so the gateways route them alike.
			var legs []*routev3.WeightedCluster_ClusterWeight
			for _, w := range s.Policy.Weights {
				leg := ClusterName(p.Port, w.Cluster, host)
				legs = append(legs, &routev3.WeightedCluster_ClusterWeight{Name: leg, Weight: wrapperspb.UInt32(w.Weight)})
				r.Clusters = append(r.Clusters, m.cluster(s, leg, name, tls))
				legOrder := append([]string{w.Cluster}, slices.DeleteFunc(slices.Clone(order), func(c string) bool { return c == w.Cluster })...)
				r.Endpoints = append(r.Endpoints, t.loadAssignment(e, p, leg, legOrder))
			}
			r.addClient(host, p.Port, s.Policy.apply(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: legs}}}))
		}
	}
	var listening []string
	if s.Local {
		listening = r.addServers(t, e)
	}
	return r, listening
}

// addServers adds the server listeners of the service's local endpoints, one per endpoint
// and service port; their messages are allocated together, and so are their names (a
// strings.Builder never changes what it holds, so each name can be taken as it is written).
// It returns the listening address of each, as its name has it.
func (r *Resources) addServers(t *translation, e *endpoints) []string {
	n, size := 0, 0 // counted as the loop below writes them
	for _, ep := range e.s.Endpoints {
		if ep.Cluster != t.Cluster {
			continue
		}
		for _, p := range e.s.Ports {
			if _, ok := ep.port(p.Name); ok {
				n++
				size += maxServerListenerName(ep.Address)
			}
		}
	}
	blocks := make([]listenerBlock, 0, n)
	listed := make([]string, 0, n)
	r.Listeners = slices.Grow(r.Listeners, n)
	var names strings.Builder
	names.Grow(size)
	for i, ep := range e.s.Endpoints {
		if ep.Cluster != t.Cluster {
			continue
		}
		for _, p := range e.s.Ports {
			port, ok := ep.port(p.Name)
			if !ok {
				continue
			}
			start := names.Len()
			writeServerListenerName(&names, ep.Address, port)
			blocks = blocks[:len(blocks)+1]
			name := names.String()[start:]
			listed = append(listed, name[len(serverListenerPrefix):len(name)-len(serverListenerSuffix)])
			r.Listeners = append(r.Listeners, blocks[len(blocks)-1].server(name, e.lb(i, p.Name).GetEndpoint().Address, t.serverChain))
		}
	}
	return listed
}

// apply sets the policy's timeout and retries on a route to the service's clusterset host.
// grpc-go honours max_stream_duration and retry_policy (codes, attempts, backoff).
func (p Policy) apply(a *routev3.RouteAction) *routev3.RouteAction {
	if p.Timeout > 0 {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(p.Timeout)}
	}
	if r := p.Retry; r != nil {
		a.RetryPolicy = &routev3.RetryPolicy{RetryOn: strings.Join(r.On, ","), NumRetries: wrapperspb.UInt32(r.Attempts)}
	}
	return a
}

func routeTo(cluster string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
}

// addClient adds the api_listener and route of a host:port clients dial.
func (r *Resources) addClient(host string, port uint32, action *routev3.RouteAction) {
	name := ListenerName(host, port)
	b := &clientBlock{}
	b.api.ApiListener = packConnectionManager(name)
	b.listener.Name, b.listener.ApiListener = name, &b.api
	b.prefix.Prefix = "/"
	b.match.PathSpecifier = &b.prefix
	b.action.Route = action
	b.route.Match, b.route.Action = &b.match, &b.action
	b.routes[0] = &b.route
	b.domains = [2]string{host, name}
	b.vh.Name, b.vh.Domains, b.vh.Routes = host, b.domains[:], b.routes[:]
	b.vhs[0] = &b.vh
	b.config.Name, b.config.VirtualHosts = name, b.vhs[:]
	r.Listeners = append(r.Listeners, &b.listener)
	r.Routes = append(r.Routes, &b.config)
}

// clientBlock allocates the messages of a client's api_listener and route together.
type clientBlock struct {
	listener listenerv3.Listener
	api      listenerv3.ApiListener
	config   routev3.RouteConfiguration
	vhs      [1]*routev3.VirtualHost
	vh       routev3.VirtualHost
	domains  [2]string
	routes   [1]*routev3.Route
	route    routev3.Route
	match    routev3.RouteMatch
	prefix   routev3.RouteMatch_Prefix
	action   routev3.Route_Route
}

// packConnectionManager packs the HttpConnectionManager of the api_listener name: its
// route configuration of the same name, from ADS. The message is only encoded, so one from
// a pool is filled in.
func packConnectionManager(name string) *anypb.Any {
	c := connectionManagers.Get().(*connectionManager)
	defer connectionManagers.Put(c)
	c.hcm.StatPrefix, c.rds.RouteConfigName = name, name
	return packAny(&c.hcm)
}

type connectionManager struct {
	hcm     hcmv3.HttpConnectionManager
	spec    hcmv3.HttpConnectionManager_Rds
	rds     hcmv3.Rds
	filters [1]*hcmv3.HttpFilter
}

var connectionManagers = sync.Pool{New: func() any {
	c := &connectionManager{}
	c.rds.ConfigSource = adsSource()
	c.spec.Rds = &c.rds
	c.filters[0] = routerFilter()
	c.hcm.RouteSpecifier, c.hcm.HttpFilters = &c.spec, c.filters[:]
	return c
}}

// cluster is an EDS cluster; sni is the name of the service port's main cluster, tls
// what connections to the service's servers present and verify (nil: plaintext).
func (m *Model) cluster(s *Service, name, sni string, tls *tlsv3.CommonTlsContext) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		ConnectTimeout:       sharedConnectTimeout,
	}
	if o := s.Policy.Outlier; o != nil {
		// consecutive_5xx is Envoy's; gRPC (gRFC A50) ejects on failure percentage.
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:                wrapperspb.UInt32(o.ConsecutiveErrors),
			Interval:                       durationFromSeconds(o.IntervalSeconds),
			BaseEjectionTime:               durationFromSeconds(o.BaseEjectionSecs),
			MaxEjectionPercent:             wrapperspb.UInt32(100),
			EnforcingSuccessRate:           wrapperspb.UInt32(0),
			FailurePercentageThreshold:     wrapperspb.UInt32(50),
			EnforcingFailurePercentage:     wrapperspb.UInt32(100),
			FailurePercentageMinimumHosts:  wrapperspb.UInt32(1),
			FailurePercentageRequestVolume: wrapperspb.UInt32(o.ConsecutiveErrors),
		}
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
				eps = append(eps, lbEndpoint(&lbBlock{}, socketAddress(peer.GatewayAddress, peer.GatewayPort), behindGateway))
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

// endpoints builds the LbEndpoints of one service's endpoints, once per endpoint and port
// name: an endpoint appears in the clusters of both hosts and of every split leg, and its
// address in its server listener. Resources are never modified once built, so they share
// these.
type endpoints struct {
	s *Service
	// runs are where each cluster's endpoints are in s.Endpoints (sorted by cluster).
	runs  []run
	built []builtPort // a service has few port names: a list beats a map
	// blocks hold the messages of the endpoints that can be needed (local ones, and ready
	// ones in this network), allocated together; endpoints behind a gateway never are.
	blocks []endpointBlock
}

type endpointBlock struct {
	lb   lbBlock
	addr addressBlock
}

// newEndpoints prepares the endpoints of s; e.s is s with its endpoints in the model's
// order (a copy when they were not, in a model that BuildModel did not make).
func newEndpoints(m *Model, s *Service) *endpoints {
	if !slices.IsSortedFunc(s.Endpoints, compareEndpoints) {
		sorted := *s
		sorted.Endpoints = slices.Clone(s.Endpoints)
		sortEndpoints(sorted.Endpoints)
		s = &sorted
	}
	e := &endpoints{s: s, runs: make([]run, 0, 4)}
	needed := 0
	for i, ep := range s.Endpoints {
		if n := len(e.runs); n == 0 || e.runs[n-1].cluster != ep.Cluster {
			e.runs = append(e.runs, run{cluster: ep.Cluster, lo: i})
		}
		e.runs[len(e.runs)-1].hi = i + 1
		if ep.Cluster == m.Cluster || (ep.Ready && ep.Network == m.Network) {
			needed += len(ep.Ports)
		}
	}
	e.blocks = make([]endpointBlock, 0, needed)
	return e
}

// builtPort is the LbEndpoints built for a port name, by endpoint index.
type builtPort struct {
	name string
	lbs  []*endpointv3.LbEndpoint
}

type run struct {
	cluster string
	lo, hi  int
}

// of is the range of s.Endpoints in cluster.
func (e *endpoints) of(cluster string) (lo, hi int) {
	for _, r := range e.runs {
		if r.cluster == cluster {
			return r.lo, r.hi
		}
	}
	return 0, 0
}

// lb is the LbEndpoint of endpoint i for the port named port, which it must have.
func (e *endpoints) lb(i int, port string) *endpointv3.LbEndpoint {
	k := slices.IndexFunc(e.built, func(b builtPort) bool { return b.name == port })
	if k < 0 {
		k = len(e.built)
		e.built = append(e.built, builtPort{name: port, lbs: make([]*endpointv3.LbEndpoint, len(e.s.Endpoints))})
	}
	lbs := e.built[k].lbs
	if lbs[i] == nil {
		ep := &e.s.Endpoints[i]
		if len(e.blocks) == cap(e.blocks) { // beyond the capacity counted: safe, not expected
			e.blocks = make([]endpointBlock, 0, max(16, len(e.s.Endpoints)))
		}
		// The new block is already zero: reslicing does not copy a zero value over it.
		e.blocks = e.blocks[:len(e.blocks)+1]
		b := &e.blocks[len(e.blocks)-1]
		n, _ := ep.port(port)
		lbs[i] = lbEndpoint(&b.lb, b.addr.init(ep.Address, n), 1)
	}
	return lbs[i]
}

// addressBlock and lbBlock allocate a message and the messages it points to at once.
type addressBlock struct {
	addr corev3.Address
	wrap corev3.Address_SocketAddress
	sock corev3.SocketAddress
	port corev3.SocketAddress_PortValue
}

func (b *addressBlock) init(address string, port uint32) *corev3.Address {
	b.port.PortValue = port
	b.sock.Address, b.sock.PortSpecifier = address, &b.port
	b.wrap.SocketAddress = &b.sock
	b.addr.Address = &b.wrap
	return &b.addr
}

type lbBlock struct {
	lb   endpointv3.LbEndpoint
	wrap endpointv3.LbEndpoint_Endpoint
	ep   endpointv3.Endpoint
}

// lbEndpoint makes b a healthy endpoint at address; weight 1 is the default and left out.
func lbEndpoint(b *lbBlock, address *corev3.Address, weight uint32) *endpointv3.LbEndpoint {
	b.ep.Address = address
	b.wrap.Endpoint = &b.ep
	b.lb.HostIdentifier, b.lb.HealthStatus = &b.wrap, corev3.HealthStatus_HEALTHY
	if weight != 1 {
		b.lb.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return &b.lb
}

// serverFilterChain is what an xDS-enabled gRPC server does with a connection: every RPC
// is served (non_forwarding_action), with mTLS required when the mesh asks.
func (m *Model) serverFilterChain() *listenerv3.FilterChain {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*routev3.VirtualHost{{Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
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

// listenerBlock allocates a server listener with its list of filter chains.
type listenerBlock struct {
	l      listenerv3.Listener
	chains [1]*listenerv3.FilterChain
}

// server makes b the Listener named name an xDS-enabled gRPC server on address asks for.
func (b *listenerBlock) server(name string, address *corev3.Address, chain *listenerv3.FilterChain) *listenerv3.Listener {
	b.chains[0] = chain
	b.l.Name, b.l.Address, b.l.FilterChains = name, address, b.chains[:]
	return &b.l
}

func (r *Resources) sort() {
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
}

// adsSource and routerFilter return messages that every resource shares: resources are
// never modified once built.
func adsSource() *corev3.ConfigSource { return sharedADS }

func routerFilter() *hcmv3.HttpFilter { return sharedRouter }

// Messages that many resources share: resources are never modified once built.
var (
	sharedConnectTimeout = durationpb.New(connectTimeout)
	sharedWeightOne      = wrapperspb.UInt32(1)
	sharedADS            = &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	sharedRouter = &hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: packAny(&routerv3.Router{})}}
)

func transportSocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: wellknown.TransportSocketTls, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: packAny(m)}}
}

func socketAddress(address string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: address, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func durationFromSeconds(s float64) *durationpb.Duration {
	return durationpb.New(secondsToDuration(s))
}

// packAny packs a message into an Any, encoded as the content hashes encode it (with
// go-control-plane's generated marshalers when built with them).
func packAny(m proto.Message) *anypb.Any {
	return &anypb.Any{TypeUrl: anyPrefix + string(m.ProtoReflect().Descriptor().FullName()), Value: appendEncoding(nil, m)}
}

const anyPrefix = "type.googleapis.com/"
