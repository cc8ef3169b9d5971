package translate

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

type fakeLookup map[string][]Port // "Service/ns/name" or "ServiceImport/ns/name"

func (l fakeLookup) ServicePorts(ns, name string) ([]Port, bool) {
	p, ok := l["Service/"+ns+"/"+name]
	return p, ok
}

func (l fakeLookup) ImportPorts(ns, name string) ([]Port, bool) {
	p, ok := l["ServiceImport/"+ns+"/"+name]
	return p, ok
}

func (fakeLookup) GRPCRoutes(string) []gatewayv1.GRPCRoute { return nil }

func importParent(name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Group: ptr.To(gatewayv1.Group(mcsv1beta1.GroupName)), Kind: ptr.To(gatewayv1.Kind("ServiceImport")), Name: gatewayv1.ObjectName(name)}
}

func backend(group, kind, name string, port int32) gatewayv1.GRPCBackendRef {
	return gatewayv1.GRPCBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
		Group: ptr.To(gatewayv1.Group(group)), Kind: ptr.To(gatewayv1.Kind(kind)), Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(port))}}}
}

// TestResolveGRPCRoute: the statuses a route gets for its parents, with the standard
// reasons, and a route applied only whole.
func TestResolveGRPCRoute(t *testing.T) {
	lookup := fakeLookup{
		"Service/shop/echo":              {{Name: "grpc", Port: 9000}},
		"ServiceImport/shop/echo":        {{Name: "grpc", Port: 9000}},
		"ServiceImport/shop/echo-canary": {{Name: "grpc", Port: 9000}},
	}
	ok := []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{backend(mcsv1beta1.GroupName, "ServiceImport", "echo-canary", 9000)}}}
	for _, tc := range []struct {
		name         string
		parents      []gatewayv1.ParentReference
		rules        []gatewayv1.GRPCRouteRule
		wantParents  int
		wantAccepted gatewayv1.RouteConditionReason
		wantResolved gatewayv1.RouteConditionReason
		wantApplied  bool
	}{
		{"a ServiceImport parent and backend", []gatewayv1.ParentReference{importParent("echo")}, ok, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonResolvedRefs, true},
		{"a Service parent", []gatewayv1.ParentReference{{Kind: ptr.To(gatewayv1.Kind("Service")), Group: ptr.To(gatewayv1.Group("")), Name: "echo"}}, ok, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonResolvedRefs, true},
		{"a Gateway parent is not meshfed's", []gatewayv1.ParentReference{{Name: "public"}}, ok, 0, "", "", false},
		{"a missing parent", []gatewayv1.ParentReference{importParent("billing")}, ok, 1, gatewayv1.RouteReasonNoMatchingParent, gatewayv1.RouteReasonResolvedRefs, false},
		{"a parent port the service lacks", []gatewayv1.ParentReference{func() gatewayv1.ParentReference {
			p := importParent("echo")
			p.Port = ptr.To(gatewayv1.PortNumber(80))
			return p
		}()}, ok, 1, gatewayv1.RouteReasonNoMatchingParent, gatewayv1.RouteReasonResolvedRefs, false},
		{"a parent in another namespace", []gatewayv1.ParentReference{func() gatewayv1.ParentReference {
			p := importParent("echo")
			p.Namespace = ptr.To(gatewayv1.Namespace("other"))
			return p
		}()}, ok, 1, gatewayv1.RouteReasonUnsupportedValue, gatewayv1.RouteReasonResolvedRefs, false},
		{"a filter other than RequestHeaderModifier", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{{
			Filters:     []gatewayv1.GRPCRouteFilter{{Type: gatewayv1.GRPCRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Remove: []string{"x-a"}}}},
			BackendRefs: ok[0].BackendRefs}}, 1, gatewayv1.RouteReasonUnsupportedValue, gatewayv1.RouteReasonResolvedRefs, false},
		{"a rule without a backend", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{{}}, 1, gatewayv1.RouteReasonUnsupportedValue, gatewayv1.RouteReasonResolvedRefs, false},
		{"a missing backend", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{
			{BackendRefs: []gatewayv1.GRPCBackendRef{backend(mcsv1beta1.GroupName, "ServiceImport", "missing", 9000)}}}, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonBackendNotFound, false},
		{"a backend port the service lacks", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{
			{BackendRefs: []gatewayv1.GRPCBackendRef{backend("", "Service", "echo", 80)}}}, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonBackendNotFound, false},
		{"a backend of another kind", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{
			{BackendRefs: []gatewayv1.GRPCBackendRef{backend("example.com", "Bucket", "echo", 9000)}}}, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonInvalidKind, false},
		{"a backend in another namespace", []gatewayv1.ParentReference{importParent("echo")}, []gatewayv1.GRPCRouteRule{
			{BackendRefs: []gatewayv1.GRPCBackendRef{func() gatewayv1.GRPCBackendRef {
				b := backend("", "Service", "echo", 9000)
				b.Namespace = ptr.To(gatewayv1.Namespace("other"))
				return b
			}()}}}, 1, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonRefNotPermitted, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"},
				Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: tc.parents}, Rules: tc.rules}}
			parents, _ := ResolveGRPCRoute(route, lookup)
			if len(parents) != tc.wantParents {
				t.Fatalf("%d parents, want %d", len(parents), tc.wantParents)
			}
			for _, p := range parents {
				if p.Accepted.Reason != tc.wantAccepted || p.ResolvedRefs.Reason != tc.wantResolved || p.Applied() != tc.wantApplied {
					t.Errorf("Accepted %+v, ResolvedRefs %+v, applied %v; want %s, %s, %v", p.Accepted, p.ResolvedRefs, p.Applied(), tc.wantAccepted, tc.wantResolved, tc.wantApplied)
				}
				if !p.Accepted.OK && !strings.Contains(p.Accepted.Message, " ") {
					t.Errorf("no message for a refusal: %+v", p.Accepted)
				}
			}
		})
	}
}

