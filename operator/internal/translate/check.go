package translate

import (
	"errors"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// validator is what protoc-gen-validate generates on every xDS message.
type validator interface{ ValidateAll() error }

// Check validates every resource (ValidateAll, and the typed configs packed inside) and
// that every reference resolves: a listener's route, a route's clusters, a cluster's
// endpoints. go-control-plane's Consistent() does not understand api_listener Listeners,
// so the references are checked here.
func Check(r *Resources) error {
	var errs []error
	valid := func(kind, name string, v validator) {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, name, err))
		}
	}
	unpack := func(kind, name string, a *anypb.Any) {
		if a == nil {
			return
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, name, err))
			return
		}
		if v, ok := m.(validator); ok {
			valid(kind, name, v)
		}
	}
	routes := map[string]bool{}
	for _, rc := range r.Routes {
		valid("route", rc.Name, rc)
		routes[rc.Name] = true
	}
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		valid("cluster", c.Name, c)
		unpack("cluster", c.Name, c.GetTransportSocket().GetTypedConfig())
		clusters[c.Name] = true
	}
	assignments := map[string]bool{}
	for _, cla := range r.Endpoints {
		valid("endpoints", cla.ClusterName, cla)
		assignments[cla.ClusterName] = true
		if !clusters[cla.ClusterName] {
			errs = append(errs, fmt.Errorf("endpoints %s: no such cluster", cla.ClusterName))
		}
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !assignments[c.Name] {
			errs = append(errs, fmt.Errorf("cluster %s: no endpoints resource", c.Name))
		}
		if ts := c.GetTransportSocket(); ts != nil {
			var up tlsv3.UpstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&up); err != nil || up.Sni == "" {
				errs = append(errs, fmt.Errorf("cluster %s: the upstream TLS context has no SNI (%v)", c.Name, err))
			}
		}
	}
	for _, l := range r.Listeners {
		valid("listener", l.Name, l)
		if api := l.GetApiListener(); api != nil {
			var hcm hcmv3.HttpConnectionManager
			if err := api.GetApiListener().UnmarshalTo(&hcm); err != nil {
				errs = append(errs, fmt.Errorf("listener %s: %w", l.Name, err))
				continue
			}
			valid("listener", l.Name, &hcm)
			if name := hcm.GetRds().GetRouteConfigName(); !routes[name] {
				errs = append(errs, fmt.Errorf("listener %s: route %q does not exist", l.Name, name))
			}
		}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(slices.Clone(chains), l.DefaultFilterChain)
		}
		for _, fc := range chains {
			unpack("listener", l.Name, fc.GetTransportSocket().GetTypedConfig())
			for _, f := range fc.Filters {
				unpack("listener", l.Name, f.GetTypedConfig())
				var tcp tcpproxyv3.TcpProxy
				if f.GetTypedConfig().MessageIs(&tcp) && f.GetTypedConfig().UnmarshalTo(&tcp) == nil && !clusters[tcp.GetCluster()] {
					errs = append(errs, fmt.Errorf("listener %s: tcp_proxy cluster %q does not exist", l.Name, tcp.GetCluster()))
				}
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().MessageIs(&hcm) && f.GetTypedConfig().UnmarshalTo(&hcm) == nil {
					if rds := hcm.GetRds(); rds != nil && !routes[rds.RouteConfigName] {
						errs = append(errs, fmt.Errorf("listener %s: route %q does not exist", l.Name, rds.RouteConfigName))
					}
					if rc := hcm.GetRouteConfig(); rc != nil {
						errs = append(errs, routeTargets(rc, clusters)...)
					}
				}
			}
		}
	}
	for _, rc := range r.Routes {
		errs = append(errs, routeTargets(rc, clusters)...)
	}
	return errors.Join(errs...)
}

// routeTargets checks that every cluster a route configuration sends to exists.
func routeTargets(rc *routev3.RouteConfiguration, clusters map[string]bool) []error {
	var errs []error
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" && !clusters[c] {
				errs = append(errs, fmt.Errorf("route %s: cluster %q does not exist", rc.Name, c))
			}
			for _, w := range a.GetWeightedClusters().GetClusters() {
				if !clusters[w.Name] {
					errs = append(errs, fmt.Errorf("route %s: weighted cluster %q does not exist", rc.Name, w.Name))
				}
			}
		}
	}
	return errs
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
