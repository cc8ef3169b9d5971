package translate

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// GAMMA: a GRPCRoute or HTTPRoute whose parentRef is a Service (or a ServiceImport)
// replaces, for the calls to that service's host, the one route meshfed programs by
// default. The rules of every route attached to the host go in the Gateway API's order of
// precedence; a call no rule matches fails (no route), as the Gateway API has it.

// RouteReasonConflicted is the Accepted reason of an HTTPRoute on a parent a GRPCRoute also
// attaches to: the HTTPRoute is not applied there (GEP-1426, route types). Gateway API
// v1.6.3 names no constant for it.
const RouteReasonConflicted gatewayv1.RouteConditionReason = "Conflicted"

// ControllerName is how meshfed signs the route statuses it writes.
const ControllerName gatewayv1.GatewayController = "meshfed.io/mesh-controller"

// Host kinds a route attaches to.
const (
	// LocalHost is <svc>.<ns>.svc.cluster.local: a parentRef to a Service.
	LocalHost = "Service"
	// ClusterSetHost is <svc>.<ns>.svc.clusterset.local: a parentRef to a ServiceImport.
	ClusterSetHost = "ServiceImport"
)

// RouteRule is one rule of a GRPCRoute or HTTPRoute attached to a service host.
type RouteRule struct {
	// Name is <route namespace>/<route name>/<rule index>.
	Name string
	// Port, when not 0, limits the rule to that port of the service (parentRef.port).
	Port    uint32
	Matches []RouteMatch // none: every call
	// Backends are the xDS clusters the calls go to, weighted.
	Backends []RouteBackend
	// Timeout bounds each call the rule routes (HTTPRoute timeouts.request); 0 leaves the
	// service's.
	Timeout time.Duration
	// Headers are the changes the rule makes to a call's request headers (a
	// RequestHeaderModifier filter), nil for none. Only Envoy sidecars make them.
	Headers *HeaderChanges
	// Retry retries a request on HTTP status codes (HTTPRoute retry), nil for none; Envoy
	// sidecars only.
	Retry *HTTPRetry
	// TryTimeout bounds each try of a request (HTTPRoute timeouts.backendRequest), 0 for
	// none; Envoy sidecars only.
	TryTimeout time.Duration
	// EnvoyOnly marks the rules of a route some rule of which needs Envoy (Headers, Retry,
	// TryTimeout): proxyless gRPC clients, which cannot do those, leave the whole route out
	// and keep the routes they had.
	EnvoyOnly bool
}

// HTTPRetry retries requests: up to Attempts times (0: Envoy's default), on the HTTP
// status codes (none: on connection failures and resets), Backoff apart (0: Envoy's).
type HTTPRetry struct {
	Attempts uint32
	Codes    []uint32
	Backoff  time.Duration
}

// needsEnvoy tells whether the rule does what only Envoy sidecars do.
func (r *RouteRule) needsEnvoy() bool { return r.Headers != nil || r.Retry != nil || r.TryTimeout > 0 }

// HeaderChanges set, add and remove request headers (names in lower case).
type HeaderChanges struct {
	Set, Add []HeaderValue
	Remove   []string
}

// HeaderValue is a header's name and value.
type HeaderValue struct {
	Name, Value string
}

// RankedRule is a rule with its place among the rules of every route: see ruleLess.
type RankedRule struct {
	RouteRule
	precedence routePrecedence
}

// RouteMatch matches a call by its method and headers, all of which must match.
type RouteMatch struct {
	// Path is the gRPC path to match: exactly (/pkg.Service/Method), by prefix (ending
	// in "/"), or as an RE2 expression when PathRegex is set; "" matches any path.
	Path      string
	PathRegex bool
	Headers   []HeaderMatch
}

// HeaderMatch matches a request header by its value, exactly or as an RE2 expression.
type HeaderMatch struct {
	Name, Value string
	Regex       bool
}

// RouteBackend is one backend of a rule: an xDS cluster and its weight.
type RouteBackend struct {
	Cluster string
	Weight  uint32
}

type routePrecedence struct {
	// specificity is the rule's most specific match, compared element by element, the
	// larger first (a rule without matches is the least specific): for a GRPCRoute
	// {service name length, method name length, headers}, for an HTTPRoute {exact path,
	// path length, method, headers, query parameters}. The two kinds never share a host's
	// port (Conflicted), so only routes of one kind are compared.
	specificity []int
	created     int64
	key         string // namespace/name
	index       int
}

