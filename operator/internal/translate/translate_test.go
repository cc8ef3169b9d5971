package translate

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/operator/bootstrap"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func ep(cluster, network, addr string, port uint32, ready bool) Endpoint {
	return Endpoint{Cluster: cluster, Network: network, Address: addr, Ports: []Port{{Name: "grpc", Port: port}}, Ready: ready}
}

// peers are two other members: b in the same network, c behind its gateway.
func peers() map[string]Peer {
	return map[string]Peer{
		"b": {Network: "net-1", Region: "eu"},
		"c": {Network: "net-2", GatewayAddress: "203.0.113.3", GatewayPort: 15443, Region: "us"},
	}
}

func goldenModels() map[string]*Model {
	grpcPort := []Port{{Name: "grpc", Port: 9080}}
	return map[string]*Model{
		"local-only": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", Region: "eu", MTLS: true,
			Services: []Service{{Namespace: "shop", Name: "reviews", Local: true, Ports: grpcPort, Endpoints: []Endpoint{
				ep("a", "net-1", "10.0.0.2", 8080, true), ep("a", "net-1", "10.0.0.1", 8080, true), ep("a", "net-1", "10.0.0.3", 8080, false),
			}}}},
		"failover-across-networks": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", Region: "eu", MTLS: true, Peers: peers(),
			Services: []Service{{Namespace: "shop", Name: "reviews", Local: true, Ports: grpcPort, Imported: true, ImportPorts: grpcPort,
				Policy: Policy{Failover: []string{"c", "b"}},
				Endpoints: []Endpoint{
					ep("a", "net-1", "10.0.0.1", 8080, true),
					ep("b", "net-1", "10.1.0.1", 8080, true), ep("b", "net-1", "10.1.0.2", 8080, false),
					ep("c", "net-2", "10.2.0.1", 8080, true), ep("c", "net-2", "10.2.0.2", 8080, true), ep("c", "net-2", "10.2.0.3", 8080, true),
				}}}},
		"weighted-split": {Cluster: "a", Network: "net-1", TrustDomain: "example.org", MTLS: true, Peers: peers(),
			Services: []Service{{Namespace: "shop", Name: "ratings", Imported: true, ImportPorts: grpcPort, ServiceAccount: "ratings",
				ClusterSetIPs: []string{"243.0.0.7", "fd43:4c53::7"}, ClientIPAffinity: true,
				Policy: Policy{Weights: []Weight{{Cluster: "a", Weight: 20}, {Cluster: "c", Weight: 80}},
					Timeout: 3 * time.Second, Retry: &Retry{Attempts: 2, On: []string{"unavailable", "resource-exhausted"}, PerTry: time.Second},
					CircuitBreaker: &CircuitBreaker{MaxRequests: 100, MaxPending: 10}},
				Endpoints: []Endpoint{
					ep("a", "net-1", "10.0.0.1", 8080, true),
					ep("c", "net-2", "10.2.0.1", 8080, true),
				}}}},
		"authorization": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", MTLS: true,
			Services: []Service{{Namespace: "shop", Name: "reviews", Local: true, Ports: grpcPort,
				Authz: &Authz{
					Deny: []AuthzRule{{Name: "shop/reviews/0", Principals: []Principal{{Prefix: "spiffe://cluster.local/ns/attic/sa/"}}}},
					Allow: []AuthzRule{{Name: "shop/reviews/1", Principals: []Principal{{Exact: "spiffe://cluster.local/ns/shop/sa/frontend"}, {Prefix: "spiffe://partner.example/"}},
						Methods: []string{"/shop.Reviews/Get", "/shop.ReviewsAdmin/"}}},
				},
				Endpoints: []Endpoint{ep("a", "net-1", "10.0.0.1", 8080, true)}}}},
		"fault-injection": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", MTLS: true, Peers: peers(),
			Services: []Service{{Namespace: "shop", Name: "cart", Imported: true, ImportPorts: grpcPort,
				Fault:     &Fault{Delay: 300 * time.Millisecond, DelayPercent: 20, AbortCode: 14, AbortPercent: 10},
				Endpoints: []Endpoint{ep("b", "net-1", "10.1.0.1", 8080, true)}}}},
		"grpc-routes": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", MTLS: true, Peers: peers(),
			Services: []Service{
				{Namespace: "shop", Name: "reviews", Local: true, Ports: grpcPort, Imported: true, ImportPorts: grpcPort,
					// Envoy's only: proxyless clients keep the default route of the local host.
					LocalRoutes: []RouteRule{
						{Name: "shop/tenant/0", EnvoyOnly: true, Headers: &HeaderChanges{Set: []HeaderValue{{"x-tenant", "a"}}, Add: []HeaderValue{{"x-via", "mesh"}}, Remove: []string{"x-debug"}},
							Matches:  []RouteMatch{{Headers: []HeaderMatch{{Name: "x-tenant", Value: "a"}}}},
							Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews.shop.svc.cluster.local", Weight: 1}}},
						{Name: "shop/tenant/1", EnvoyOnly: true, Retry: &HTTPRetry{Attempts: 3, Codes: []uint32{503}, Backoff: 100 * time.Millisecond},
							TryTimeout: time.Second, Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews.shop.svc.cluster.local", Weight: 1}}},
					},
					ClusterSetRoutes: []RouteRule{
						{Name: "shop/canary/0", Matches: []RouteMatch{{Headers: []HeaderMatch{{Name: "x-canary", Value: "true"}}}},
							Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews-v2.shop.svc.clusterset.local", Weight: 1}}},
						{Name: "shop/canary/1", Matches: []RouteMatch{{Path: "/shop.Reviews/", Headers: []HeaderMatch{{Name: "x-user", Value: "^tester-[0-9]+$", Regex: true}}}},
							Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews.shop.svc.cluster.local", Weight: 90}, {Cluster: "outbound_.9080_._.reviews-v2.shop.svc.clusterset.local", Weight: 10}}},
						{Name: "shop/canary/2", Matches: []RouteMatch{{Path: "/[^/]+/Drain", PathRegex: true}, {Path: "/shop.Admin/Drain"}},
							Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews.shop.svc.cluster.local", Weight: 1}}},
						{Name: "shop/canary/3", Timeout: 2 * time.Second, Backends: []RouteBackend{{Cluster: "outbound_.9080_._.reviews.shop.svc.clusterset.local", Weight: 1}}},
					},
					Endpoints: []Endpoint{ep("a", "net-1", "10.0.0.1", 8080, true), ep("c", "net-2", "10.2.0.1", 8080, true)}},
				{Namespace: "shop", Name: "reviews-v2", Imported: true, ImportPorts: grpcPort,
					Endpoints: []Endpoint{ep("c", "net-2", "10.2.0.2", 8080, true)}},
			}},
		"plaintext-with-outlier-detection": {Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", Peers: peers(),
			Services: []Service{{Namespace: "shop", Name: "cart", Imported: true, ImportPorts: grpcPort,
				Policy:    Policy{Outlier: &Outlier{ConsecutiveErrors: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second}},
				Endpoints: []Endpoint{ep("b", "net-1", "10.1.0.1", 8080, true), ep("d", "net-9", "10.9.0.1", 8080, true)}}}},
	}
}

// TestTranslateGolden: the resources for each model are valid, every reference resolves,
// and they equal the reviewed golden file (go test -run TestTranslateGolden -update
// rewrites them).
func TestTranslateGolden(t *testing.T) {
	for name, m := range goldenModels() {
		t.Run(name, func(t *testing.T) {
			r := Translate(m)
			if err := Check(r); err != nil {
				t.Fatalf("Check: %v", err)
			}
			got := render(t, r)
			checkGolden(t, name+".golden.yaml", got)
		})
	}
}

// renderOne writes a resource as a YAML document headed by its type.
func renderOne(t *testing.T, m proto.Message) string {
	t.Helper()
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return "# " + string(m.ProtoReflect().Descriptor().Name()) + "\n" + string(y)
}

// render writes the resources as YAML documents, one per resource, in a stable order.
func render(t *testing.T, r *Resources) string {
	t.Helper()
	var docs []string
	add := func(m proto.Message) { docs = append(docs, renderOne(t, m)) }
	for _, x := range r.Listeners {
		add(x)
	}
	for _, x := range r.Routes {
		add(x)
	}
	for _, x := range r.Clusters {
		add(x)
	}
	for _, x := range r.Endpoints {
		add(x)
	}
	return strings.Join(docs, "---\n")
}

func TestClusterNames(t *testing.T) {
	for _, tc := range []struct {
		port         uint32
		subset, host string
	}{
		{9080, "", "reviews.shop.svc.clusterset.local"},
		{443, "cluster-2", "a.b.svc.cluster.local"},
	} {
		name := ClusterName(tc.port, tc.subset, tc.host)
		port, subset, host, err := ParseClusterName(name)
		if err != nil || port != tc.port || subset != tc.subset || host != tc.host {
			t.Errorf("%s parsed as %d %q %q %v", name, port, subset, host, err)
		}
	}
	for _, bad := range []string{"", "inbound_.80_._.x", "outbound_.x_._.h", "outbound_.0_._.h", "outbound_.80_._.", "outbound_.99999_._.h", "outbound_.80"} {
		if _, _, _, err := ParseClusterName(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestServerListenerName: the name is the one an xDS gRPC server asks for, the bootstrap's
// template filled with the address it listens on.
func TestServerListenerName(t *testing.T) {
	for _, tc := range []struct {
		host string
		port uint32
	}{{"10.0.0.1", 8080}, {"fd00::1", 443}, {"127.0.0.1", 65535}} {
		want := strings.Replace(bootstrap.ServerListenerTemplate, "%s", net.JoinHostPort(tc.host, strconv.Itoa(int(tc.port))), 1)
		if got := ServerListenerName(tc.host, tc.port); got != want {
			t.Errorf("ServerListenerName(%s, %d) = %q, want %q", tc.host, tc.port, got, want)
		}
	}
}

// TestTranslatorReuse: after a change to one service, the incremental translator reuses
// the other services' resources, changes only the versions of the types that changed, and
// produces exactly what a fresh translation does.
func TestTranslatorReuse(t *testing.T) {
	m, _ := benchModel(5, 6)
	tr := NewTranslator()
	before := tr.Translate(m)
	// A remote endpoint of service 2 turns unready: only endpoints change.
	for i, e := range m.Services[2].Endpoints {
		if e.Cluster == "b" && e.Ready {
			m.Services[2].Endpoints[i].Ready = false
			break
		}
	}
	after := tr.Translate(m)
	if after.Versions[VersionEndpoints] == before.Versions[VersionEndpoints] {
		t.Error("the endpoints version did not change")
	}
	for _, v := range []int{VersionListeners, VersionRoutes, VersionClusters} {
		if after.Versions[v] != before.Versions[v] {
			t.Errorf("version %d changed though its resources did not", v)
		}
	}
	reused := 0
	for i := range before.Clusters {
		if before.Clusters[i] == after.Clusters[i] {
			reused++
		}
	}
	if reused != len(before.Clusters)-2 { // service 2 has a local and a clusterset cluster
		t.Errorf("%d of %d clusters reused, want all but service 2's", reused, len(before.Clusters))
	}
	after.sort()
	if got, want := render(t, after), render(t, Translate(m)); got != want {
		t.Error("the incremental translation differs from a fresh one")
	}
	if again := tr.Translate(m); again.Versions != after.Versions {
		t.Error("translating the same model twice changed the versions")
	}
}

// TestVersionsFollowContent: a type's version moves with its resources, not with the
// model: a change that alters no resource moves no version, a change undone brings the
// versions back, and a translator started afresh gives the same versions.
func TestVersionsFollowContent(t *testing.T) {
	m, _ := benchModel(5, 6)
	tr := NewTranslator()
	start := tr.Translate(m).Versions
	if again := NewTranslator().Translate(m).Versions; again != start {
		t.Errorf("a fresh translator gave versions %q, want %q", again, start)
	}
	remote := slices.IndexFunc(m.Services[1].Endpoints, func(e Endpoint) bool { return e.Cluster == "b" && e.Ready })
	m.Services[1].Endpoints[remote].Ready = false
	if got := tr.Translate(m).Versions; got[VersionEndpoints] == start[VersionEndpoints] {
		t.Error("an endpoint turned unready and the endpoints version did not move")
	}
	m.Services[1].Endpoints[remote].Ready = true
	if got := tr.Translate(m).Versions; got != start {
		t.Errorf("the change was undone: versions %q, want %q", got, start)
	}
	// An endpoint behind c's gateway moves: the gateway still fronts as many.
	behind := slices.IndexFunc(m.Services[1].Endpoints, func(e Endpoint) bool { return e.Cluster == "c" })
	m.Services[1].Endpoints[behind].Address = "10.2.1.250"
	if got := tr.Translate(m).Versions; got != start {
		t.Errorf("an endpoint behind a gateway moved: versions %q, want them unchanged %q", got, start)
	}
}

// TestTwoServicesOfOnePod: two services selecting the same pod port give one server
// listener for it.
func TestTwoServicesOfOnePod(t *testing.T) {
	pod := []Endpoint{ep("a", "net-1", "10.0.0.1", 8080, true)}
	m := &Model{Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", Services: []Service{
		{Namespace: "shop", Name: "reviews", Local: true, Ports: []Port{{Name: "grpc", Port: 9080}}, Endpoints: pod},
		{Namespace: "shop", Name: "reviews-canary", Local: true, Ports: []Port{{Name: "grpc", Port: 9081}}, Endpoints: pod},
	}}
	r := Translate(m)
	var servers []string
	for _, l := range r.Listeners {
		if l.Address != nil {
			servers = append(servers, l.Name)
		}
	}
	if want := []string{ServerListenerName("10.0.0.1", 8080)}; !slices.Equal(servers, want) {
		t.Errorf("server listeners %q, want %q", servers, want)
	}
	if err := Check(r); err != nil {
		t.Error(err)
	}
}

// TestTranslateEnvoyGolden: the Envoy sidecar configuration of a model passes ValidateAll,
// every route, cluster, endpoint and SDS reference resolves, and it equals the reviewed
// golden file.
func TestTranslateEnvoyGolden(t *testing.T) {
	for _, name := range []string{"failover-across-networks", "weighted-split", "authorization", "grpc-routes", "fault-injection"} {
		t.Run(name, func(t *testing.T) {
			r := TranslateEnvoy(goldenModels()[name])
			if err := CheckEnvoy(r); err != nil {
				t.Fatalf("CheckEnvoy: %v", err)
			}
			got := render(t, &r.Resources)
			for _, s := range r.Secrets {
				got += "---\n" + renderOne(t, s)
			}
			checkGolden(t, "envoy-"+name+".golden.yaml", got)
		})
	}
}

// TestCheckFindsBrokenReferences: the checks catch what ValidateAll cannot.
func TestCheckFindsBrokenReferences(t *testing.T) {
	r := TranslateEnvoy(goldenModels()["weighted-split"])
	r.Secrets = slices.DeleteFunc(r.Secrets, func(s *tlsv3.Secret) bool { return s.Name == SecretRoots })
	r.Endpoints = r.Endpoints[1:]
	err := CheckEnvoy(r)
	for _, want := range []string{`SDS secret "ROOTCA" does not exist`, "no endpoints resource"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckEnvoy: %v, want it to say %s", err, want)
		}
	}
	g := Translate(goldenModels()["weighted-split"])
	g.Routes = nil
	if err := Check(g); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Check without routes: %v", err)
	}
}

// TestCheckFindsRoutesGRPCRefuses: a route grpc-js would refuse (and with it every route
// of the configuration) fails the check: a direct response, weights that sum to 0.
func TestCheckFindsRoutesGRPCRefuses(t *testing.T) {
	for name, breakIt := range map[string]func(*routev3.Route){
		"a direct response": func(rt *routev3.Route) {
			rt.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}
		},
		"weights summing to 0": func(rt *routev3.Route) {
			for _, w := range rt.GetRoute().GetWeightedClusters().GetClusters() {
				w.Weight = wrapperspb.UInt32(0)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := Translate(goldenModels()["weighted-split"])
			if err := Check(g); err != nil {
				t.Fatal(err)
			}
			breakIt(g.Routes[0].VirtualHosts[0].Routes[0])
			if err := Check(g); err == nil || !strings.Contains(err.Error(), g.Routes[0].Name) {
				t.Errorf("Check: %v, want an error naming %s", err, g.Routes[0].Name)
			}
		})
	}
}

// TestCheckerRemembersOnlyWhatStillHolds: a Checker validates a resource once, but what
// it remembers never hides a problem: an invalid resource stays an error at every check,
// a reference that breaks later (its cluster gone) is found, and a valid configuration
// after that passes again.
func TestCheckerRemembersOnlyWhatStillHolds(t *testing.T) {
	m, _ := benchModel(3, 6)
	r := NewTranslator().Translate(m)
	c := &Checker{}
	if err := c.Check(r); err != nil {
		t.Fatal(err)
	}
	// A cluster disappears: the routes and endpoints that referred to it, remembered as
	// valid, now point to nothing.
	broken := *r
	broken.Clusters = r.Clusters[1:]
	err := c.Check(&broken)
	if err == nil || !strings.Contains(err.Error(), `cluster "`+r.Clusters[0].Name+`" does not exist`) ||
		!strings.Contains(err.Error(), "endpoints "+r.Clusters[0].Name+": no such cluster") {
		t.Errorf("after a cluster was removed: %v", err)
	}
	// An invalid resource (a cluster without a name) fails its first check and every later one.
	invalid := *r
	invalid.Clusters = append(slices.Clone(r.Clusters), &clusterv3.Cluster{})
	for range 2 {
		if err := c.Check(&invalid); err == nil || !strings.Contains(err.Error(), "invalid Cluster.Name") {
			t.Errorf("a cluster without a name: %v", err)
		}
	}
	if err := c.Check(r); err != nil {
		t.Errorf("the valid configuration again: %v", err)
	}
	// A server listener's shared filter chain with an invalid typed config: the error names
	// every listener that uses it.
	bad := *r
	bad.Listeners = nil
	var servers int
	for _, l := range r.Listeners {
		if l.Address == nil {
			bad.Listeners = append(bad.Listeners, l)
			continue
		}
		servers++
		fc := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
		fc.Filters[0].GetTypedConfig().Value = []byte{0xff}
		bad.Listeners = append(bad.Listeners, &listenerv3.Listener{Name: l.Name, Address: l.Address, FilterChains: []*listenerv3.FilterChain{fc}})
	}
	if err := c.Check(&bad); err == nil || strings.Count(err.Error(), "filter chain inbound") != servers {
		t.Errorf("%d server listeners with a broken filter chain: %v", servers, err)
	}
}

// TestTranslateGatewayGolden: the gateway gets a chain only for what this cluster exports,
// with its ready local endpoints; the configuration is valid and references resolve.
func TestTranslateGatewayGolden(t *testing.T) {
	m := goldenModels()["failover-across-networks"]
	m.GatewayPort = 15443
	m.Services = append(m.Services, Service{Namespace: "shop", Name: "internal", Local: true, Ports: m.Services[0].Ports,
		Imported: true, ImportPorts: m.Services[0].Ports, Endpoints: []Endpoint{ep("a", "net-1", "10.0.0.9", 8080, true)}})
	m.Services[0].ExportedHere = true // reviews is exported from here; internal is only imported
	r := TranslateGateway(m)
	if err := Check(r); err != nil {
		t.Fatal(err)
	}
	got := render(t, r)
	checkGolden(t, "gateway.golden.yaml", got)
	if strings.Contains(got, "internal.shop") {
		t.Error("a service this cluster does not export is reachable through its gateway")
	}
}

// TestEndpointOrderDoesNotMatter: a model whose endpoints are not in BuildModel's order
// (cluster, then address) gives the same configuration, for clients and servers, the
// gateway and Envoy.
func TestEndpointOrderDoesNotMatter(t *testing.T) {
	m, _ := benchModel(3, 9)
	m.GatewayPort = 15443
	m.Services[0].ExportedHere = true
	shuffled := *m
	shuffled.Services = slices.Clone(m.Services)
	for i := range shuffled.Services {
		eps := slices.Clone(m.Services[i].Endpoints)
		slices.Reverse(eps)
		eps[0], eps[len(eps)/2] = eps[len(eps)/2], eps[0]
		shuffled.Services[i].Endpoints = eps
	}
	for _, tc := range []struct {
		name      string
		translate func(*Model) *Resources
	}{
		{"proxyless gRPC", Translate},
		{"gateway", TranslateGateway},
		{"Envoy", func(m *Model) *Resources { return &TranslateEnvoy(m).Resources }},
	} {
		if want, got := render(t, tc.translate(m)), render(t, tc.translate(&shuffled)); got != want {
			t.Errorf("%s: the configuration depends on the order of the endpoints in the model", tc.name)
		}
	}
}

// checkGolden compares got with testdata/file, or rewrites the file with -update.
func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("resources differ from %s (run with -update after reviewing):\n%s", path, got)
	}
}

// TestServicePortsOfOneName: a model whose service has two ports of one name (which the
// API server refuses, but a model may hold) is translated without failing, with one server
// listener for the endpoint's port.
func TestServicePortsOfOneName(t *testing.T) {
	m := &Model{Cluster: "a", Network: "net-1", TrustDomain: "cluster.local",
		Services: []Service{{Namespace: "shop", Name: "reviews", Local: true,
			Ports:     []Port{{Name: "grpc", Port: 9080}, {Name: "grpc", Port: 9081}},
			Endpoints: []Endpoint{ep("a", "net-1", "10.0.0.1", 8080, true)}}}}
	var servers []string
	for _, l := range NewTranslator().Translate(m).Listeners {
		if l.Address != nil {
			servers = append(servers, l.Name)
		}
	}
	if want := []string{ServerListenerName("10.0.0.1", 8080)}; !slices.Equal(servers, want) {
		t.Errorf("server listeners %q, want %q", servers, want)
	}
}