// TestRoutePrecedence: rules of every route attached to one host go in the Gateway API's
// order: the more specific method, then more headers, then the older route.
func TestRoutePrecedence(t *testing.T) {
	lookup := fakeLookup{"ServiceImport/shop/echo": {{Name: "grpc", Port: 9000}}}
	be := []gatewayv1.GRPCBackendRef{backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000)}
	method := func(svc, m string) *gatewayv1.GRPCMethodMatch {
		return &gatewayv1.GRPCMethodMatch{Service: ptr.To(svc), Method: ptr.To(m)}
	}
	old := gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "z-old", CreationTimestamp: metav1.NewTime(time.Unix(100, 0))},
		Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
			Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: be}}}}
	young := gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a-young", CreationTimestamp: metav1.NewTime(time.Unix(200, 0))},
		Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
			Rules: []gatewayv1.GRPCRouteRule{
				{BackendRefs: be},
				{Matches: []gatewayv1.GRPCRouteMatch{{Headers: []gatewayv1.GRPCHeaderMatch{{Name: "x-canary", Value: "true"}}}}, BackendRefs: be},
				{Matches: []gatewayv1.GRPCRouteMatch{{Method: method("grpc.testing.TestService", "UnaryCall")}}, BackendRefs: be},
			}}}
	var ranked []RankedRule
	for _, r := range []gatewayv1.GRPCRoute{young, old} {
		_, rules := ResolveGRPCRoute(&r, lookup)
		ranked = append(ranked, rules...)
	}
	slices.SortStableFunc(ranked, ruleLess)
	var got []string
	for _, r := range ranked {
		got = append(got, r.Name)
	}
	want := "shop/a-young/2 shop/a-young/1 shop/z-old/0 shop/a-young/0"
	if strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// TestResolveHTTPRoute: an HTTPRoute attached to a ServiceImport becomes rules the
