package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// NodeProxyField and ProxyGateway tell meshfed's control plane that a node is an east-west
// gateway (node metadata).
const (
	NodeProxyField = "meshfed.io/proxy"
	ProxyGateway   = "gateway"
)

// Client is the gateway's ADS client: it subscribes to the listener, its clusters and
// their endpoints, ACKs what it can serve, NACKs what it cannot, and hands each new table
// to OnTable. When the control plane goes away it reconnects; the gateway keeps routing
// with the last good table meanwhile.
type Client struct {
	Address string
	Node    *corev3.Node
	OnTable func(*Table)
	// OnReject, when set, hears of every configuration refused (NACKed).
	OnReject func(error)
	// TLS, when set, secures the connection (meshfed's xDS servers require mTLS); nil
	// connects in plaintext, for tests with a control plane of their own.
	TLS *tls.Config
	Log logr.Logger
}

// GatewayNode is the node of a gateway in cluster.
func GatewayNode(id, cluster string) *corev3.Node {
	return &corev3.Node{Id: id, Cluster: cluster, Locality: &corev3.Locality{Zone: cluster},
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{NodeProxyField: structpb.NewStringValue(ProxyGateway)}}}
}

// Run connects and follows the configuration until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.Log.Info("xDS stream ended; reconnecting", "address", c.Address, "error", err.Error(), "in", backoff)
		if time.Since(start) > 10*time.Second {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return nil
}

// state is what one stream has accepted so far.
type state struct {
	listener  *listenerv3.Listener
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	versions  map[string]string // accepted version by type
	edsNames  []string
}

func (c *Client) stream(ctx context.Context) error {
	creds := insecure.NewCredentials()
	if c.TLS != nil {
		creds = credentials.NewTLS(c.TLS)
	}
	conn, err := grpc.NewClient(c.Address, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	s := &state{clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}, versions: map[string]string{}}
	nacked := map[string]string{} // the version last refused, by type
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: c.Node, TypeUrl: typ}); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		next, names, perr := c.apply(s, resp)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, ResourceNames: subscribed(s, resp.TypeUrl)}
		if perr != nil {
			if nacked[resp.TypeUrl] == resp.VersionInfo {
				// The control plane sent a refused version again: slow the loop down.
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
			}
			nacked[resp.TypeUrl] = resp.VersionInfo
			req.VersionInfo = s.versions[resp.TypeUrl]
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: perr.Error()}
			c.Log.Error(perr, "configuration refused (NACK); routing stays on the last good one", "type", resp.TypeUrl, "version", resp.VersionInfo)
			if c.OnReject != nil {
				c.OnReject(perr)
			}
		} else {
			s.versions[resp.TypeUrl] = resp.VersionInfo
			req.VersionInfo = resp.VersionInfo
			if next != nil {
				c.OnTable(next)
			}
		}
		if err := st.Send(req); err != nil {
			return err
		}
		if perr == nil && !slices.Equal(names, s.edsNames) {
			s.edsNames = names
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names,
				VersionInfo: s.versions[resource.EndpointType]}); err != nil {
				return err
			}
		}
	}
}

func subscribed(s *state, typ string) []string {
	if typ == resource.EndpointType {
		return s.edsNames
	}
	return nil // wildcard
}

// apply checks a response against what the stream holds and returns the table it makes
// (nil when it makes none yet) and the EDS names to watch.
func (c *Client) apply(s *state, resp *discoveryv3.DiscoveryResponse) (*Table, []string, error) {
	listener, clusters, endpoints := s.listener, s.clusters, s.endpoints
	switch resp.TypeUrl {
	case resource.ListenerType:
		if len(resp.Resources) != 1 {
			return nil, nil, fmt.Errorf("%w: %d listeners, want one", ErrUnsupported, len(resp.Resources))
		}
		var l listenerv3.Listener
		if err := resp.Resources[0].UnmarshalTo(&l); err != nil {
			return nil, nil, err
		}
		listener = &l
	case resource.ClusterType:
		clusters = map[string]*clusterv3.Cluster{}
		for _, a := range resp.Resources {
			var cl clusterv3.Cluster
			if err := a.UnmarshalTo(&cl); err != nil {
				return nil, nil, err
			}
			clusters[cl.Name] = &cl
		}
	case resource.EndpointType:
		endpoints = map[string]*endpointv3.ClusterLoadAssignment{}
		for _, a := range resp.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				return nil, nil, err
			}
			endpoints[cla.ClusterName] = &cla
		}
	default:
		return nil, nil, fmt.Errorf("%w: resource type %s", ErrUnsupported, resp.TypeUrl)
	}
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	var table *Table
	// A listener with no cluster is a member that exports nothing yet: an empty table, and
	// a gateway that is ready to route what comes.
	if listener != nil {
		t, err := BuildTable(listener, clusters, endpoints)
		if err != nil {
			// Clusters may arrive before the listener that names them, or the other way
			// round: only a listener that cannot be served at all is refused.
			if resp.TypeUrl == resource.ListenerType && !strings.Contains(err.Error(), "was not received") {
				return nil, nil, err
			}
		} else {
			t.Version = s.versions[resource.ListenerType] + "/" + s.versions[resource.ClusterType] + "/" + resp.VersionInfo
			table = t
		}
	}
	s.listener, s.clusters, s.endpoints = listener, clusters, endpoints
	return table, names, nil
}
