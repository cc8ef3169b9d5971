package translate

import (
	"cmp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// endpoints builds the LbEndpoints of one service's endpoints, once per endpoint and port
// name: an endpoint appears in the clusters of both hosts and of every split leg, and its
// address in its server listener. Resources are never modified once built, so they share
// these.
type endpoints struct {
	s *Service
	// runs are where each cluster's endpoints are in s.Endpoints (sorted by cluster).
	runs  []run
	built []builtPort // a service has few port names: a list beats a map
	// messages hold the LbEndpoints built, allocated together for the service.
	messages []endpointMessages
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
	e := &endpoints{s: s}
	for i, ep := range s.Endpoints {
		if n := len(e.runs); n == 0 || e.runs[n-1].cluster != ep.Cluster {
			e.runs = append(e.runs, run{cluster: ep.Cluster, lo: i})
		}
		e.runs[len(e.runs)-1].hi = i + 1
	}
	// Room for the LbEndpoints that are built when needed: those of this cluster's
	// endpoints, and of ready endpoints elsewhere (those behind a gateway never are).
	needed := 0
	for _, ep := range s.Endpoints {
		if ep.Cluster == m.Cluster || (ep.Ready && ep.Network == m.Network) {
			needed += len(ep.Ports)
		}
	}
	e.messages = make([]endpointMessages, 0, needed)
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
		n, _ := ep.port(port)
		if len(e.messages) == cap(e.messages) { // more than counted: not expected, still right
			e.messages = make([]endpointMessages, 0, len(e.s.Endpoints))
		}
		e.messages = e.messages[:len(e.messages)+1]
		lbs[i] = e.messages[len(e.messages)-1].init(ep.Address, n)
	}
	return lbs[i]
}

// endpointMessages are the messages of one healthy LbEndpoint, allocated together with the
// other LbEndpoints of the service. A cold build makes one per endpoint and port, thousands
// of them: one allocation per service instead of seven per endpoint is worth a third of its
// time (BenchmarkTranslate100x100, docs/performance.md).
type endpointMessages struct {
	lb       endpointv3.LbEndpoint
	host     endpointv3.LbEndpoint_Endpoint
	endpoint endpointv3.Endpoint
	address  corev3.Address
	socket   corev3.Address_SocketAddress
	sockAddr corev3.SocketAddress
	port     corev3.SocketAddress_PortValue
}

// init makes m lbEndpoint(socketAddress(address, port), 1) and returns it.
func (m *endpointMessages) init(address string, port uint32) *endpointv3.LbEndpoint {
	m.port.PortValue = port
	m.sockAddr.Address, m.sockAddr.PortSpecifier = address, &m.port
	m.socket.SocketAddress = &m.sockAddr
	m.address.Address = &m.socket
	m.endpoint.Address = &m.address
	m.host.Endpoint = &m.endpoint
	m.lb.HostIdentifier, m.lb.HealthStatus = &m.host, corev3.HealthStatus_HEALTHY
	return &m.lb
}

// sortEndpoints puts endpoints in the model's order: by cluster, then address.
func sortEndpoints(eps []Endpoint) {
	slices.SortFunc(eps, compareEndpoints)
}

func compareEndpoints(a, b Endpoint) int {
	return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Address, b.Address))
}