// proxyless clients honour (paths by whole elements, headers, the request timeout); what
// they cannot honour leaves the route unapplied, with the reason.
func TestResolveHTTPRoute(t *testing.T) {
	lookup := fakeLookup{"ServiceImport/shop/echo": {{Name: "grpc", Port: 9000}}}
	be := []gatewayv1.HTTPBackendRef{{BackendRef: backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000).BackendRef}}
	route := func(rule gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
		rule.BackendRefs = be
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"},
			Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
				Rules: []gatewayv1.HTTPRouteRule{rule}}}
	}
	prefix := func(v string) *gatewayv1.HTTPPathMatch {
		return &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To(v)}
	}
	timeout := gatewayv1.Duration("2s")
	parents, rules := ResolveHTTPRoute(route(gatewayv1.HTTPRouteRule{
		Matches: []gatewayv1.HTTPRouteMatch{
			{Path: prefix("/grpc.testing.TestService"), Headers: []gatewayv1.HTTPHeaderMatch{{Name: "X-Canary", Value: "true"}}},
			{Path: prefix("/admin/")},
			{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("/grpc.health.v1.Health/Check")}},
		},
		Timeouts: &gatewayv1.HTTPRouteTimeouts{Request: &timeout},
	}), lookup)
	if len(parents) != 1 || !parents[0].Applied() {
		t.Fatalf("parents %+v: want one, applied", parents)
	}
	want := RouteRule{Name: "shop/r/0", Timeout: 2 * time.Second,
		Matches: []RouteMatch{
			{Path: `/grpc\.testing\.TestService(/.*)?`, PathRegex: true, Headers: []HeaderMatch{{Name: "x-canary", Value: "true"}}},
			{Path: "/admin/"},
			{Path: "/grpc.health.v1.Health/Check"},
		},
		Backends: []RouteBackend{{Cluster: "outbound_.9000_._.echo.shop.svc.clusterset.local", Weight: 1}}}
	if len(rules) != 1 || !reflect.DeepEqual(rules[0].RouteRule, want) {
		t.Errorf("rules %+v, want %+v", rules, want)
	}
	for name, rule := range map[string]gatewayv1.HTTPRouteRule{
		"a query parameter match":                   {Matches: []gatewayv1.HTTPRouteMatch{{QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "v", Value: "2"}}}}},
		"an HTTP method match":                      {Matches: []gatewayv1.HTTPRouteMatch{{Method: ptr.To(gatewayv1.HTTPMethodGet)}}},
		"a filter other than RequestHeaderModifier": {Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{}}}},
	} {
		t.Run(name, func(t *testing.T) {
			parents, _ := ResolveHTTPRoute(route(rule), lookup)
			if len(parents) != 1 || parents[0].Applied() || parents[0].Accepted.Reason != gatewayv1.RouteReasonUnsupportedValue {
				t.Errorf("parents %+v: want Accepted=False UnsupportedValue", parents)
			}
		})
	}
}

// TestHTTPRoutePrecedence: an exact HTTP path comes before a prefix.
func TestHTTPRoutePrecedence(t *testing.T) {
	lookup := fakeLookup{"ServiceImport/shop/echo": {{Name: "grpc", Port: 9000}}}
	be := backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000)
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "h"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
			Rules: []gatewayv1.HTTPRouteRule{
				{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: be.BackendRef}}},
				{Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/a")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: be.BackendRef}}},
				{Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("/a/b")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: be.BackendRef}}},
			}}}
	_, ranked := ResolveHTTPRoute(route, lookup)
	slices.SortStableFunc(ranked, ruleLess)
	var got []string
	for _, r := range ranked {
		got = append(got, r.Name)
	}
	if want := "shop/h/2 shop/h/1 shop/h/0"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// withGRPCRoutes is a fakeLookup whose namespaces hold GRPCRoutes.
type withGRPCRoutes struct {
	fakeLookup
	routes []gatewayv1.GRPCRoute
}

func (l withGRPCRoutes) GRPCRoutes(string) []gatewayv1.GRPCRoute { return l.routes }

