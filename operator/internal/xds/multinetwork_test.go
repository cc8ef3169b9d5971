package xds_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/internal/translate"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

// TestMultiNetwork: three clusters in three networks that reach each other only through
// their east-west gateways. A client in cluster-1 calls the echo service exported by
// cluster-2 and cluster-3: the direct path is proven blocked, calls go sidecar → remote
// gateway → server with end-to-end mTLS (both ends see each other's SPIFFE identity), fail
// over from cluster-2 to cluster-3, and split between them; a gateway refuses what its
// cluster does not export.
func TestMultiNetwork(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 3, Operator: true})
	testbed.RequireWorkloads(t, tb)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c1, c2, c3 := tb.Clusters[0], tb.Clusters[1], tb.Clusters[2]
	m, err := sc.FederateNetworks(ctx, tb, map[string]string{c1.Name: "net-1", c2.Name: "net-2", c3.Name: "net-3"})
	must(t, err)
	gateways := map[string][]string{}
	gws := map[string]*sc.Gateway{}
	for _, c := range tb.Clusters {
		gw, err := m.Gateway(ctx, c)
		must(t, err)
		gws[c.Name], gateways[c.Name] = gw, []string{gw.Address}
	}
	must(t, tb.IsolateNetworks(gateways))
	for _, c := range []*testbed.Cluster{c2, c3} {
		must(t, m.ExportEcho(ctx, c))
	}
	echo2, err := m.Server(ctx, c2, "echo-2")
	must(t, err)
	echo3, err := m.Server(ctx, c3, "echo-3")
	must(t, err)
	client, err := m.Client(ctx, c1, "client")
	must(t, err)
	tp := sc.Policy()
	tp.Failover = []string{c2.Name, c3.Name}
	_, err = m.SetPolicy(ctx, tp)
	must(t, err)

	t.Run("the only path between networks is the gateway", func(t *testing.T) {
		ok, why, err := sc.Dial(ctx, client, echo2.Addr(sc.EchoPort))
		must(t, err)
		if ok {
			t.Fatalf("a pod of %s opened a connection straight to a pod of %s", c1.Name, c2.Name)
		}
		t.Logf("direct %s → %s refused: %s", c1.Name, echo2.Addr(sc.EchoPort), why)
		ok, why, err = sc.Dial(ctx, client, net.JoinHostPort(gws[c2.Name].Address, strconv.Itoa(sc.GatewayPort)))
		must(t, err)
		if !ok {
			t.Fatalf("%s's gateway is not reachable from %s: %s", c2.Name, c1.Name, why)
		}
	})

	must(t, sc.AllOn(ctx, client, c2.Name, 20, time.Minute))
	t.Run("calls go through the gateway with end-to-end mTLS", func(t *testing.T) {
		cs, err := sc.Calls(ctx, client, 20)
		must(t, err)
		for _, c := range cs {
			if c.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || c.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("the client saw %q, the server saw %q: identities are not end to end", c.Peer, c.Caller)
			}
		}
		sni := `meshfed_gateway_sni_connections_total{sni="outbound_.9000_._.echo.shop.svc.clusterset.local"} `
		if v := sc.GatewayMetric(ctx, gws[c2.Name], sni); v == "" || v == "0" {
			t.Errorf("%s's gateway routed no connection for the service (metric %q)", c2.Name, v)
		}
	})

	var jsClient *testbed.Workload
	clientJS := func(t *testing.T) *testbed.Workload {
		if jsClient == nil {
			var err error
			jsClient, err = m.RunInjectedOn(ctx, sc.GRPCJS, c1, "client-js", "client", "client", sc.ClientPort, nil)
			must(t, err)
		}
		return jsClient
	}
	t.Run("a grpc-js client calls across networks through the gateways, mTLS end to end", func(t *testing.T) {
		// grpc-js sends its target's host as the TLS server name, not the outbound_ name
		// of the xDS cluster: the gateways route the bare clusterset host of a service's
		// gRPC port too (translate.HostPort).
		js := clientJS(t)
		must(t, sc.AllOn(ctx, js, c2.Name, 20, time.Minute))
		cs, err := sc.Calls(ctx, js, 30)
		must(t, err)
		for _, c := range cs {
			if !c.OK || c.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || c.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("a grpc-js call: ok %v, error %q, the client saw %q, the server saw %q", c.OK, c.Error, c.Peer, c.Caller)
			}
		}
		sni := `meshfed_gateway_sni_connections_total{sni="echo.shop.svc.clusterset.local"} `
		if v := sc.GatewayMetric(ctx, gws[c2.Name], sni); v == "" || v == "0" {
			t.Errorf("%s's gateway routed no connection by the bare host (metric %q)", c2.Name, v)
		}
	})

	t.Run("failover across networks", func(t *testing.T) {
		load, err := sc.StartLoad(ctx, client, 10*time.Millisecond)
		must(t, err)
		must(t, testbed.Poll(ctx, 10*time.Second, "calls before the kill", func() error {
			cs, err := load.Results(ctx)
			if err == nil && len(cs) < 20 {
				err = fmt.Errorf("%d calls", len(cs))
			}
			return err
		}))
		must(t, echo2.Kill(ctx))
		dead := time.Now()
		must(t, sc.AllOn(ctx, client, c3.Name, 20, 20*time.Second))
		cs, err := load.Stop(ctx)
		must(t, err)
		failed := 0
		for _, c := range cs {
			if !c.OK {
				failed++
				if c.At > load.Offset(dead)+20 {
					t.Errorf("a call started %.0f ms after the server was gone failed: %s", c.At-load.Offset(dead), c.Error)
				}
			}
		}
		t.Logf("CROSS-NETWORK FAILOVER: %d calls, %d failed (in flight); every call on %s %.0f ms after the kill",
			len(cs), failed, c3.Name, sc.SteadyAfter(cs, load.Offset(dead), c3.Name))
	})

	t.Run("a split across networks", func(t *testing.T) {
		// A new server in cluster-2 takes the traffic back (cluster-2 comes first in the
		// failover order); only then the split is set, so that calls reaching cluster-3
		// again show that the split is in force (and not a failover moving traffic).
		_, err := m.Server(ctx, c2, "echo-2b")
		must(t, err)
		must(t, sc.AllOn(ctx, client, c2.Name, 20, 30*time.Second))
		tp := sc.Policy()
		tp.Weights = []meshv1.ClusterWeight{{Cluster: c2.Name, Weight: 20}, {Cluster: c3.Name, Weight: 80}}
		_, err = m.SetPolicy(ctx, tp)
		must(t, err)
		must(t, testbed.Poll(ctx, 30*time.Second, "the split in force", func() error {
			cs, err := sc.Calls(ctx, client, 50)
			if s := sc.Split(cs); err == nil && s[c3.Name] == 0 {
				err = fmt.Errorf("split %v", s)
			}
			return err
		}))
		cs, err := sc.Calls(ctx, client, sc.SplitCalls)
		must(t, err)
		s := sc.Split(cs)
		t.Logf("CROSS-NETWORK SPLIT {%s:20, %s:80} over %d calls: %d / %d, failed %d", c2.Name, c3.Name, sc.SplitCalls, s[c2.Name], s[c3.Name], s[""])
		if err := sc.CheckSplit(s[c2.Name], sc.SplitCalls, 20); err != nil || s[""] > 0 {
			t.Errorf("split %v: %s %v, %d failed", s, c2.Name, err, s[""])
			logFailures(ctx, t, cs, gws)
		}
	})

	t.Run("GAMMA: a GRPCRoute sends the calls with a canary header to a canary service in another cluster, an HTTPRoute by path, a GRPCRoute wins over an HTTPRoute", func(t *testing.T) {
		must(t, m.ExportEchoAs(ctx, c3, "echo-canary"))
		_, err := m.RunInjected(ctx, c3, "echo-canary-3", "server", "echo", sc.EchoPort, map[string]string{"app": "echo-canary"})
		must(t, err)
		testbed.Eventually(t, 30*time.Second, "echo-canary imported in "+c1.Name, func() error {
			return c1.Client.Get(ctx, ctrlclient.ObjectKey{Namespace: sc.Namespace, Name: "echo-canary"}, &mcsv1beta1.ServiceImport{})
		})
		route := sc.CanaryRoute("echo-canary", "echo", "echo-canary", "x-canary", "true")
		testbed.MustCreate(ctx, t, c1.Client, route)
		t.Cleanup(func() { _ = ctrlclient.IgnoreNotFound(c1.Client.Delete(ctx, route)) })
		routeStatus(ctx, t, c1, route, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonResolvedRefs)
		canary := map[string]string{"x-canary": "true"}
		// grpc-go only: grpc-js names its target (echo) in the TLS server name whatever
		// the backend, so across networks the gateway sends its canary calls to echo
		// (docs/user-guide.md, "grpc-js clients").
		must(t, testbed.Poll(ctx, 30*time.Second, "the canary calls on echo-canary-3", func() error {
			return allServedBy(ctx, client, canary, "echo-canary-3")
		}))
		for impl, w := range map[string]*testbed.Workload{"grpc-go": client, "grpc-js": clientJS(t)} {
			cs, err := sc.Calls(ctx, w, 50)
			must(t, err)
			for _, c := range cs {
				if !c.OK || c.Pod == "echo-canary-3" {
					t.Fatalf("a %s call without the header: ok %v, error %q, served by %s", impl, c.OK, c.Error, c.Pod)
				}
			}
		}
		// A route whose backend does not resolve is not applied, not half-applied: were
		// its rule (every call, by its method) programmed without the backend, every call
		// would fail. The canary route is deleted after it, so that once its removal is
		// seen, so is the broken route.
		broken := route.DeepCopy()
		broken.ObjectMeta = metav1.ObjectMeta{Namespace: sc.Namespace, Name: "broken"}
		broken.Spec.Rules = []gatewayv1.GRPCRouteRule{{
			Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr.To("grpc.testing.TestService"), Method: ptr.To("UnaryCall")}}},
			BackendRefs: []gatewayv1.GRPCBackendRef{sc.ImportBackend("missing")}}}
		testbed.MustCreate(ctx, t, c1.Client, broken)
		t.Cleanup(func() { _ = ctrlclient.IgnoreNotFound(c1.Client.Delete(ctx, broken)) })
		routeStatus(ctx, t, c1, broken, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonBackendNotFound)
		must(t, c1.Client.Delete(ctx, route))
		must(t, testbed.Poll(ctx, 30*time.Second, "canary calls served by echo once the route is gone, the broken one left out", func() error {
			return allServedNotBy(ctx, client, canary, "echo-canary-3")
		}))
		must(t, c1.Client.Delete(ctx, broken))
		// An HTTPRoute does the same by path: every call of the gRPC service to the canary.
		byPath := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "echo-by-path"}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: route.Spec.CommonRouteSpec,
			Rules: []gatewayv1.HTTPRouteRule{{
				Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/grpc.testing.TestService")}}},
				BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: sc.ImportBackend("echo-canary").BackendRef}},
			}},
		}}
		testbed.MustCreate(ctx, t, c1.Client, byPath)
		t.Cleanup(func() { _ = ctrlclient.IgnoreNotFound(c1.Client.Delete(ctx, byPath)) })
		routeStatus(ctx, t, c1, byPath, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonResolvedRefs)
		must(t, testbed.Poll(ctx, 30*time.Second, "every call on echo-canary-3 by the HTTPRoute", func() error {
			return allServedBy(ctx, client, nil, "echo-canary-3")
		}))
		// A GRPCRoute on the same parent wins (GEP-1426): the HTTPRoute turns Conflicted
		// and is left out until the GRPCRoute goes.
		winner := route.DeepCopy()
		winner.ObjectMeta = metav1.ObjectMeta{Namespace: sc.Namespace, Name: "echo-grpc"}
		winner.Spec.Rules = []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{sc.ImportBackend("echo")}}}
		testbed.MustCreate(ctx, t, c1.Client, winner)
		t.Cleanup(func() { _ = ctrlclient.IgnoreNotFound(c1.Client.Delete(ctx, winner)) })
		routeStatus(ctx, t, c1, byPath, translate.RouteReasonConflicted, gatewayv1.RouteReasonResolvedRefs)
		must(t, testbed.Poll(ctx, 30*time.Second, "calls on echo by the GRPCRoute, the conflicting HTTPRoute left out", func() error {
			return allServedNotBy(ctx, client, nil, "echo-canary-3")
		}))
		must(t, c1.Client.Delete(ctx, winner))
		routeStatus(ctx, t, c1, byPath, gatewayv1.RouteReasonAccepted, gatewayv1.RouteReasonResolvedRefs)
		must(t, c1.Client.Delete(ctx, byPath))
		must(t, testbed.Poll(ctx, 30*time.Second, "calls back on echo once the HTTPRoute is gone", func() error {
			return allServedNotBy(ctx, client, nil, "echo-canary-3")
		}))
	})

	t.Run("authorization: the servers let in the callers a ServicePolicy allows, from another network", func(t *testing.T) {
		// Intruders and allowed callers on grpc-go and on grpc-js.
		intruder, err := m.RunInjected(ctx, c1, "intruder", "client", "intruder", sc.ClientPort, nil)
		must(t, err)
		intruderJS, err := m.RunInjectedOn(ctx, sc.GRPCJS, c1, "intruder-js", "client", "intruder", sc.ClientPort, nil)
		must(t, err)
		callers := map[string]*testbed.Workload{"grpc-go": client, "grpc-js": clientJS(t)}
		intruders := map[string]*testbed.Workload{"grpc-go": intruder, "grpc-js": intruderJS}
		// Without a policy every caller with a mesh certificate is served.
		for impl, w := range intruders {
			must(t, testbed.Poll(ctx, 30*time.Second, "the "+impl+" intruder's calls served before any policy", func() error {
				return allServed(ctx, w, 10)
			}))
		}
		policy := func() *meshv1.ServicePolicy {
			return &meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "echo-callers"}, Spec: meshv1.ServicePolicySpec{
				TargetRefs: []meshv1.PolicyTargetReference{{Group: mcsv1beta1.GroupName, Kind: "ServiceImport", Name: "echo"}},
				Authorization: &meshv1.Authorization{Rules: []meshv1.AuthorizationRule{{Action: meshv1.ActionAllow,
					From: []meshv1.Caller{{SPIFFEID: "spiffe://cluster.local/ns/shop/sa/client"}}, Methods: []string{"/grpc.testing.TestService/*"}}}}}}
		}
		for _, c := range []*testbed.Cluster{c2, c3} {
			testbed.MustCreate(ctx, t, c.Client, policy())
		}
		for impl, w := range intruders {
			must(t, testbed.Poll(ctx, 30*time.Second, "every call of the "+impl+" intruder refused", func() error {
				return allRefused(ctx, w, 30)
			}))
		}
		// Each refusal is logged and counted by the server that refused it (gRFC A59 audit
		// loggers, in the configuration): the grpc-go server of cluster-3 names the caller
		// in its log, and counts the refusals in its metrics (proxyless/refusals).
		must(t, testbed.Poll(ctx, 30*time.Second, "the intruder's refusals counted by echo-3", func() error {
			sample := `meshfed_authz_refused_calls_total{caller="spiffe://cluster.local/ns/shop/sa/intruder",method="/grpc.testing.TestService/UnaryCall",rule="",service="shop/echo"} `
			if n, err := strconv.Atoi(testbed.Metric(ctx, echo3.MetricsURL(), sample)); err != nil || n == 0 {
				return fmt.Errorf("%s: %q", sample, testbed.Metric(ctx, echo3.MetricsURL(), sample))
			}
			return nil
		}))
		must(t, testbed.Poll(ctx, 30*time.Second, "a refusal in echo-3's log", func() error {
			logs, err := kubernetes.NewForConfigOrDie(c3.Config).CoreV1().Pods(sc.Namespace).GetLogs("echo-3", &corev1.PodLogOptions{Container: "main"}).DoRaw(ctx)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(logs), "\n") {
				if strings.Contains(line, "grpc_audit_log") && strings.Contains(line, "spiffe://cluster.local/ns/shop/sa/intruder") && strings.Contains(line, `"authorized":false`) {
					return nil
				}
			}
			return fmt.Errorf("no audit line for the intruder in %d bytes of log", len(logs))
		}))
		// The allowed callers are served throughout, by both exporting clusters.
		for impl, w := range callers {
			cs, err := sc.Calls(ctx, w, 100)
			must(t, err)
			if s := sc.Split(cs); s[""] > 0 || s[c2.Name] == 0 || s[c3.Name] == 0 {
				t.Errorf("the allowed %s caller's calls: %v (want all served, by %s and %s)", impl, s, c2.Name, c3.Name)
			}
		}
		// A Deny rule wins over the Allow rule: the allowed caller is refused too.
		for _, c := range []*testbed.Cluster{c2, c3} {
			p := policy()
			must(t, c.Client.Get(ctx, ctrlclient.ObjectKeyFromObject(p), p))
			patch := ctrlclient.MergeFrom(p.DeepCopy())
			p.Spec.Authorization.Rules = append(p.Spec.Authorization.Rules, meshv1.AuthorizationRule{Action: meshv1.ActionDeny,
				From: []meshv1.Caller{{Namespace: sc.Namespace}}})
			must(t, c.Client.Patch(ctx, p, patch))
		}
		for impl, w := range callers {
			must(t, testbed.Poll(ctx, 30*time.Second, "the allowed "+impl+" caller refused by the Deny rule", func() error {
				return allRefused(ctx, w, 30)
			}))
		}
		for _, c := range []*testbed.Cluster{c2, c3} {
			testbed.Eventually(t, 30*time.Second, c.Name+": the policy Accepted", func() error {
				var p meshv1.ServicePolicy
				if err := c.Client.Get(ctx, ctrlclient.ObjectKeyFromObject(policy()), &p); err != nil {
					return err
				}
				if cond := meta.FindStatusCondition(p.Status.Conditions, meshv1.ConditionAccepted); cond == nil || cond.Status != metav1.ConditionTrue {
					return fmt.Errorf("Accepted %+v", cond)
				}
				return nil
			})
			must(t, c.Client.Delete(ctx, policy()))
		}
		// A policy naming a service this cluster lacks says so.
		orphan := policy()
		orphan.Name, orphan.Spec.TargetRefs[0].Name = "orphan", "billing"
		testbed.MustCreate(ctx, t, c2.Client, orphan)
		testbed.Eventually(t, 30*time.Second, "the orphan policy not Accepted: TargetNotFound", func() error {
			var p meshv1.ServicePolicy
			if err := c2.Client.Get(ctx, ctrlclient.ObjectKeyFromObject(orphan), &p); err != nil {
				return err
			}
			if cond := meta.FindStatusCondition(p.Status.Conditions, meshv1.ConditionAccepted); cond == nil || cond.Reason != meshv1.ReasonTargetNotFound || !strings.Contains(cond.Message, "billing") {
				return fmt.Errorf("Accepted %+v", cond)
			}
			return nil
		})
		must(t, c2.Client.Delete(ctx, orphan))
		// The policy gone, the intruders are served again.
		for impl, w := range intruders {
			must(t, testbed.Poll(ctx, 30*time.Second, "the "+impl+" intruder's calls served once the policy is gone", func() error {
				return allServed(ctx, w, 10)
			}))
		}
	})

	t.Run("a grpc-js server enforces a ServicePolicy for the callers of its network", func(t *testing.T) {
		// Callers in cluster-3 itself, where each call picks a pod (through a gateway a
		// connection stays on one), and a grpc-js server beside cluster-3's grpc-go one;
		// grpc-js enforces RBAC with GRPC_XDS_EXPERIMENTAL_RBAC, which its image sets.
		js, err := m.RunInjectedOn(ctx, sc.GRPCJS, c3, "echo-3js", "server", "echo", sc.EchoPort, map[string]string{"app": "echo"})
		must(t, err)
		t.Cleanup(func() { _ = js.Kill(ctx) })
		intruder3, err := m.RunInjected(ctx, c3, "intruder-3", "client", "intruder", sc.ClientPort, nil)
		must(t, err)
		client3, err := m.RunInjected(ctx, c3, "client-3", "client", "client", sc.ClientPort, nil)
		must(t, err)
		must(t, testbed.Poll(ctx, 30*time.Second, "the grpc-js server serving the intruder before any policy", func() error {
			return servedBy(ctx, intruder3, "echo-3js", 40)
		}))
		// In both exporting clusters: a fifth of the calls go to cluster-2 (the split).
		for _, c := range []*testbed.Cluster{c2, c3} {
			p := sc.AllowOnly("echo-callers", "echo", "spiffe://cluster.local/ns/shop/sa/client")
			testbed.MustCreate(ctx, t, c.Client, p)
			t.Cleanup(func() { _ = ctrlclient.IgnoreNotFound(c.Client.Delete(ctx, p)) })
		}
		must(t, testbed.Poll(ctx, 30*time.Second, "every call of the intruder of cluster-3 refused, by both servers", func() error {
			return allRefused(ctx, intruder3, 40)
		}))
		must(t, servedBy(ctx, client3, "echo-3js", 40))
	})

	t.Run("a gateway refuses what its cluster does not export", func(t *testing.T) {
		gw := gws[c2.Name]
		addr := net.JoinHostPort(gw.Address, strconv.Itoa(sc.GatewayPort))
		for _, sni := range []string{"outbound_.9000_._.billing.shop.svc.clusterset.local", "kubernetes.default.svc.cluster.local"} {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			if err == nil {
				conn.Close()
				t.Errorf("the gateway let %q through", sni)
			}
		}
		if v := sc.GatewayMetric(ctx, gw, `meshfed_gateway_refusals_total{reason="unknown_sni"} `); v != "2" {
			t.Errorf("unknown_sni refusals %q, want 2", v)
		}
	})
}

