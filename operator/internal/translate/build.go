package translate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// Inputs are the member's objects the model is built from.
type Inputs struct {
	Mesh     *meshv1.Mesh
	Services []corev1.Service
	// Slices are the EndpointSlices of local Services (kube's controller) and the remote
	// ones the hub imports.
	Slices  []discoveryv1.EndpointSlice
	Imports []mcsv1beta1.ServiceImport
	Peers   []meshv1.MeshPeer
	// PodNetworks are the ranges this cluster's pod addresses come from (its Nodes'
	// podCIDRs). When known, a local endpoint outside them is left out: it is not a pod.
	PodNetworks []netip.Prefix
	// Policies are the ServicePolicies of the cluster.
	Policies []meshv1.ServicePolicy
	// GRPCRoutes and HTTPRoutes are the cluster's Gateway API routes; those with a Service
	// or a ServiceImport for parent (GAMMA) route the calls to it.
	GRPCRoutes []gatewayv1.GRPCRoute
	HTTPRoutes []gatewayv1.HTTPRoute
}

// BuildModel builds the model from the member's objects. Problems that make part of the
// input unusable (a traffic policy that does not parse) are returned next to the model,
// which goes without that part.
func BuildModel(in Inputs) (*Model, []error) {
	spec := &in.Mesh.Spec
	m := &Model{Cluster: spec.ClusterName, Network: spec.Network, TrustDomain: spec.TrustDomainOrDefault(), Region: spec.Locality.Region,
		MTLS: spec.ControlPlane.MTLS != meshv1.MTLSDisabled, GatewayPort: uint32(spec.GatewayPortOrDefault()), Peers: map[string]Peer{}}
	var problems []error
	for _, p := range in.Peers {
		if p.Spec.ClusterName == m.Cluster {
			continue
		}
		m.Peers[p.Spec.ClusterName] = Peer{Network: p.Spec.Network, GatewayAddress: p.Spec.GatewayAddress,
			GatewayPort: uint32(p.Spec.GatewayPort), Region: p.Spec.Locality.Region}
	}
	type key struct{ ns, name string }
	byKey := map[key]*Service{}
	get := func(ns, name string) *Service {
		k := key{ns, name}
		if s := byKey[k]; s != nil {
			return s
		}
		s := &Service{Namespace: ns, Name: name}
		byKey[k] = s
		return s
	}
	for i := range in.Services {
		svc := &in.Services[i]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		s := get(svc.Namespace, svc.Name)
		s.Local = true
		s.ServiceAccount = svc.Annotations[meshv1.AnnotationServiceAccount]
		s.Ports = ServicePorts(svc)
	}
	for i := range in.Imports {
		imp := &in.Imports[i]
		s := get(imp.Namespace, imp.Name)
		s.Imported = true
		s.ClientIPAffinity = imp.Spec.SessionAffinity == corev1.ServiceAffinityClientIP
		for _, ip := range imp.Spec.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.ClusterSetIPs = append(s.ClusterSetIPs, a.String())
			}
		}
		for _, c := range imp.Status.Clusters {
			s.ExportedHere = s.ExportedHere || c.Cluster == m.Cluster
		}
		s.ImportPorts = ImportPorts(imp)
		if raw := imp.Annotations[meshv1.AnnotationTrafficPolicy]; raw != "" {
			var tp meshv1.TrafficPolicy
			if err := json.Unmarshal([]byte(raw), &tp); err != nil {
				problems = append(problems, fmt.Errorf("ServiceImport %s/%s: annotation %s does not parse, the service goes without its traffic policy: %w", imp.Namespace, imp.Name, meshv1.AnnotationTrafficPolicy, err))
			} else {
				s.Policy = policyOf(&tp)
			}
		}
	}
	// The services this cluster exports, which other clusters reach through its gateway,
	// take local endpoints only from slices the EndpointSlice controller wrote, at addresses
	// of the pod network: anyone allowed to write an EndpointSlice in the namespace could
	// otherwise point them at any address (the cloud's metadata server, the API server).
	// Services only this cluster uses keep every slice (the API server's own slice of
	// default/kubernetes has no manager, for one).
	var foreign, outside []string
	for i := range in.Slices {
		sl := &in.Slices[i]
		cluster, network := m.Cluster, m.Network
		name := sl.Labels[discoveryv1.LabelServiceName]
		manager := sl.Labels[discoveryv1.LabelManagedBy]
		if manager == meshv1.EndpointSliceManager {
			name, cluster, network = sl.Labels[mcsv1beta1.LabelServiceName], sl.Labels[mcsv1beta1.LabelSourceCluster], sl.Labels[meshv1.LabelSourceNetwork]
			if cluster == "" || cluster == m.Cluster {
				continue
			}
		}
		s := byKey[key{sl.Namespace, name}]
		if s == nil || name == "" {
			continue
		}
		guarded := cluster == m.Cluster && s.ExportedHere
		if guarded && manager != meshv1.KubeEndpointSliceManager {
			foreign = append(foreign, fmt.Sprintf("%s/%s (managed by %q)", sl.Namespace, sl.Name, manager))
			continue
		}
		var ports []Port // shared by the slice's endpoints
		for _, p := range sl.Ports {
			if p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				ports = append(ports, Port{Name: ptrString(p.Name), Port: uint32(*p.Port)})
			}
		}
		slices.SortFunc(ports, func(a, b Port) int { return cmp.Compare(a.Name, b.Name) })
		for _, e := range sl.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			for _, addr := range e.Addresses {
				if guarded && !inPodNetwork(addr, in.PodNetworks) {
					outside = append(outside, fmt.Sprintf("%s in %s/%s", addr, sl.Namespace, sl.Name))
					continue
				}
				s.Endpoints = append(s.Endpoints, Endpoint{Cluster: cluster, Network: network, Address: addr, Ports: ports, Ready: ready})
			}
		}
	}
	if len(foreign) > 0 {
		problems = append(problems, fmt.Errorf("%d EndpointSlices of exported services left out, not written by the EndpointSlice controller: %s",
			len(foreign), examples(foreign)))
	}
	if len(outside) > 0 {
		problems = append(problems, fmt.Errorf("%d local endpoints of exported services left out, outside the Nodes' podCIDRs %v: %s", len(outside), in.PodNetworks, examples(outside)))
	}
	// Policies in a stable order (namespace, name): rules keep their order, and of two
	// policies injecting faults into one service the first wins.
	policies := slices.Clone(in.Policies)
	slices.SortFunc(policies, func(a, b meshv1.ServicePolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	tracked := map[*Service]bool{} // services whose traffic a ServicePolicy sets
	for i := range policies {
		p := &policies[i]
		for _, ref := range p.Spec.TargetRefs {
			s := byKey[key{p.Namespace, ref.Name}]
			if s == nil {
				continue
			}
			if p.Spec.Authorization != nil {
				s.Authz = authzOf(p, m.TrustDomain, s.Authz)
			}
			if f := p.Spec.FaultInjection; f != nil && s.Fault == nil {
				s.Fault = faultOf(f)
			}
			if tr := p.Spec.Traffic; tr != nil && !tracked[s] {
				// The member's own policy takes the place of the federation's.
				s.Policy, tracked[s] = trafficOf(tr), true
			}
		}
	}
	lookup := routeLookup{
		service: func(ns, name string) ([]Port, bool) {
			s := byKey[key{ns, name}]
			if s == nil || !s.Local {
				return nil, false
			}
			return s.Ports, true
		},
		imported: func(ns, name string) ([]Port, bool) {
			s := byKey[key{ns, name}]
			if s == nil || !s.Imported {
				return nil, false
			}
			return s.ImportPorts, true
		},
		grpcRoutes: in.GRPCRoutes,
	}
	type hostKey struct {
		key
		host string
	}
	ranked := map[hostKey][]RankedRule{}
	type resolution struct {
		parents []ParentResult
		rules   []RankedRule
	}
	var resolved []resolution
	for i := range in.GRPCRoutes {
		parents, rules := ResolveGRPCRoute(&in.GRPCRoutes[i], lookup)
		resolved = append(resolved, resolution{parents, rules})
	}
	for i := range in.HTTPRoutes {
		parents, rules := ResolveHTTPRoute(&in.HTTPRoutes[i], lookup)
		resolved = append(resolved, resolution{parents, rules})
	}
	for _, res := range resolved {
		parents, rules := res.parents, res.rules
		for _, p := range parents {
			if !p.Applied() {
				continue
			}
			k := hostKey{key{p.Namespace, p.Name}, p.Host}
			for _, r := range rules {
				r.Port = p.Port
				ranked[k] = append(ranked[k], r)
			}
		}
	}
	for k, rules := range ranked {
		slices.SortStableFunc(rules, ruleLess)
		s := byKey[k.key]
		for _, r := range rules {
			if k.host == LocalHost {
				s.LocalRoutes = append(s.LocalRoutes, r.RouteRule)
			} else {
				s.ClusterSetRoutes = append(s.ClusterSetRoutes, r.RouteRule)
			}
		}
	}
	for _, s := range byKey {
		sortEndpoints(s.Endpoints)
		m.Services = append(m.Services, *s)
	}
	slices.SortFunc(m.Services, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return m, problems
}

// ServicePorts are the TCP ports of a Service, the ones the mesh carries.
func ServicePorts(svc *corev1.Service) []Port {
	var out []Port
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, Port{Name: p.Name, Port: uint32(p.Port)})
		}
	}
	return out
}