// ruleLess orders rules as the Gateway API orders matches: the more specific (see
// routePrecedence), then the older route, then the route's namespace/name, then the
// rule's place in its route.
func ruleLess(a, b RankedRule) int {
	pa, pb := a.precedence, b.precedence
	return cmp.Or(slices.Compare(pb.specificity, pa.specificity), cmp.Compare(pa.created, pb.created), cmp.Compare(pa.key, pb.key),
		cmp.Compare(pa.index, pb.index))
}

// mostSpecific keeps in p the larger of its specificity and s.
func (p *routePrecedence) mostSpecific(s []int) {
	if slices.Compare(s, p.specificity) > 0 {
		p.specificity = s
	}
}

// RouteLookup tells what a route may name: the ports of a Service of this cluster and
// of a ServiceImport (ok is false when there is none), and the GRPCRoutes of a namespace,
// which an HTTPRoute must not share a parent with.
type RouteLookup interface {
	ServicePorts(namespace, name string) (ports []Port, ok bool)
	ImportPorts(namespace, name string) (ports []Port, ok bool)
	GRPCRoutes(namespace string) []gatewayv1.GRPCRoute
}

// ParentResult is the status of a route for one of its parents meshfed serves.
type ParentResult struct {
	Ref gatewayv1.ParentReference
	// Host is LocalHost or ClusterSetHost; Namespace and Name the parent service's.
	Host, Namespace, Name string
	// Port limits the route to one port of the parent (0: every port).
	Port         uint32
	Accepted     Condition
	ResolvedRefs Condition
}

// Condition is a route condition's status, reason and message.
type Condition struct {
	OK      bool
	Reason  gatewayv1.RouteConditionReason
	Message string
}

// Applied tells whether the route's rules are programmed for this parent.
func (p ParentResult) Applied() bool { return p.Accepted.OK && p.ResolvedRefs.OK }

// ResolveGRPCRoute decides what meshfed makes of route: for each parentRef to a Service or
// ServiceImport (other parents, such as Gateways, are not meshfed's), whether it is
// accepted and its backends resolve, and the rules to program. A route is applied whole
// or not at all: a filter the proxies cannot honour, a backend that does not resolve or a
// parent in another namespace leaves the calls to the parent as they were without it. A
// route that changes request headers (or, for an HTTPRoute, retries on status codes or
// times out each try) is applied by Envoy sidecars, and left out whole by proxyless
// clients, which cannot do that.
func ResolveGRPCRoute(route *gatewayv1.GRPCRoute, lookup RouteLookup) ([]ParentResult, []RankedRule) {
	rules, resolved, unsupported := grpcRules(route, lookup)
	parents := resolveParents(route.Namespace, route.Spec.ParentRefs, lookup, resolved, unsupported)
	noteEnvoyOnly(parents, rules)
	return parents, rules
}

// noteEnvoyOnly says, on the parents that accept an EnvoyOnly route, who applies it.
func noteEnvoyOnly(parents []ParentResult, rules []RankedRule) {
	if len(rules) == 0 || !rules[0].EnvoyOnly {
		return
	}
	for i, p := range parents {
		if p.Accepted.OK {
			parents[i].Accepted.Message = fmt.Sprintf("this cluster's Envoy sidecars route their calls to %s %s/%s by this route; "+
				"proxyless gRPC clients cannot change request headers (RequestHeaderModifier), retry on HTTP status codes (retry) "+
				"or time out each try (timeouts.backendRequest), and keep the routes they had", p.Host, p.Namespace, p.Name)
		}
	}
}

// ResolveHTTPRoute is ResolveGRPCRoute for an HTTPRoute; besides, an HTTPRoute is not
// applied to a parent, or a port of it, that a GRPCRoute attaches to (Conflicted).
func ResolveHTTPRoute(route *gatewayv1.HTTPRoute, lookup RouteLookup) ([]ParentResult, []RankedRule) {
	rules, resolved, unsupported := httpRules(route, lookup)
	parents := resolveParents(route.Namespace, route.Spec.ParentRefs, lookup, resolved, unsupported)
	noteEnvoyOnly(parents, rules)
	for i, p := range parents {
		if !p.Accepted.OK {
			continue
		}
		ports, _ := parentPorts(lookup, p.Host, p.Namespace, p.Name)
		if other, ok := grpcRouteOn(lookup.GRPCRoutes(p.Namespace), p, ports); ok {
			parents[i].Accepted = Condition{Reason: RouteReasonConflicted,
				Message: fmt.Sprintf("GRPCRoute %s/%s attaches to %s %s/%s too, and a GRPCRoute wins over an HTTPRoute; the route is not applied", p.Namespace, other, p.Host, p.Namespace, p.Name)}
		}
	}
	return parents, rules
}

