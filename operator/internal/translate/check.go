package translate

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// validator is what protoc-gen-validate generates on every xDS message.
type validator interface{ ValidateAll() error }

// Check validates every resource (ValidateAll, and the typed configs packed inside) and
// that every reference resolves: a listener's route, a route's clusters, a cluster's
// endpoints. go-control-plane's Consistent() does not understand api_listener Listeners,
// so the references are checked here.
func Check(r *Resources) error { return (&Checker{}).Check(r) }

// Checker checks configurations one after the other, as Check does, but validates a
// resource only once: the Translator reuses the very messages of services that did not
// change, and what validating one found (and the references it holds) is remembered
// until a check no longer sees it. References are resolved at every check.
type Checker struct {
	mu    sync.Mutex
	facts map[proto.Message]*facts
	run   uint64
}

// facts are what one resource (or filter chain) is on its own: its validation errors and
// its references.
type facts struct {
	errs     []error
	routes   []string // route configurations it sends to (RDS)
	clusters []string // clusters it sends to
	seen     uint64   // the last check that saw it
}

// Check checks r; see Check.
func (c *Checker) Check(r *Resources) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []proto.Message
	for _, l := range r.Listeners {
		all = append(all, l)
	}
	for _, rc := range r.Routes {
		all = append(all, rc)
	}
	for _, cl := range r.Clusters {
		all = append(all, cl)
	}
	for _, cla := range r.Endpoints {
		all = append(all, cla)
	}
	return resolve(r, all, c.factsOf(all))
}

// factsOf returns the facts of each resource: remembered, or inspected if new (in parallel
// when they are many, as at the first check); a filter chain that many new listeners share
// (every server listener's) is inspected once. It forgets the resources not in all.
func (c *Checker) factsOf(all []proto.Message) []*facts {
	c.run++
	if c.facts == nil {
		c.facts = map[proto.Message]*facts{}
	}
	known := make([]*facts, len(all))
	var fresh []int
	chains := map[*listenerv3.FilterChain]*facts{}
	for i, m := range all {
		if f := c.facts[m]; f != nil {
			known[i] = f
			continue
		}
		fresh = append(fresh, i)
		if l, ok := m.(*listenerv3.Listener); ok {
			for _, fc := range l.FilterChains {
				chains[fc] = nil
			}
		}
	}
	distinct := slices.Collect(maps.Keys(chains))
	inspected := make([]*facts, len(distinct))
	parallel(len(distinct), func(j int) { inspected[j] = inspectChain("filter chain "+distinct[j].Name, distinct[j]) })
	for j, fc := range distinct {
		chains[fc] = inspected[j]
	}
	parallel(len(fresh), func(j int) { known[fresh[j]] = inspect(all[fresh[j]], chains) })
	for i, m := range all {
		known[i].seen = c.run
		c.facts[m] = known[i]
	}
	for m, f := range c.facts {
		if f.seen != c.run {
			delete(c.facts, m)
		}
	}
	return known
}

