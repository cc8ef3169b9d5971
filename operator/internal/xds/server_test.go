package xds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/eastwest-gateway/gateway"
	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/testbed"
)

// model is a member with one imported service whose endpoints a test changes.
type model struct {
	srv     *Server
	mu      sync.Mutex
	m       *translate.Model
	invalid bool
	tr      *translate.Translator
}

func newModel(services, endpoints int) *model {
	m := &translate.Model{Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", Peers: map[string]translate.Peer{"b": {Network: "net-1"}}}
	for i := range services {
		s := translate.Service{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Imported: true, ImportPorts: []translate.Port{{Name: "grpc", Port: 9080}}}
		for j := range endpoints {
			s.Endpoints = append(s.Endpoints, translate.Endpoint{Cluster: []string{"a", "b"}[j%2], Network: "net-1",
				Address: fmt.Sprintf("10.%d.%d.%d", j%2, i, j), Ports: []translate.Port{{Name: "grpc", Port: 8080}}, Ready: true})
		}
		m.Services = append(m.Services, s)
	}
	return &model{m: m, tr: translate.NewTranslator()}
}

func (md *model) build(context.Context) (*Config, error) {
	md.mu.Lock()
	defer md.mu.Unlock()
	res := md.tr.Translate(md.m)
	if md.invalid {
		// An endpoints resource of a cluster that does not exist fails the checks.
		res.Endpoints = append(res.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: "outbound_.1_._.nowhere"})
	}
	cfg := &Config{Resources: res, Address: "127.0.0.1:0", Debounce: 10 * time.Millisecond}
	if md.srv.EnvoyConnected() {
		cfg.Envoy = translate.TranslateEnvoy(md.m)
	}
	if md.srv.GatewayConnected() {
		cfg.Gateway = translate.TranslateGateway(md.m)
	}
	return cfg, nil
}

// flip changes the readiness of one endpoint of service i.
func (md *model) flip(i int) {
	md.mu.Lock()
	e := &md.m.Services[i].Endpoints[0]
	e.Ready = !e.Ready
	md.mu.Unlock()
}

// toggleRoute attaches a GRPCRoute rule (calls with x-canary go to service 1) to the
// clusterset host of service i, or takes it away.
func (md *model) toggleRoute(i int) {
	md.mu.Lock()
	defer md.mu.Unlock()
	s := &md.m.Services[i]
	if s.ClusterSetRoutes != nil {
		s.ClusterSetRoutes = nil
		return
	}
	canary := md.m.Services[1].Name + ".ns.svc.clusterset.local"
	s.ClusterSetRoutes = []translate.RouteRule{
		{Name: "ns/canary/0", Matches: []translate.RouteMatch{{Headers: []translate.HeaderMatch{{Name: "x-canary", Value: "true"}}}},
			Backends: []translate.RouteBackend{{Cluster: translate.ClusterName(9080, "", canary), Weight: 1}}},
		{Name: "ns/canary/1", Backends: []translate.RouteBackend{{Cluster: translate.ClusterName(9080, "", s.Name+".ns.svc.clusterset.local"), Weight: 1}}},
	}
}

func startServer(t testing.TB, md *model) *Server {
	t.Helper()
	return startSecured(t, md, nil)
}

// startSecured starts a server that requires mTLS with creds (none when nil).
func startSecured(t testing.TB, md *model, creds *testCredentials) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := NewServer(logr.Discard(), md.build, nil)
	if creds != nil {
		s.SetSecurity(creds.security())
	}
	md.srv = s
	go func() { _ = s.Start(ctx) }()
	testbed.Eventually(t, 10*time.Second, "the xDS server serving its first version", func() error {
		if s.Addr() == "" || s.Status().Version == "" {
			return errors.New("not yet")
		}
		return nil
	})
	return s
}

// adsClient is a raw ADS client watching one EDS resource; it ACKs what it gets unless
// told to NACK, and reports every version it received.
type adsClient struct {
	stream   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node     string
	versions chan string
	nack     bool
}

// adsStream opens an ADS stream to addr, closed when the test ends; with creds, over mTLS
// as a workload of namespace "ns".
func adsStream(ctx context.Context, t testing.TB, addr string, creds ...*testCredentials) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	tc := insecure.NewCredentials()
	if len(creds) > 0 {
		tc = credentials.NewTLS(creds[0].clientTLS())
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func dialADS(ctx context.Context, t testing.TB, addr, node, cluster string, nack bool, creds ...*testCredentials) *adsClient {
	t.Helper()
	return dialADSFor(ctx, t, addr, node, resource.EndpointType, cluster, nack, creds...)
}

// dialADSFor is dialADS for the resource name of type typeURL.
func dialADSFor(ctx context.Context, t testing.TB, addr, node, typeURL, name string, nack bool, creds ...*testCredentials) *adsClient {
	t.Helper()
	stream := adsStream(ctx, t, addr, creds...)
	c := &adsClient{stream: stream, node: node, versions: make(chan string, 64), nack: nack}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typeURL, ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	go c.loop(name)
	return c
}

func (c *adsClient) loop(cluster string) {
	acked := ""
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			close(c.versions)
			return
		}
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: []string{cluster}, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
		if c.nack {
			req.VersionInfo = acked
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: "refused on purpose"}
		} else {
			acked = resp.VersionInfo
		}
		if c.stream.Send(req) != nil {
			return
		}
		c.versions <- resp.VersionInfo
	}
}