// grpcRouteOn names a route of routes attached to the parent of p (ports: the parent's)
// on p's port, or on every port when either takes them all.
func grpcRouteOn(routes []gatewayv1.GRPCRoute, p ParentResult, ports []Port) (string, bool) {
	for _, r := range routes {
		if r.Namespace != p.Namespace {
			continue
		}
		for _, ref := range r.Spec.ParentRefs {
			host, ok := parentHost(ref)
			consumer := ref.Namespace != nil && string(*ref.Namespace) != r.Namespace // not applied
			if !ok || consumer || host != p.Host || string(ref.Name) != p.Name {
				continue
			}
			if port, ok := parentPort(ref, ports); ok && (port == 0 || p.Port == 0 || port == p.Port) {
				return r.Name, true
			}
		}
	}
	return "", false
}

// resolveParents is the status of a route of namespace for each of its parents that is
// meshfed's, given whether its backends resolve and what of it is unsupported.
func resolveParents(namespace string, refs []gatewayv1.ParentReference, lookup RouteLookup, resolved Condition, unsupported string) []ParentResult {
	var parents []ParentResult
	for _, ref := range refs {
		host, ok := parentHost(ref)
		if !ok {
			continue
		}
		p := ParentResult{Ref: ref, Host: host, Namespace: namespace, Name: string(ref.Name), ResolvedRefs: resolved,
			Accepted: Condition{OK: true, Reason: gatewayv1.RouteReasonAccepted,
				Message: fmt.Sprintf("this cluster's clients route their calls to %s %s/%s by this route", host, namespace, ref.Name)}}
		if ref.Namespace != nil && string(*ref.Namespace) != namespace {
			p.Namespace = string(*ref.Namespace)
			p.Accepted = Condition{Reason: gatewayv1.RouteReasonUnsupportedValue,
				Message: "a route for the clients of another namespace (a consumer route) is not supported: create the route in namespace " + p.Namespace}
		} else if ports, found := parentPorts(lookup, host, p.Namespace, p.Name); !found {
			p.Accepted = Condition{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: fmt.Sprintf("%s %s/%s does not exist in this cluster", host, p.Namespace, p.Name)}
		} else if port, ok := parentPort(ref, ports); !ok {
			p.Accepted = Condition{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: fmt.Sprintf("%s %s/%s has no such port (parentRef port or sectionName)", host, p.Namespace, p.Name)}
		} else if unsupported != "" {
			p.Accepted = Condition{Reason: gatewayv1.RouteReasonUnsupportedValue, Message: unsupported + "; the route is not applied"}
		} else {
			p.Port = port
		}
		parents = append(parents, p)
	}
	return parents
}

// parentHost tells which host a parentRef names, if it is meshfed's.
func parentHost(ref gatewayv1.ParentReference) (string, bool) {
	group, kind := "", "Gateway"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	switch {
	case group == "" && kind == "Service":
		return LocalHost, true
	case group == mcsv1beta1.GroupName && kind == "ServiceImport":
		return ClusterSetHost, true
	}
	return "", false
}

func parentPorts(lookup RouteLookup, host, namespace, name string) ([]Port, bool) {
	if host == LocalHost {
		return lookup.ServicePorts(namespace, name)
	}
	return lookup.ImportPorts(namespace, name)
}

// parentPort is the port a parentRef limits the route to (0: every port), by its port or
// sectionName (a port name); ok is false when the service has no such port.
func parentPort(ref gatewayv1.ParentReference, ports []Port) (uint32, bool) {
	if ref.Port == nil && ref.SectionName == nil {
		return 0, true
	}
	for _, p := range ports {
		if (ref.Port == nil || uint32(*ref.Port) == p.Port) && (ref.SectionName == nil || string(*ref.SectionName) == p.Name) {
			return p.Port, true
		}
	}
	return 0, false
}

// ruleResolution collects, over a route's rules, whether every backendRef resolves (the
// ResolvedRefs condition) and what the proxies cannot honour.
type ruleResolution struct {
	resolved    Condition
	unsupported string
}

