package translate

import (
	"cmp"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
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

// Version indexes in Resources.Versions.
const (
	VersionListeners = iota
	VersionRoutes
	VersionClusters
	VersionEndpoints
)

func (r *Resources) sort() {
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
}

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

// lbEndpoint is a healthy endpoint at address; weight 1 is the default and left out.
func lbEndpoint(address *corev3.Address, weight uint32) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: address}},
		HealthStatus:   corev3.HealthStatus_HEALTHY,
	}
	if weight != 1 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return lb
}

// packAny packs a message into an Any, encoded as the content hashes encode it (with
// go-control-plane's generated marshalers when built with them).
func packAny(m proto.Message) *anypb.Any {
	return &anypb.Any{TypeUrl: anyPrefix + string(m.ProtoReflect().Descriptor().FullName()), Value: appendEncoding(nil, m)}
}

const anyPrefix = "type.googleapis.com/"

// vtMarshaler is the fast marshaler go-control-plane generates for its types.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

// appendEncoding appends the encoding of m to buf (reused when large enough) and returns
// it. These resources have no map fields, so the encoding is stable.
func appendEncoding(buf []byte, m proto.Message) []byte {
	if vt, ok := m.(vtMarshaler); ok {
		n := vt.SizeVT()
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := vt.MarshalToSizedBufferVTStrict(buf); err == nil {
			return buf
		}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf[:0], m)
	return b
}
