package xds

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/testbed"
)

// routeWatcher is a raw ADS client of the gRPC group that watches one route configuration
// and ACKs a version only when the test lets it, as a slow proxy would.
type routeWatcher struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	route  string
	got    chan *discoveryv3.DiscoveryResponse
}

func watchRoute(ctx context.Context, t *testing.T, addr, route string) *routeWatcher {
	t.Helper()
	stream := adsStream(ctx, t, addr)
	w := &routeWatcher{stream: stream, route: route, got: make(chan *discoveryv3.DiscoveryResponse, 16)}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "slow-proxy"}, TypeUrl: resource.RouteType, ResourceNames: []string{route}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(w.got)
				return
			}
			w.got <- resp
		}
	}()
	return w
}

// next waits for the next route response.
func (w *routeWatcher) next(t *testing.T) *discoveryv3.DiscoveryResponse {
	t.Helper()
	select {
	case resp := <-w.got:
		return resp
	case <-time.After(5 * time.Second):
		t.Fatal("no route configuration came")
		return nil
	}
}

func (w *routeWatcher) ack(t *testing.T, resp *discoveryv3.DiscoveryResponse) {
	t.Helper()
	if err := w.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: []string{w.route},
		ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}); err != nil {
		t.Fatal(err)
	}
}

// servedClusters are the names of the clusters in the gRPC group's snapshot.
func servedClusters(t *testing.T, s *Server) []string {
	t.Helper()
	snap, err := s.cache.GetSnapshot(GroupGRPC)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range snap.GetResources(resource.ClusterType) {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// splitModel is one imported service split between clusters a and b.
func splitModel() *model {
	md := newModel(1, 4)
	md.m.Services[0].Policy.Weights = []translate.Weight{{Cluster: "a", Weight: 20}, {Cluster: "b", Weight: 80}}
	return md
}

const (
	legB  = "outbound_.9080_.b_.svc-0.ns.svc.clusterset.local"
	route = "svc-0.ns.svc.clusterset.local:9080"
)

// TestDroppedClusterOutlivesItsRoutes: a weight change that drops a split leg keeps the
// leg's cluster served until the proxy has ACKed the routes that stop using it (make
// before break), then drops it; a proxy that never ACKs holds it no longer than the
// retention (3 s here).
func TestDroppedClusterOutlivesItsRoutes(t *testing.T) {
	for _, acks := range []bool{true, false} {
		name := map[bool]string{true: "released by the proxy's ACK", false: "released after the retention"}[acks]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			md := splitModel()
			s := startServer(t, md)
			s.mu.Lock()
			s.retention = 3 * time.Second
			s.mu.Unlock()
			w := watchRoute(ctx, t, s.Addr(), route)
			w.ack(t, w.next(t))
			if got := servedClusters(t, s); !slices.Contains(got, legB) {
				t.Fatalf("clusters %q lack leg b", got)
			}

			md.mu.Lock()
			md.m.Services[0].Policy.Weights = []translate.Weight{{Cluster: "a", Weight: 100}}
			md.mu.Unlock()
			s.Trigger()
			change := w.next(t) // the new routes, not ACKed yet
			if got := servedClusters(t, s); !slices.Contains(got, legB) {
				t.Fatalf("leg b's cluster was dropped before the proxy had the routes without it: %q", got)
			}
			start := time.Now()
			if acks {
				w.ack(t, change)
			}
			testbed.Eventually(t, 10*time.Second, "leg b's cluster dropped", func() error {
				if slices.Contains(servedClusters(t, s), legB) {
					return errors.New("still served")
				}
				return nil
			})
			held := time.Since(start)
			t.Logf("dropped %s after the new routes were sent", held.Round(time.Millisecond))
			if acks && held > 2*time.Second {
				t.Errorf("the ACK did not release the cluster: it took %s, about the 3 s retention", held)
			}
			if !acks && held < 2500*time.Millisecond {
				t.Errorf("dropped %s after the routes, without an ACK: want about the 3 s retention", held)
			}
			s.mu.Lock()
			served := s.served
			s.mu.Unlock()
			if err := translate.Check(served); err != nil {
				t.Errorf("the served configuration fails its checks: %v", err)
			}
		})
	}
}