func newRuleResolution() *ruleResolution {
	return &ruleResolution{resolved: Condition{OK: true, Reason: gatewayv1.RouteReasonResolvedRefs, Message: "every backendRef resolves"}}
}

func (rr *ruleResolution) refuse(format string, args ...any) {
	rr.unsupported = fmt.Sprintf(format, args...)
}

// backends resolves the backendRefs of rule i (their filters given by filtered) into
// rule.
func (rr *ruleResolution) backends(namespace string, i int, refs []gatewayv1.BackendRef, filtered []bool, rule *RankedRule, lookup RouteLookup) {
	for j, ref := range refs {
		if filtered[j] {
			rr.refuse("a backendRef of rule %d has filters, which meshfed's proxyless clients do not apply", i)
		}
		backend, cond := resolveBackend(namespace, ref, lookup)
		if !cond.OK {
			rr.resolved = cond
			continue
		}
		if backend.Weight > 0 {
			rule.Backends = append(rule.Backends, backend)
		}
	}
	if len(rule.Backends) == 0 && rr.resolved.OK {
		// The Gateway API fails such calls (500); grpc-js refuses a whole route
		// configuration holding a direct response, so the route is not applied.
		rr.refuse("rule %d has no backendRef of weight above 0, and meshfed's proxyless clients cannot fail its calls as the Gateway API asks", i)
	}
}

// headerChanges reads the filters of rule i into rule: modifiers holds, for each filter,
// its RequestHeaderModifier, or nil for a filter of another type, which meshfed refuses.
func (rr *ruleResolution) headerChanges(i int, modifiers []*gatewayv1.HTTPHeaderFilter, rule *RankedRule) {
	for _, m := range modifiers {
		if m == nil {
			rr.refuse("rule %d has a filter other than RequestHeaderModifier, which meshfed's clients do not apply", i)
			continue
		}
		if rule.Headers == nil {
			rule.Headers = &HeaderChanges{}
		}
		h := rule.Headers
		for _, v := range m.Set {
			h.Set = append(h.Set, HeaderValue{Name: strings.ToLower(string(v.Name)), Value: v.Value})
		}
		for _, v := range m.Add {
			h.Add = append(h.Add, HeaderValue{Name: strings.ToLower(string(v.Name)), Value: v.Value})
		}
		for _, name := range m.Remove {
			h.Remove = append(h.Remove, strings.ToLower(name))
		}
	}
	if h := rule.Headers; h != nil {
		for _, name := range slices.Concat(headerNames(h.Set), headerNames(h.Add), h.Remove) {
			if name == "host" {
				rr.refuse("rule %d changes the host header, which Envoy does not let a route change", i)
			}
		}
		// The standard channel's schema lets any value in; Envoy refuses control
		// characters, and one such value would stop every update of its configuration.
		for _, v := range slices.Concat(h.Set, h.Add) {
			if strings.ContainsFunc(v.Value, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) {
				rr.refuse("rule %d: the value of header %s has a control character: use printable characters, spaces and tabs", i, v.Name)
			}
		}
	}
}

func headerNames(vs []HeaderValue) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}

// envoyOnly marks every rule of a route EnvoyOnly when one of them needs Envoy.
func envoyOnly(rules []RankedRule) []RankedRule {
	if !slices.ContainsFunc(rules, func(r RankedRule) bool { return r.needsEnvoy() }) {
		return rules
	}
	for i := range rules {
		rules[i].EnvoyOnly = true
	}
	return rules
}

func newRankedRule(meta metav1.ObjectMeta, i int) RankedRule {
	key := meta.Namespace + "/" + meta.Name
	return RankedRule{RouteRule: RouteRule{Name: fmt.Sprintf("%s/%d", key, i)},
		precedence: routePrecedence{created: meta.CreationTimestamp.Unix(), key: key, index: i}}
}

