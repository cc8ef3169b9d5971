package translate

import (
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rbac/audit_loggers/stream/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/proxyless/refusals"
)

// Names of the RBAC HTTP filters of a server listener (gRFC A41; Envoy's
// envoy.filters.http.rbac): one refuses what a Deny rule matches, the next serves only what
// an Allow rule matches.
const (
	rbacDenyFilter  = "meshfed.authz.deny"
	rbacAllowFilter = "meshfed.authz.allow"
)

// authzFilters are the HTTP filters that enforce a service's authorization, to run before
// the router; logging (nil: none) is what the filters do with the calls they refuse. A call
// no Allow rule matches is refused, so an Authz without Allow rules refuses every call.
func authzFilters(a *Authz, logging *rbacv3.RBAC_AuditLoggingOptions) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if len(a.Deny) > 0 {
		out = append(out, rbacFilter(rbacDenyFilter, rbacv3.RBAC_DENY, a.Deny, logging))
	}
	return append(out, rbacFilter(rbacAllowFilter, rbacv3.RBAC_ALLOW, a.Allow, logging))
}

// refusalLogging has a server log and count each call of service (namespace/name) it
// refuses, with gRFC A59 audit loggers, both optional so that a server without them keeps
// the rest: the stdout logger writes one JSON line per refusal on the server's standard
// output, naming the caller, the method and the rule; meshfed's refusal counter (package
// proxyless/refusals) counts it in a grpc-go server that imports that package. Envoy counts
// refusals in its RBAC filters' stats instead.
func refusalLogging(service string) *rbacv3.RBAC_AuditLoggingOptions {
	counter := &xdstypev3.TypedStruct{TypeUrl: refusals.TypeURL, Value: &structpb.Struct{Fields: map[string]*structpb.Value{
		"service": structpb.NewStringValue(service)}}}
	return &rbacv3.RBAC_AuditLoggingOptions{
		AuditCondition: rbacv3.RBAC_AuditLoggingOptions_ON_DENY,
		LoggerConfigs: []*rbacv3.RBAC_AuditLoggingOptions_AuditLoggerConfig{{
			AuditLogger: &corev3.TypedExtensionConfig{Name: "stdout_logger", TypedConfig: packAny(&streamv3.StdoutAuditLog{})},
			IsOptional:  true,
		}, {
			AuditLogger: &corev3.TypedExtensionConfig{Name: refusals.LoggerName, TypedConfig: packAny(counter)},
			IsOptional:  true,
		}},
	}
}

func rbacFilter(name string, action rbacv3.RBAC_Action, rules []AuthzRule, logging *rbacv3.RBAC_AuditLoggingOptions) *hcmv3.HttpFilter {
	policies := map[string]*rbacv3.Policy{}
	for _, r := range rules {
		policies[r.Name] = &rbacv3.Policy{Permissions: permissions(r.Methods), Principals: principals(r.Principals)}
	}
	cfg := &rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: policies, AuditLoggingOptions: logging}}
	// The policies are a map: encoded with sorted keys, so that one configuration always
	// gives the same bytes.
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{
		TypeUrl: anyPrefix + string(cfg.ProtoReflect().Descriptor().FullName()), Value: b}}}
}

// permissions match calls to any of the methods: a gRPC method's path, exactly or (ending
// in "/") every method of a service; no methods match every call.
func permissions(methods []string) []*rbacv3.Permission {
	if len(methods) == 0 {
		return []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	}
	out := make([]*rbacv3.Permission, 0, len(methods))
	for _, m := range methods {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}
		if m[len(m)-1] == '/' {
			sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: m}
		}
		out = append(out, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{
			UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}})
	}
	return out
}

// principals match callers by the SPIFFE ID of their mTLS certificate (its URI SAN); no
// principals match every caller.
func principals(ps []Principal) []*rbacv3.Principal {
	if len(ps) == 0 {
		return []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}
	out := make([]*rbacv3.Principal, 0, len(ps))
	for _, p := range ps {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Exact}}
		if p.Prefix != "" {
			sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: p.Prefix}
		}
		out = append(out, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
			Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}})
	}
	return out
}