// ImportPorts are the TCP ports of a ServiceImport.
func ImportPorts(imp *mcsv1beta1.ServiceImport) []Port {
	var out []Port
	for _, p := range imp.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, Port{Name: p.Name, Port: uint32(p.Port), AppProtocol: ptrString(p.AppProtocol)})
		}
	}
	return out
}

// routeLookup answers RouteLookup from the model being built.
type routeLookup struct {
	service, imported func(namespace, name string) ([]Port, bool)
	grpcRoutes        []gatewayv1.GRPCRoute
}

func (l routeLookup) ServicePorts(namespace, name string) ([]Port, bool) {
	return l.service(namespace, name)
}
func (l routeLookup) ImportPorts(namespace, name string) ([]Port, bool) {
	return l.imported(namespace, name)
}

// GRPCRoutes are every GRPCRoute: grpcRouteOn looks only at those of the parent's
// namespace.
func (l routeLookup) GRPCRoutes(string) []gatewayv1.GRPCRoute { return l.grpcRoutes }

// authzOf adds the rules of a ServicePolicy's authorization to authz (nil: none yet);
// namespaces of callers are in the mesh's trust domain td.
func authzOf(p *meshv1.ServicePolicy, td string, authz *Authz) *Authz {
	out := &Authz{}
	if authz != nil {
		*out = *authz
	}
	for i, r := range p.Spec.Authorization.Rules {
		rule := AuthzRule{Name: fmt.Sprintf("%s/%s/%d", p.Namespace, p.Name, i)}
		for _, c := range r.From {
			switch {
			case c.SPIFFEID != "":
				rule.Principals = append(rule.Principals, Principal{Exact: c.SPIFFEID})
			case c.Namespace != "":
				rule.Principals = append(rule.Principals, Principal{Prefix: "spiffe://" + td + "/ns/" + c.Namespace + "/sa/"})
			case c.TrustDomain != "":
				rule.Principals = append(rule.Principals, Principal{Prefix: "spiffe://" + c.TrustDomain + "/"})
			}
		}
		for _, m := range r.Methods {
			rule.Methods = append(rule.Methods, strings.TrimSuffix(m, "*"))
		}
		if r.Action == meshv1.ActionDeny {
			out.Deny = append(out.Deny, rule)
		} else {
			out.Allow = append(out.Allow, rule)
		}
	}
	return out
}

