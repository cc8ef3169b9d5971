package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/testbed"
)

// TestProxiesGetTheCurrentEndpoints: proxies watching the same resource get the same bytes,
// and after a change each gets the resource as it is now, not an encoding of before.
func TestProxiesGetTheCurrentEndpoints(t *testing.T) {
	md := newModel(3, 4)
	s := startServer(t, md)
	open := func(node string) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
		conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.EndpointType, ResourceNames: []string{watched}}); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	// receive returns the watched resource's bytes and ACKs them.
	receive := func(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) []byte {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Resources) != 1 {
			t.Fatalf("%d resources in the response, want the one watched", len(resp.Resources))
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: []string{watched}, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
		if err := stream.Send(ack); err != nil {
			t.Fatal(err)
		}
		return resp.Resources[0].Value
	}
	// want is the watched resource as the model translates now.
	want := func() *endpointv3.ClusterLoadAssignment {
		md.mu.Lock()
		defer md.mu.Unlock()
		for _, cla := range translate.Translate(md.m).Endpoints {
			if cla.ClusterName == watched {
				return cla
			}
		}
		t.Fatalf("the model has no %s", watched)
		return nil
	}
	check := func(what string, got []byte) {
		t.Helper()
		var cla endpointv3.ClusterLoadAssignment
		if err := proto.Unmarshal(got, &cla); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if w := want(); !proto.Equal(&cla, w) {
			t.Errorf("%s: got\n%v\nwant\n%v", what, &cla, w)
		}
	}

	a, b := open("proxy-a"), open("proxy-b")
	first := receive(a)
	if string(receive(b)) != string(first) {
		t.Error("two proxies got different bytes for the same resource version")
	}
	check("first push", first)

	md.flip(0) // an endpoint of the watched service turns unready
	s.Trigger()
	afterA, afterB := receive(a), receive(b)
	if string(afterA) == string(first) {
		t.Fatal("the change did not reach the proxy")
	}
	if string(afterA) != string(afterB) {
		t.Error("two proxies got different bytes after the change")
	}
	check("after the change", afterA)
}

// TestSharedEncodingsAreForgotten: encodings of resources no snapshot holds any more are
// dropped, so that a long-running member does not keep one per resource ever served.
func TestSharedEncodingsAreForgotten(t *testing.T) {
	c := newSharedCache(cachev3.NewSnapshotCache(false, groupHash{}, nil))
	ctx := context.Background()
	for i := range 5000 {
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: fmt.Sprintf("outbound_.80_._.svc-%d.ns.svc.cluster.local", i%10)}
		snap, err := cachev3.NewSnapshot(fmt.Sprint(i), map[resource.Type][]types.Resource{resource.EndpointType: {cla}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetSnapshot(ctx, GroupGRPC, snap); err != nil {
			t.Fatal(err)
		}
		if _, err := c.encoding(resource.EndpointType, cla); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.encoded); n > 2*c.live+257 {
		t.Errorf("%d encodings kept after 5,000 snapshots of one resource each", n)
	}
}

// TestSharedWatchCancelsOnce: cancelling a watch twice, as go-control-plane's server may,
// is harmless, and a cancelled watch sends nothing.
func TestSharedWatchCancelsOnce(t *testing.T) {
	c := newSharedCache(cachev3.NewSnapshotCache(false, groupHash{}, nil))
	out := make(chan cachev3.Response, 1)
	req := &cachev3.Request{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType, ResourceNames: []string{watched}}
	cancel, err := c.CreateWatch(req, streamv3.NewSotwSubscription(req.ResourceNames, false), out)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	cancel()
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: watched}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), GroupGRPC, snap); err != nil {
		t.Fatal(err)
	}
	testbed.NoneWithin(t, out, 300*time.Millisecond, "a response on a cancelled watch")
}