// logFailures logs why calls failed: the first errors the client saw, and what each
// gateway refused.
func logFailures(ctx context.Context, t *testing.T, cs []sc.Call, gws map[string]*sc.Gateway) {
	logged := 0
	for i, c := range cs {
		if !c.OK && logged < 5 {
			logged++
			t.Logf("call %d, %.0f ms into the run, failed: %s", i, c.At, c.Error)
		}
	}
	for name, gw := range gws {
		for _, reason := range []string{"no_endpoints", "dial_failed", "unknown_sni", "no_config", "hello_timeout"} {
			if v := sc.GatewayMetric(ctx, gw, `meshfed_gateway_refusals_total{reason="`+reason+`"} `); v != "" {
				t.Logf("%s's gateway refused %s connections: %s", name, reason, v)
			}
		}
	}
}

// allServed checks that n calls of caller all succeed.
func allServed(ctx context.Context, caller *testbed.Workload, n int) error {
	cs, err := sc.Calls(ctx, caller, n)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if !c.OK {
			return fmt.Errorf("a call failed: %s", c.Error)
		}
	}
	return nil
}

// routeStatus waits until the GRPCRoute or HTTPRoute route of c has meshfed's parent
// status with the given Accepted and ResolvedRefs reasons, each condition True when its
// reason is the positive one.
func routeStatus(ctx context.Context, t *testing.T, c *testbed.Cluster, route ctrlclient.Object, accepted, resolved gatewayv1.RouteConditionReason) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, route.GetName()+": Accepted "+string(accepted)+", ResolvedRefs "+string(resolved), func() error {
		if err := c.Client.Get(ctx, ctrlclient.ObjectKeyFromObject(route), route); err != nil {
			return err
		}
		var parents []gatewayv1.RouteParentStatus
		switch r := route.(type) {
		case *gatewayv1.GRPCRoute:
			parents = r.Status.Parents
		case *gatewayv1.HTTPRoute:
			parents = r.Status.Parents
		}
		for _, p := range parents {
			if p.ControllerName != translate.ControllerName {
				continue
			}
			a := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionAccepted))
			rr := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionResolvedRefs))
			if a == nil || rr == nil || a.Reason != string(accepted) || rr.Reason != string(resolved) ||
				(a.Status == metav1.ConditionTrue) != (accepted == gatewayv1.RouteReasonAccepted) ||
				(rr.Status == metav1.ConditionTrue) != (resolved == gatewayv1.RouteReasonResolvedRefs) || a.Message == "" || rr.Message == "" {
				return fmt.Errorf("conditions %+v", p.Conditions)
			}
			return nil
		}
		return fmt.Errorf("no parent status of %s: %+v", translate.ControllerName, parents)
	})
}