// resolve reports the resources' own errors and every reference that does not resolve in r.
func resolve(r *Resources, all []proto.Message, known []*facts) error {
	routes, clusters, assignments := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, rc := range r.Routes {
		routes[rc.Name] = true
	}
	for _, cl := range r.Clusters {
		clusters[cl.Name] = true
	}
	for _, cla := range r.Endpoints {
		assignments[cla.ClusterName] = true
	}
	var errs []error
	for i, m := range all {
		f := known[i]
		errs = append(errs, f.errs...)
		for _, name := range f.routes {
			if !routes[name] {
				errs = append(errs, fmt.Errorf("%s: route %q does not exist", describe(m), name))
			}
		}
		for _, name := range f.clusters {
			if !clusters[name] {
				errs = append(errs, fmt.Errorf("%s: cluster %q does not exist", describe(m), name))
			}
		}
		switch m := m.(type) {
		case *endpointv3.ClusterLoadAssignment:
			if !clusters[m.ClusterName] {
				errs = append(errs, fmt.Errorf("endpoints %s: no such cluster", m.ClusterName))
			}
		case *clusterv3.Cluster:
			if m.GetType() == clusterv3.Cluster_EDS && !assignments[m.Name] {
				errs = append(errs, fmt.Errorf("cluster %s: no endpoints resource", m.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// describe names a resource in errors: "listener x", "route x", "cluster x", "endpoints x".
func describe(m proto.Message) string {
	switch m := m.(type) {
	case *listenerv3.Listener:
		return "listener " + m.Name
	case *routev3.RouteConfiguration:
		return "route " + m.Name
	case *clusterv3.Cluster:
		return "cluster " + m.Name
	case *endpointv3.ClusterLoadAssignment:
		return "endpoints " + m.ClusterName
	}
	return fmt.Sprintf("%T", m)
}

// inspect validates one resource and lists its references; chains holds what the filter
// chains of listeners are on their own (inspectChain).
func inspect(m proto.Message, chains map[*listenerv3.FilterChain]*facts) *facts {
	f := &facts{}
	where := describe(m)
	switch m := m.(type) {
	case *routev3.RouteConfiguration:
		f.valid(where, m)
		f.errs = append(f.errs, proxylessRoutes(where, m)...)
		f.clusters = routeTargets(m)
	case *clusterv3.Cluster:
		f.valid(where, m)
		if ts := m.GetTransportSocket(); ts != nil {
			f.unpack(where, ts.GetTypedConfig())
			var up tlsv3.UpstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&up); err != nil || up.Sni == "" {
				f.errs = append(f.errs, fmt.Errorf("%s: the upstream TLS context has no SNI (%w)", where, err))
			}
		}
	case *endpointv3.ClusterLoadAssignment:
		f.valid(where, m)
	case *listenerv3.Listener:
		f.valid(where, m)
		if api := m.GetApiListener(); api != nil {
			var hcm hcmv3.HttpConnectionManager
			if err := api.GetApiListener().UnmarshalTo(&hcm); err != nil {
				f.errs = append(f.errs, fmt.Errorf("%s: %w", where, err))
				return f
			}
			f.valid(where, &hcm)
			f.routes = append(f.routes, hcm.GetRds().GetRouteConfigName())
		}
		for _, fc := range m.FilterChains {
			f.add(chains[fc], where)
		}
		if m.DefaultFilterChain != nil {
			f.add(inspectChain("default filter chain", m.DefaultFilterChain), where)
		}
	}
	return f
}

// inspectChain validates the typed configs of a filter chain (ValidateAll on a listener
// does not look inside them) and lists the routes and clusters its filters send to; its
// errors start with where, and add puts the listener's name before them.
func inspectChain(where string, fc *listenerv3.FilterChain) *facts {
	f := &facts{}
	f.unpack(where, fc.GetTransportSocket().GetTypedConfig())
	for _, flt := range fc.Filters {
		f.unpack(where, flt.GetTypedConfig())
		var tcp tcpproxyv3.TcpProxy
		if flt.GetTypedConfig().MessageIs(&tcp) && flt.GetTypedConfig().UnmarshalTo(&tcp) == nil {
			f.clusters = append(f.clusters, tcp.GetCluster())
		}
		var hcm hcmv3.HttpConnectionManager
		if flt.GetTypedConfig().MessageIs(&hcm) && flt.GetTypedConfig().UnmarshalTo(&hcm) == nil {
			for _, hf := range hcm.HttpFilters {
				f.unpack(where+" HTTP filter "+hf.Name, hf.GetTypedConfig())
			}
			if rds := hcm.GetRds(); rds != nil {
				f.routes = append(f.routes, rds.RouteConfigName)
			}
			if rc := hcm.GetRouteConfig(); rc != nil {
				f.clusters = append(f.clusters, routeTargets(rc)...)
			}
		}
	}
	return f
}

// add takes in what a filter chain of the listener named where is.
func (f *facts) add(chain *facts, where string) {
	for _, err := range chain.errs {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", where, err))
	}
	f.routes = append(f.routes, chain.routes...)
	f.clusters = append(f.clusters, chain.clusters...)
}

func (f *facts) valid(where string, v validator) {
	if err := v.ValidateAll(); err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", where, err))
	}
}

func (f *facts) unpack(where string, a *anypb.Any) {
	if a == nil {
		return
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", where, err))
		return
	}
	if v, ok := inner.(validator); ok {
		f.valid(where, v)
	}
}

// proxylessRoutes finds the routes a gRPC client would refuse: grpc-js rejects the whole
// route configuration for one action other than a route to a cluster or to weighted
// clusters of a positive total, and every call to the service would then fail.
func proxylessRoutes(where string, rc *routev3.RouteConfiguration) []error {
	var errs []error
	for _, vh := range rc.VirtualHosts {
		for i, rt := range vh.Routes {
			a := rt.GetRoute()
			switch {
			case a == nil:
				errs = append(errs, fmt.Errorf("%s: route %d (%s) of %s is not a route to clusters", where, i, rt.Name, vh.Name))
			case a.GetCluster() == "" && a.GetWeightedClusters() == nil:
				errs = append(errs, fmt.Errorf("%s: route %d (%s) of %s names no cluster", where, i, rt.Name, vh.Name))
			case a.GetWeightedClusters() != nil:
				var sum uint64
				for _, w := range a.GetWeightedClusters().GetClusters() {
					sum += uint64(w.GetWeight().GetValue())
				}
				if sum == 0 || sum > math.MaxUint32 {
					errs = append(errs, fmt.Errorf("%s: route %d (%s) of %s: weights sum to %d", where, i, rt.Name, vh.Name, sum))
				}
			}
		}
	}
	return errs
}

// routeTargets lists the clusters a route configuration sends to.
func routeTargets(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" {
				out = append(out, c)
			}
			for _, w := range a.GetWeightedClusters().GetClusters() {
				out = append(out, w.Name)
			}
		}
	}
	return out
}

// CheckEnvoy is Check for an Envoy configuration, plus its secrets: every secret valid and
// every SDS reference resolving.
func CheckEnvoy(r *EnvoyResources) error {
	errs := []error{Check(&r.Resources)}
	secrets := map[string]bool{}
	for _, s := range r.Secrets {
		if err := s.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("secret %s: %w", s.Name, err))
		}
		secrets[s.Name] = true
	}
	refs := func(where string, ctx *tlsv3.CommonTlsContext) {
		names := []string{ctx.GetValidationContextSdsSecretConfig().GetName(), ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName()}
		for _, c := range ctx.GetTlsCertificateSdsSecretConfigs() {
			names = append(names, c.GetName())
		}
		for _, n := range names {
			if n != "" && !secrets[n] {
				errs = append(errs, fmt.Errorf("%s: SDS secret %q does not exist", where, n))
			}
		}
	}
	for _, c := range r.Clusters {
		var up tlsv3.UpstreamTlsContext
		if ts := c.GetTransportSocket(); ts != nil && ts.GetTypedConfig().UnmarshalTo(&up) == nil {
			refs("cluster "+c.Name, up.GetCommonTlsContext())
		}
	}
	for _, l := range r.Listeners {
		for _, fc := range l.FilterChains {
			var down tlsv3.DownstreamTlsContext
			if ts := fc.GetTransportSocket(); ts != nil && ts.GetTypedConfig().UnmarshalTo(&down) == nil {
				refs("listener "+l.Name, down.GetCommonTlsContext())
			}
		}
	}
	return errors.Join(errs...)
}