// grpcRules translates a GRPCRoute's rules. resolved says whether every backendRef
// resolves (the ResolvedRefs condition); unsupported names what the proxies cannot honour.
func grpcRules(route *gatewayv1.GRPCRoute, lookup RouteLookup) (rules []RankedRule, resolved Condition, unsupported string) {
	rr := newRuleResolution()
	for i, r := range route.Spec.Rules {
		if r.SessionPersistence != nil {
			rr.refuse("rule %d asks for session persistence, which meshfed does not apply", i)
		}
		rule := newRankedRule(route.ObjectMeta, i)
		modifiers := make([]*gatewayv1.HTTPHeaderFilter, len(r.Filters))
		for j, f := range r.Filters {
			if f.Type == gatewayv1.GRPCRouteFilterRequestHeaderModifier {
				modifiers[j] = f.RequestHeaderModifier
			}
		}
		rr.headerChanges(i, modifiers, &rule)
		refs, filtered := make([]gatewayv1.BackendRef, len(r.BackendRefs)), make([]bool, len(r.BackendRefs))
		for j, b := range r.BackendRefs {
			refs[j], filtered[j] = b.BackendRef, len(b.Filters) > 0
		}
		rr.backends(route.Namespace, i, refs, filtered, &rule, lookup)
		for _, m := range r.Matches {
			match, err := grpcMatch(m)
			if err != nil {
				rr.refuse("rule %d: %v", i, err)
				continue
			}
			rule.Matches = append(rule.Matches, match)
			var svc, method int
			if m.Method != nil {
				svc, method = len(ptrString(m.Method.Service)), len(ptrString(m.Method.Method))
			}
			rule.precedence.mostSpecific([]int{svc, method, len(m.Headers)})
		}
		rules = append(rules, rule)
	}
	return envoyOnly(rules), rr.resolved, rr.unsupported
}

// httpRules is grpcRules for an HTTPRoute. No client honours query parameter or HTTP method
// matches (gRPC calls have no query and are all POSTs), so meshfed refuses them; a request
// timeout bounds each call. Retries on HTTP status codes and a backend request timeout make
// the route Envoy's only, as a RequestHeaderModifier does.
func httpRules(route *gatewayv1.HTTPRoute, lookup RouteLookup) (rules []RankedRule, resolved Condition, unsupported string) {
	rr := newRuleResolution()
	for i, r := range route.Spec.Rules {
		if r.SessionPersistence != nil {
			rr.refuse("rule %d asks for session persistence, which meshfed does not apply", i)
		}
		rule := newRankedRule(route.ObjectMeta, i)
		if r.Retry != nil {
			rule.Retry = &HTTPRetry{}
			if r.Retry.Attempts != nil {
				rule.Retry.Attempts = uint32(max(*r.Retry.Attempts, 1))
			}
			for _, c := range r.Retry.Codes {
				rule.Retry.Codes = append(rule.Retry.Codes, uint32(c))
			}
			if r.Retry.Backoff != nil {
				d, err := time.ParseDuration(string(*r.Retry.Backoff))
				if err != nil {
					rr.refuse("rule %d: retry.backoff %q: %v", i, *r.Retry.Backoff, err)
				}
				rule.Retry.Backoff = d
			}
		}
		if r.Timeouts != nil && r.Timeouts.BackendRequest != nil {
			d, err := time.ParseDuration(string(*r.Timeouts.BackendRequest))
			if err != nil {
				rr.refuse("rule %d: timeouts.backendRequest %q: %v", i, *r.Timeouts.BackendRequest, err)
			}
			rule.TryTimeout = d
		}
		modifiers := make([]*gatewayv1.HTTPHeaderFilter, len(r.Filters))
		for j, f := range r.Filters {
			if f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier {
				modifiers[j] = f.RequestHeaderModifier
			}
		}
		rr.headerChanges(i, modifiers, &rule)
		if r.Timeouts != nil && r.Timeouts.Request != nil {
			d, err := time.ParseDuration(string(*r.Timeouts.Request))
			if err != nil {
				rr.refuse("rule %d: timeouts.request %q: %v", i, *r.Timeouts.Request, err)
			}
			rule.Timeout = d
		}
		refs, filtered := make([]gatewayv1.BackendRef, len(r.BackendRefs)), make([]bool, len(r.BackendRefs))
		for j, b := range r.BackendRefs {
			refs[j], filtered[j] = b.BackendRef, len(b.Filters) > 0
		}
		rr.backends(route.Namespace, i, refs, filtered, &rule, lookup)
		for _, m := range r.Matches {
			match, specificity, err := httpMatch(m)
			if err != nil {
				rr.refuse("rule %d: %v", i, err)
				continue
			}
			rule.Matches = append(rule.Matches, match)
			rule.precedence.mostSpecific(specificity)
		}
		rules = append(rules, rule)
	}
	return envoyOnly(rules), rr.resolved, rr.unsupported
}