// servedBy checks that n calls of caller are all served, one of them at least by pod.
func servedBy(ctx context.Context, caller *testbed.Workload, pod string, n int) error {
	cs, err := sc.Calls(ctx, caller, n)
	if err != nil {
		return err
	}
	pods := map[string]int{}
	for _, c := range cs {
		if !c.OK {
			return fmt.Errorf("a call failed: %s", c.Error)
		}
		pods[c.Pod]++
	}
	if pods[pod] == 0 {
		return fmt.Errorf("no call served by %s: %v", pod, pods)
	}
	return nil
}

// allServedBy checks that 20 calls of caller with headers are all served by pod.
func allServedBy(ctx context.Context, caller *testbed.Workload, headers map[string]string, pod string) error {
	cs, err := sc.CallsWith(ctx, caller, 20, headers)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if !c.OK || c.Pod != pod {
			return fmt.Errorf("a call: ok %v, error %q, served by %q, want %s", c.OK, c.Error, c.Pod, pod)
		}
	}
	return nil
}

// allServedNotBy checks that 20 calls of caller with headers are all served, none by pod.
func allServedNotBy(ctx context.Context, caller *testbed.Workload, headers map[string]string, pod string) error {
	cs, err := sc.CallsWith(ctx, caller, 20, headers)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if !c.OK || c.Pod == pod {
			return fmt.Errorf("a call: ok %v, error %q, served by %q, want any pod but %s", c.OK, c.Error, c.Pod, pod)
		}
	}
	return nil
}

// allRefused checks that n calls of caller are all refused as PermissionDenied.
func allRefused(ctx context.Context, caller *testbed.Workload, n int) error {
	cs, err := sc.Calls(ctx, caller, n)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.OK || !strings.Contains(c.Error, "PermissionDenied") {
			return fmt.Errorf("a call: ok %v (served by %s in %s), error %q", c.OK, c.Pod, c.Cluster, c.Error)
		}
	}
	return nil
}