// faultOf is the fault a ServicePolicy injects.
func faultOf(f *meshv1.FaultInjection) *Fault {
	out := &Fault{}
	if d := f.Delay; d != nil {
		out.Delay, out.DelayPercent = d.FixedDelay.Duration, uint32(d.Percentage)
	}
	if a := f.Abort; a != nil {
		out.AbortCode, out.AbortPercent = uint32(a.GRPCStatus), uint32(a.Percentage)
	}
	return out
}

// trafficOf is the policy a ServicePolicy's traffic sets.
func trafficOf(t *meshv1.ServiceTraffic) Policy {
	p := policyOf(&meshv1.TrafficPolicy{Failover: t.Failover, Weights: t.Weights, OutlierDetection: t.OutlierDetection, Timeout: t.Timeout, Retries: t.Retries})
	if cb := t.CircuitBreaker; cb != nil {
		p.CircuitBreaker = &CircuitBreaker{MaxRequests: uint32(cb.MaxRequests)}
		if cb.MaxPendingRequests != nil {
			p.CircuitBreaker.MaxPending = uint32(*cb.MaxPendingRequests)
		}
	}
	return p
}

func policyOf(tp *meshv1.TrafficPolicy) Policy {
	p := Policy{Failover: tp.Failover}
	for _, w := range tp.Weights {
		if w.Weight > 0 {
			p.Weights = append(p.Weights, Weight{Cluster: w.Cluster, Weight: uint32(w.Weight)})
		}
	}
	if tp.Timeout != nil {
		p.Timeout = tp.Timeout.Duration
	}
	if r := tp.Retries; r != nil {
		p.Retry = &Retry{Attempts: uint32(max(r.Attempts, 1)), On: r.On}
		if r.PerTryTimeout != nil {
			p.Retry.PerTry = r.PerTryTimeout.Duration
		}
		if len(p.Retry.On) == 0 {
			p.Retry.On = []string{"unavailable"}
		}
	}
	if o := tp.OutlierDetection; o != nil {
		p.Outlier = &Outlier{ConsecutiveErrors: uint32(o.ConsecutiveErrors), Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second}
		if o.Interval != nil {
			p.Outlier.Interval = o.Interval.Duration
		}
		if o.BaseEjectionTime != nil {
			p.Outlier.BaseEjectionTime = o.BaseEjectionTime.Duration
		}
	}
	return p
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// inPodNetwork tells whether addr is in one of the pod networks; any address is when
// they are not known.
func inPodNetwork(addr string, networks []netip.Prefix) bool {
	if len(networks) == 0 {
		return true
	}
	ip, err := netip.ParseAddr(addr)
	return err == nil && slices.ContainsFunc(networks, func(p netip.Prefix) bool { return p.Contains(ip.Unmap()) })
}

// examples names the first three of what a problem is about.
func examples(what []string) string {
	if len(what) > 3 {
		return strings.Join(what[:3], ", ") + ", ..."
	}
	return strings.Join(what, ", ")
}