// TestHTTPRouteConflictsWithGRPCRoute: an HTTPRoute is not applied to a parent, or a port
// of it, that a GRPCRoute of the namespace attaches to (GEP-1426); other hosts, other
// ports and other namespaces are no conflict.
func TestHTTPRouteConflictsWithGRPCRoute(t *testing.T) {
	ports := []Port{{Name: "grpc", Port: 9000}, {Name: "http", Port: 8080}}
	base := fakeLookup{"Service/shop/echo": ports, "ServiceImport/shop/echo": ports}
	be := backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000)
	onPort := func(ref gatewayv1.ParentReference, port int32) gatewayv1.ParentReference {
		ref.Port = ptr.To(gatewayv1.PortNumber(port))
		return ref
	}
	inSection := func(ref gatewayv1.ParentReference, name string) gatewayv1.ParentReference {
		ref.SectionName = ptr.To(gatewayv1.SectionName(name))
		return ref
	}
	serviceParent := gatewayv1.ParentReference{Kind: ptr.To(gatewayv1.Kind("Service")), Name: "echo"}
	grpcRoute := func(ns string, ref gatewayv1.ParentReference) gatewayv1.GRPCRoute {
		return gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g"},
			Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{ref}},
				Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{be}}}}}
	}
	for _, tc := range []struct {
		name      string
		grpc      gatewayv1.GRPCRoute
		parent    gatewayv1.ParentReference
		conflicts bool
	}{
		{"one parent", grpcRoute("shop", importParent("echo")), importParent("echo"), true},
		{"the GRPCRoute on every port", grpcRoute("shop", importParent("echo")), onPort(importParent("echo"), 8080), true},
		{"the HTTPRoute on every port", grpcRoute("shop", onPort(importParent("echo"), 9000)), importParent("echo"), true},
		{"one port by number and by name", grpcRoute("shop", inSection(importParent("echo"), "grpc")), onPort(importParent("echo"), 9000), true},
		{"other ports", grpcRoute("shop", onPort(importParent("echo"), 9000)), onPort(importParent("echo"), 8080), false},
		{"the Service's host, not the import's", grpcRoute("shop", serviceParent), importParent("echo"), false},
		{"another namespace's GRPCRoute", grpcRoute("other", importParent("echo")), importParent("echo"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "h"},
				Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{tc.parent}},
					Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: be.BackendRef}}}}}}
			parents, _ := ResolveHTTPRoute(route, withGRPCRoutes{base, []gatewayv1.GRPCRoute{tc.grpc}})
			if len(parents) != 1 {
				t.Fatalf("%d parents", len(parents))
			}
			p := parents[0]
			if tc.conflicts {
				if p.Accepted.OK || p.Accepted.Reason != RouteReasonConflicted || !strings.Contains(p.Accepted.Message, "GRPCRoute "+tc.grpc.Namespace+"/g") || p.Applied() {
					t.Errorf("Accepted %+v, applied %v; want Conflicted naming the GRPCRoute, not applied", p.Accepted, p.Applied())
				}
				return
			}
			if !p.Applied() {
				t.Errorf("Accepted %+v, ResolvedRefs %+v; want applied", p.Accepted, p.ResolvedRefs)
			}
		})
	}
}