func (c *adsClient) next(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case v, ok := <-c.versions:
		if !ok {
			t.Fatalf("%s: stream closed", c.node)
		}
		return v
	case <-time.After(timeout):
		t.Fatalf("%s: no response within %s", c.node, timeout)
		return ""
	}
}

const watched = "outbound_.9080_._.svc-0.ns.svc.clusterset.local"

// TestInvalidConfigIsNotServed: a configuration that fails the checks is not served (the
// proxies keep the last good one and the status says why); the next good one is.
func TestInvalidConfigIsNotServed(t *testing.T) {
	md := newModel(3, 4)
	s := startServer(t, md)
	ctx := t.Context()
	c := dialADS(ctx, t, s.Addr(), "proxy-1", watched, false)
	v1 := c.next(t, 5*time.Second)

	md.mu.Lock()
	md.invalid = true
	md.mu.Unlock()
	md.flip(0)
	before := testutil.ToFloat64(configErrors)
	s.Trigger()
	testbed.Eventually(t, 5*time.Second, "the invalid configuration reported", func() error {
		if s.Status().Err == nil {
			return errors.New("no error in the status")
		}
		return nil
	})
	if got := testutil.ToFloat64(configErrors) - before; got != 1 {
		t.Errorf("config errors +%v, want +1", got)
	}
	t.Logf("status: %v", s.Status().Err)
	// A proxy that connects now gets the last good configuration.
	late := dialADS(ctx, t, s.Addr(), "proxy-2", watched, false)
	if v := late.next(t, 5*time.Second); v != v1 {
		t.Errorf("a new proxy got version %s, want the last good %s", v, v1)
	}
	testbed.NoneWithin(t, c.versions, 300*time.Millisecond, "a version sent to the connected proxy after an invalid build")

	md.mu.Lock()
	md.invalid = false
	md.mu.Unlock()
	s.Trigger()
	if v := c.next(t, 5*time.Second); v == v1 {
		t.Error("the good configuration was not pushed")
	}
	if s.Status().Err != nil {
		t.Errorf("status still reports %v", s.Status().Err)
	}
}

// TestNACKLeavesOthersAlone: one proxy refuses a version; it is counted, and another proxy
// keeps receiving and ACKing.
func TestNACKLeavesOthersAlone(t *testing.T) {
	md := newModel(2, 2)
	s := startServer(t, md)
	ctx := t.Context()
	before := testutil.ToFloat64(nacks.WithLabelValues("ClusterLoadAssignment"))
	bad := dialADS(ctx, t, s.Addr(), "refuser", watched, true)
	good := dialADS(ctx, t, s.Addr(), "accepter", watched, false)
	bad.next(t, 5*time.Second)
	v1 := good.next(t, 5*time.Second)
	md.flip(0)
	s.Trigger()
	if v := good.next(t, 5*time.Second); v == v1 {
		t.Error("the accepting proxy did not get the new version")
	}
	// The refusing proxy gets each version once: v1, then v2, NACKed once each (the
	// snapshot cache would otherwise send a refused version again at once, in a loop).
	if v := bad.next(t, 5*time.Second); v == "" {
		t.Fatal("the refusing proxy did not get the new version")
	}
	md.flip(1)
	s.Trigger()
	good.next(t, 5*time.Second)
	bad.next(t, 5*time.Second)
	testbed.Eventually(t, 5*time.Second, "three NACKs counted", func() error {
		if n := testutil.ToFloat64(nacks.WithLabelValues("ClusterLoadAssignment")) - before; n < 3 {
			return fmt.Errorf("%v", n)
		}
		return nil
	})
	testbed.NoneWithin(t, bad.versions, 300*time.Millisecond, "the refused version sent again to the refusing proxy")
	if n := testutil.ToFloat64(nacks.WithLabelValues("ClusterLoadAssignment")) - before; n > 3 {
		t.Errorf("%v NACKs for three versions: the refused version was resent", n)
	}
}

// BenchmarkEDSPushTo1000Clients: 1000 proxies (raw ADS streams, one mTLS connection each,
// as the operator's xDS server requires) watch one service's endpoints; an endpoint
// changes; the figure is the time until the last of them has the new version and ACKed
// it, through the whole pipeline (debounce 10 ms).
func BenchmarkEDSPushTo1000Clients(b *testing.B) {
	const proxies = 1000
	md := newModel(100, 100)
	creds := newTestCredentials(b)
	s := startSecured(b, md, creds)
	ctx := b.Context()
	clients := make([]*adsClient, proxies)
	for i := range clients {
		clients[i] = dialADS(ctx, b, s.Addr(), fmt.Sprintf("proxy-%d.ns", i), watched, false, creds)
	}
	for _, c := range clients {
		c.next(b, 30*time.Second)
	}
	var lasts []time.Duration
	for b.Loop() {
		start := time.Now()
		md.flip(0)
		s.Trigger()
		lasts = append(lasts, lastClient(b, clients, start))
	}
	reportLastClient(b, lasts)
}

