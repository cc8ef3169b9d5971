package bootstrap

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// XDSCluster is the static cluster of an Envoy sidecar's bootstrap that reaches the
// control plane (through the pod's agent).
const XDSCluster = "xds-grpc"

// EnvoyOptions describe one Envoy sidecar.
type EnvoyOptions struct {
	// XDSAddress is host:port of the pod's agent (plaintext, on the pod's loopback).
	XDSAddress string
	// NodeID is <pod>.<namespace>; Cluster the member's cluster name.
	NodeID, Cluster string
	// AdminPort is Envoy's admin port, on loopback.
	AdminPort uint32
}

// Envoy is the bootstrap of an Envoy sidecar: ADS (listeners, clusters, then routes,
// endpoints and secrets over ADS) from the agent, the admin interface on loopback.
func Envoy(o EnvoyOptions) (*bootstrapv3.Bootstrap, error) {
	host, portText, err := net.SplitHostPort(o.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("xDS address %q: %w", o.XDSAddress, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || o.NodeID == "" {
		return nil, errors.New("an Envoy bootstrap needs the agent's host:port and a node ID")
	}
	http2, err := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	return &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Cluster, Locality: &corev3.Locality{Zone: o.Cluster},
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"meshfed.io/proxy": structpb.NewStringValue("envoy")}}},
		Admin: &bootstrapv3.Admin{Address: socket("127.0.0.1", o.AdminPort)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
			Name:                 XDSCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(1e9),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2,
			},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: XDSCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socket(host, uint32(port))}}}},
			}}},
		}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3, SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster}}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
	}, nil
}

func socket(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// EnvoyJSON is the bootstrap as Envoy reads it (-c).
func EnvoyJSON(b *bootstrapv3.Bootstrap) ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
}

// CheckEnvoy checks an Envoy bootstrap: every field valid (ValidateAll), and the ADS
// service, the listener and cluster sources resolving to what it defines.
func CheckEnvoy(b *bootstrapv3.Bootstrap) error {
	errs := []error{b.ValidateAll()}
	static := map[string]bool{}
	for _, c := range b.GetStaticResources().GetClusters() {
		static[c.Name] = true
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads == nil || len(ads.GrpcServices) != 1 || !static[ads.GrpcServices[0].GetEnvoyGrpc().GetClusterName()] {
		errs = append(errs, errors.New("the ADS config must name one gRPC service on a static cluster"))
	}
	for what, src := range map[string]*corev3.ConfigSource{"lds": b.GetDynamicResources().GetLdsConfig(), "cds": b.GetDynamicResources().GetCdsConfig()} {
		if src.GetAds() == nil {
			errs = append(errs, fmt.Errorf("%s_config must come over ADS", what))
		}
	}
	if b.GetNode().GetId() == "" {
		errs = append(errs, errors.New("the node has no ID"))
	}
	return errors.Join(errs...)
}