// TestRequestHeaderModifier: a route that changes request headers is accepted for Envoy
// sidecars, every rule of it marked EnvoyOnly (proxyless clients leave it out whole), the
// status says so; a change of the host header is refused.
func TestRequestHeaderModifier(t *testing.T) {
	lookup := fakeLookup{"ServiceImport/shop/echo": {{Name: "grpc", Port: 9000}}}
	be := backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000)
	modifier := func(m gatewayv1.HTTPHeaderFilter) gatewayv1.GRPCRouteFilter {
		return gatewayv1.GRPCRouteFilter{Type: gatewayv1.GRPCRouteFilterRequestHeaderModifier, RequestHeaderModifier: &m}
	}
	route := func(f gatewayv1.GRPCRouteFilter) *gatewayv1.GRPCRoute {
		return &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"},
			Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
				Rules: []gatewayv1.GRPCRouteRule{
					{Filters: []gatewayv1.GRPCRouteFilter{f}, BackendRefs: []gatewayv1.GRPCBackendRef{be}},
					{BackendRefs: []gatewayv1.GRPCBackendRef{be}},
				}}}
	}
	parents, rules := ResolveGRPCRoute(route(modifier(gatewayv1.HTTPHeaderFilter{
		Set: []gatewayv1.HTTPHeader{{Name: "X-Tenant", Value: "a"}}, Add: []gatewayv1.HTTPHeader{{Name: "x-via", Value: "mesh"}}, Remove: []string{"X-Debug"}})), lookup)
	if len(parents) != 1 || !parents[0].Applied() || !strings.Contains(parents[0].Accepted.Message, "Envoy sidecars") ||
		!strings.Contains(parents[0].Accepted.Message, "proxyless gRPC clients cannot change request headers") {
		t.Fatalf("parents %+v: want applied, the message saying who applies it", parents)
	}
	want := &HeaderChanges{Set: []HeaderValue{{"x-tenant", "a"}}, Add: []HeaderValue{{"x-via", "mesh"}}, Remove: []string{"x-debug"}}
	if len(rules) != 2 || !reflect.DeepEqual(rules[0].Headers, want) || rules[1].Headers != nil || !rules[0].EnvoyOnly || !rules[1].EnvoyOnly {
		t.Errorf("rules %+v: want the first with %+v, both EnvoyOnly", rules, want)
	}
	for name, bad := range map[string]gatewayv1.HTTPHeaderFilter{
		"a host header change":                {Set: []gatewayv1.HTTPHeader{{Name: "Host", Value: "evil"}}},
		"a header value with a line break":    {Add: []gatewayv1.HTTPHeader{{Name: "x-a", Value: "a\r\nx-admin: true"}}},
		"a header value with a NUL character": {Set: []gatewayv1.HTTPHeader{{Name: "x-a", Value: "a\x00"}}},
	} {
		parents, _ = ResolveGRPCRoute(route(modifier(bad)), lookup)
		if len(parents) != 1 || parents[0].Applied() || parents[0].Accepted.Reason != gatewayv1.RouteReasonUnsupportedValue {
			t.Errorf("%s: parents %+v, want the route refused", name, parents)
		}
	}
	// Without a modifier, nothing is Envoy's only.
	_, rules = ResolveGRPCRoute(&gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"},
		Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
			Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{be}}}}}, lookup)
	if len(rules) != 1 || rules[0].EnvoyOnly {
		t.Errorf("rules %+v: want one, not EnvoyOnly", rules)
	}
}

// TestHTTPRetryAndTryTimeout: an HTTPRoute's retry and timeouts.backendRequest make the
// route Envoy's only, with the retry and the per-try timeout on its rule.
func TestHTTPRetryAndTryTimeout(t *testing.T) {
	lookup := fakeLookup{"ServiceImport/shop/echo": {{Name: "grpc", Port: 9000}}}
	be := backend(mcsv1beta1.GroupName, "ServiceImport", "echo", 9000)
	second, backoff := gatewayv1.Duration("1s"), gatewayv1.Duration("100ms")
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "h"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{importParent("echo")}},
			Rules: []gatewayv1.HTTPRouteRule{{
				Retry:       &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{503, 504}, Attempts: ptr.To(3), Backoff: &backoff},
				Timeouts:    &gatewayv1.HTTPRouteTimeouts{BackendRequest: &second},
				BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: be.BackendRef}},
			}}}}
	parents, rules := ResolveHTTPRoute(route, lookup)
	if len(parents) != 1 || !parents[0].Applied() || !strings.Contains(parents[0].Accepted.Message, "Envoy sidecars") {
		t.Fatalf("parents %+v: want applied, for Envoy sidecars", parents)
	}
	want := &HTTPRetry{Attempts: 3, Codes: []uint32{503, 504}, Backoff: 100 * time.Millisecond}
	if len(rules) != 1 || !rules[0].EnvoyOnly || !reflect.DeepEqual(rules[0].Retry, want) || rules[0].TryTimeout != time.Second {
		t.Errorf("rules %+v: want EnvoyOnly, retry %+v, try timeout 1s", rules, want)
	}
}