// lastClient waits until every client has a new version and returns how long after start
// the last one had it.
func lastClient(b *testing.B, clients []*adsClient, start time.Time) time.Duration {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	for _, c := range clients {
		wg.Go(func() {
			c.next(b, 30*time.Second)
			d := time.Since(start)
			mu.Lock()
			last = max(last, d)
			mu.Unlock()
		})
	}
	wg.Wait()
	return last
}

func reportLastClient(b *testing.B, lasts []time.Duration) {
	b.ReportMetric(percentile(lasts, 0.50).Seconds()*1000, "ms-last-client-p50")
	b.ReportMetric(percentile(lasts, 0.99).Seconds()*1000, "ms-last-client-p99")
}

// BenchmarkRouteChangeTo1000Clients: 1000 proxies (raw ADS streams over mTLS) watch one
// service's route configuration; a GRPCRoute is attached to the service or taken away;
// the figure is the time until the last of them has the new route configuration and
// ACKed it, through the whole pipeline (debounce 10 ms).
func BenchmarkRouteChangeTo1000Clients(b *testing.B) {
	const proxies = 1000
	md := newModel(100, 100)
	creds := newTestCredentials(b)
	s := startSecured(b, md, creds)
	ctx := b.Context()
	route := translate.ListenerName("svc-0.ns.svc.clusterset.local", 9080)
	clients := make([]*adsClient, proxies)
	for i := range clients {
		clients[i] = dialADSFor(ctx, b, s.Addr(), fmt.Sprintf("proxy-%d.ns", i), resource.RouteType, route, false, creds)
	}
	for _, c := range clients {
		c.next(b, 30*time.Second)
	}
	var lasts []time.Duration
	for b.Loop() {
		start := time.Now()
		md.toggleRoute(0)
		s.Trigger()
		lasts = append(lasts, lastClient(b, clients, start))
	}
	reportLastClient(b, lasts)
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestEnvoyNodesGetEnvoyConfig: a node that says it is an Envoy sidecar gets the Envoy
// configuration (SDS secrets, passthrough clusters), a proxyless node the gRPC one.
func TestEnvoyNodesGetEnvoyConfig(t *testing.T) {
	md := newModel(2, 2)
	md.m.MTLS = true
	s := startServer(t, md)
	clusters := func(node *corev3.Node) []string {
		conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, a := range resp.Resources {
			var c clusterv3.Cluster
			if err := a.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			names = append(names, c.Name)
		}
		return names
	}
	envoy := &corev3.Node{Id: "sidecar~10.0.0.1~pod.ns", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		NodeProxyField: structpb.NewStringValue(GroupEnvoy)}}}
	if got := clusters(envoy); !slices.Contains(got, translate.PassthroughCluster) {
		t.Errorf("the Envoy node got clusters %v, want the Envoy configuration", got)
	}
	if got := clusters(&corev3.Node{Id: "grpc-app"}); slices.Contains(got, translate.PassthroughCluster) || len(got) == 0 {
		t.Errorf("the proxyless node got clusters %v, want the gRPC configuration", got)
	}
}

// TestGatewayGetsExportedServices: meshfed's own east-west gateway (its ADS client and
// routing table) takes the gateway configuration: the SNI of a service this cluster
// exports routes to its ready local endpoints; a service it only imports is not routed.
func TestGatewayGetsExportedServices(t *testing.T) {
	md := newModel(2, 4)
	md.m.GatewayPort = 15443
	for i := range md.m.Services {
		md.m.Services[i].Local, md.m.Services[i].Ports = true, md.m.Services[i].ImportPorts
	}
	md.m.Services[0].ExportedHere = true
	s := startServer(t, md)
	tables := make(chan *gateway.Table, 16)
	c := &gateway.Client{Address: s.Addr(), Node: gateway.GatewayNode("gw-1", "a"), Log: logr.Discard(),
		OnTable: func(tb *gateway.Table) { tables <- tb }}
	go func() { _ = c.Run(t.Context()) }()
	exported := translate.ClusterName(9080, "", "svc-0.ns.svc.clusterset.local")
	imported := translate.ClusterName(9080, "", "svc-1.ns.svc.clusterset.local")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case tb := <-tables:
			got := map[string]bool{}
			for range 4 {
				if b, ok := tb.Lookup(exported); ok {
					got[b] = true
				}
			}
			// svc-0's local endpoints are 10.0.0.0 and 10.0.0.2 (the others are in b).
			if len(got) == 2 && got["10.0.0.0:8080"] && got["10.0.0.2:8080"] {
				if tb.Routed(imported) {
					t.Errorf("%s, which this cluster does not export, is routed", imported)
				}
				return
			}
		case <-deadline:
			t.Fatal("the gateway never routed the exported service to its local endpoints")
		}
	}
}