// httpMatch translates an HTTPRouteMatch, and gives its specificity (routePrecedence).
// A PathPrefix matches whole path elements, as the Gateway API has it: /foo matches /foo
// and /foo/bar, not /foobar.
func httpMatch(m gatewayv1.HTTPRouteMatch) (RouteMatch, []int, error) {
	var out RouteMatch
	if len(m.QueryParams) > 0 {
		return out, nil, errors.New("query parameter matches: gRPC calls have no query")
	}
	if m.Method != nil {
		return out, nil, errors.New("an HTTP method match: gRPC calls are all POSTs")
	}
	exact, pathChars := 0, 0
	if p := m.Path; p != nil {
		value := ptrString(p.Value)
		pathChars = len(value)
		switch {
		case p.Type != nil && *p.Type == gatewayv1.PathMatchExact:
			out.Path, exact = value, 1
		case p.Type != nil && *p.Type == gatewayv1.PathMatchRegularExpression:
			out.Path, out.PathRegex = value, true
			if _, err := regexp.Compile(value); err != nil {
				return out, nil, fmt.Errorf("path %q: %w", value, err)
			}
		case value == "" || value == "/":
			// every path
		case strings.HasSuffix(value, "/"):
			out.Path = value
		default:
			out.Path, out.PathRegex = regexp.QuoteMeta(value)+"(/.*)?", true
		}
	}
	for _, h := range m.Headers {
		hm := HeaderMatch{Name: strings.ToLower(string(h.Name)), Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			hm.Regex = true
			if _, err := regexp.Compile(h.Value); err != nil {
				return out, nil, fmt.Errorf("header %s: %w", h.Name, err)
			}
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, []int{exact, pathChars, 0, len(m.Headers), 0}, nil
}

// resolveBackend finds the xDS cluster of a backendRef: a Service of this cluster (its
// cluster.local host) or a ServiceImport (its clusterset host, failing over across the
// exporting clusters), in the route's namespace, at the given port.
func resolveBackend(namespace string, ref gatewayv1.BackendRef, lookup RouteLookup) (RouteBackend, Condition) {
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	name := string(ref.Name)
	if ref.Namespace != nil && string(*ref.Namespace) != namespace {
		return RouteBackend{}, Condition{Reason: gatewayv1.RouteReasonRefNotPermitted,
			Message: fmt.Sprintf("backendRef %s/%s is in another namespace: meshfed routes to the route's namespace only", *ref.Namespace, name)}
	}
	var ports []Port
	var found bool
	var host string
	switch {
	case group == "" && kind == "Service":
		ports, found = lookup.ServicePorts(namespace, name)
		host = name + "." + namespace + ".svc.cluster.local"
	case group == mcsv1beta1.GroupName && kind == "ServiceImport":
		ports, found = lookup.ImportPorts(namespace, name)
		host = name + "." + namespace + ".svc.clusterset.local"
	default:
		return RouteBackend{}, Condition{Reason: gatewayv1.RouteReasonInvalidKind,
			Message: fmt.Sprintf("backendRef %s: kind %q of group %q is not a Service or a ServiceImport (%s)", name, kind, group, mcsv1beta1.GroupName)}
	}
	if !found {
		return RouteBackend{}, Condition{Reason: gatewayv1.RouteReasonBackendNotFound, Message: fmt.Sprintf("backendRef %s %s/%s does not exist in this cluster", kind, namespace, name)}
	}
	if ref.Port == nil {
		return RouteBackend{}, Condition{Reason: gatewayv1.RouteReasonBackendNotFound, Message: fmt.Sprintf("backendRef %s %s/%s has no port", kind, namespace, name)}
	}
	if !slices.ContainsFunc(ports, func(p Port) bool { return p.Port == uint32(*ref.Port) }) {
		return RouteBackend{}, Condition{Reason: gatewayv1.RouteReasonBackendNotFound, Message: fmt.Sprintf("backendRef %s %s/%s has no port %d", kind, namespace, name, *ref.Port)}
	}
	weight := uint32(1)
	if ref.Weight != nil {
		weight = uint32(*ref.Weight)
	}
	return RouteBackend{Cluster: ClusterName(uint32(*ref.Port), "", host), Weight: weight}, Condition{OK: true}
}

// grpcMatch translates a GRPCRouteMatch.
func grpcMatch(m gatewayv1.GRPCRouteMatch) (RouteMatch, error) {
	var out RouteMatch
	if mm := m.Method; mm != nil {
		svc, method := ptrString(mm.Service), ptrString(mm.Method)
		if mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression {
			out.PathRegex = true
			out.Path = "/" + cmp.Or(svc, "[^/]+") + "/" + cmp.Or(method, "[^/]+")
			if _, err := regexp.Compile(out.Path); err != nil {
				return out, fmt.Errorf("method match %q: %w", out.Path, err)
			}
		} else {
			switch {
			case svc != "" && method != "":
				out.Path = "/" + svc + "/" + method
			case svc != "":
				out.Path = "/" + svc + "/"
			case method != "":
				out.Path, out.PathRegex = "/[^/]+/"+regexp.QuoteMeta(method), true
			}
		}
	}
	for _, h := range m.Headers {
		hm := HeaderMatch{Name: strings.ToLower(string(h.Name)), Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression {
			hm.Regex = true
			if _, err := regexp.Compile(h.Value); err != nil {
				return out, fmt.Errorf("header %s: %w", h.Name, err)
			}
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

// ruleRoutes are the xDS routes of a host's rules for port, in precedence order: one per
// match (a rule without matches matches every call). decorate adds the service's policy
// (timeout, retries, hashing) to each action. For envoy, the routes of EnvoyOnly rules
// are in, with their header changes, retry and per-try timeout; for proxyless clients
// they are left out.
func ruleRoutes(rules []RouteRule, port uint32, decorate func(*routev3.RouteAction) *routev3.RouteAction, envoy bool) []*routev3.Route {
	var out []*routev3.Route
	for _, r := range rules {
		if (r.Port != 0 && r.Port != port) || (r.EnvoyOnly && !envoy) {
			continue
		}
		matches := r.Matches
		if len(matches) == 0 {
			matches = []RouteMatch{{}}
		}
		for _, m := range matches {
			action := decorate(backendsAction(r.Backends))
			if r.Timeout > 0 {
				action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(r.Timeout)}
			}
			if envoy {
				httpRetry(action, r.Retry, r.TryTimeout)
			}
			route := &routev3.Route{Name: r.Name, Match: routeMatch(m), Action: &routev3.Route_Route{Route: action}}
			if h := r.Headers; h != nil {
				route.RequestHeadersToRemove = h.Remove
				for _, v := range h.Set {
					route.RequestHeadersToAdd = append(route.RequestHeadersToAdd, headerOption(v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
				}
				for _, v := range h.Add {
					route.RequestHeadersToAdd = append(route.RequestHeadersToAdd, headerOption(v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
				}
			}
			out = append(out, route)
		}
	}
	return out
}

// httpRetry gives an Envoy route action (built for this route alone) the rule's retry, in
// place of the service's, and its timeout per try: on the retry policy there is, or on one
// without retries.
func httpRetry(a *routev3.RouteAction, retry *HTTPRetry, tryTimeout time.Duration) {
	if retry != nil {
		p := &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,reset"}
		if len(retry.Codes) > 0 {
			p.RetryOn, p.RetriableStatusCodes = "retriable-status-codes", retry.Codes
		}
		if retry.Attempts > 0 {
			p.NumRetries = wrapperspb.UInt32(retry.Attempts)
		}
		if retry.Backoff > 0 {
			p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(retry.Backoff)}
		}
		a.RetryPolicy = p
	}
	if tryTimeout > 0 {
		if a.RetryPolicy == nil {
			a.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
		}
		a.RetryPolicy.PerTryTimeout = durationpb.New(tryTimeout)
	}
}

func headerOption(v HeaderValue, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: v.Name, Value: v.Value}, AppendAction: action}
}

// backendsAction sends to the rule's backends, of which ResolveGRPCRoute left at least one.
func backendsAction(backends []RouteBackend) *routev3.RouteAction {
	if len(backends) == 1 {
		return routeTo(backends[0].Cluster)
	}
	var legs []*routev3.WeightedCluster_ClusterWeight
	for _, b := range backends {
		legs = append(legs, &routev3.WeightedCluster_ClusterWeight{Name: b.Cluster, Weight: wrapperspb.UInt32(b.Weight)})
	}
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: legs}}}
}

func routeMatch(m RouteMatch) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch {
	case m.Path == "":
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	case m.PathRegex:
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path}}
	case strings.HasSuffix(m.Path, "/"):
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Path}
	default:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	}
	for _, h := range m.Headers {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}}
		if h.Regex {
			sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}}
		}
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{Name: h.Name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}})
	}
	return out
}
