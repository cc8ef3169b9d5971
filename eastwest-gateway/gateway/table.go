// Package gateway is meshfed's east-west gateway: it takes its configuration from the
// member's xDS server as standard Envoy resources (a listener with tls_inspector, filter
// chains matching server_names, each a tcp_proxy to an EDS cluster), reads each
// connection's ClientHello for its server name without terminating TLS, and splices the
// connection to a ready local endpoint of that exported service. Anything else is refused
// and counted.
package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// Table is a configuration the gateway routes by: server name → backends.
type Table struct {
	// Version is the xDS versions it was built from.
	Version string
	routes  map[string]*route
}

type route struct {
	cluster  string
	backends []string // host:port
	next     atomic.Uint64
}

// Lookup returns a backend for serverName, round robin; ok is false when the name is not
// routed or has no ready backend.
func (t *Table) Lookup(serverName string) (backend string, ok bool) {
	if t == nil {
		return "", false
	}
	r := t.routes[serverName]
	if r == nil || len(r.backends) == 0 {
		return "", false
	}
	return r.backends[(r.next.Add(1)-1)%uint64(len(r.backends))], true
}

// Routed tells whether serverName is routed at all (possibly with no backend now).
func (t *Table) Routed(serverName string) bool {
	return t != nil && t.routes[serverName] != nil
}

// Names lists the routed server names.
func (t *Table) Names() []string {
	var out []string
	for n := range t.routes {
		out = append(out, n)
	}
	return out
}

// ErrUnsupported marks configuration the gateway cannot serve as given: it is refused
// (NACK) and the last good configuration stays.
var ErrUnsupported = errors.New("unsupported gateway configuration")

// BuildTable builds a table from the gateway's listener and the clusters and endpoints it
// names. Every filter chain must match on server names and hold one tcp_proxy to an EDS
// cluster whose endpoints are given.
func BuildTable(l *listenerv3.Listener, clusters map[string]*clusterv3.Cluster, endpoints map[string]*endpointv3.ClusterLoadAssignment) (*Table, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: no listener", ErrUnsupported)
	}
	t := &Table{routes: map[string]*route{}}
	for i, fc := range l.FilterChains {
		names := fc.GetFilterChainMatch().GetServerNames()
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: filter chain %d of %s matches no server name", ErrUnsupported, i, l.Name)
		}
		if len(fc.Filters) != 1 {
			return nil, fmt.Errorf("%w: filter chain %d of %s has %d filters, want one tcp_proxy", ErrUnsupported, i, l.Name, len(fc.Filters))
		}
		var tcp tcpproxyv3.TcpProxy
		if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(&tcp); err != nil {
			return nil, fmt.Errorf("%w: filter chain %d of %s: %w", ErrUnsupported, i, l.Name, err)
		}
		cluster := tcp.GetCluster()
		if clusters[cluster] == nil {
			return nil, fmt.Errorf("%w: filter chain %d of %s sends to cluster %q, which was not received", ErrUnsupported, i, l.Name, cluster)
		}
		r := &route{cluster: cluster}
		for _, loc := range endpoints[cluster].GetEndpoints() {
			for _, lb := range loc.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil || sa.GetPortValue() == 0 {
					continue
				}
				r.backends = append(r.backends, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
		}
		for _, n := range names {
			if _, dup := t.routes[n]; dup {
				return nil, fmt.Errorf("%w: server name %q is matched by two filter chains", ErrUnsupported, n)
			}
			t.routes[n] = r
		}
	}
	return t, nil
}
