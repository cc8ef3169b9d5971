package xds_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/testbed"
	sc "github.com/meshfed/meshfed/testbed/scenario"
)

// fixture is a federated 3-cluster testbed with echo servers in A and B and a client in A.
type fixture struct {
	*sc.Mesh
	a, b    *testbed.Cluster
	serverA *testbed.Workload
	client  *testbed.Workload
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func start(t testing.TB) *fixture {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 3, Operator: true})
	testbed.RequireWorkloads(t, tb)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, err := sc.Federate(ctx, tb)
	must(t, err)
	f := &fixture{Mesh: m, a: tb.Clusters[0], b: tb.Clusters[1]}
	must(t, m.ExportEcho(ctx, f.a))
	must(t, m.ExportEcho(ctx, f.b))
	f.serverA, err = m.Server(ctx, f.a, "echo-a")
	must(t, err)
	_, err = m.Server(ctx, f.b, "echo-b")
	must(t, err)
	f.client, err = m.Client(ctx, f.a, "client")
	must(t, err)
	must(t, sc.AllOn(ctx, f.client, f.a.Name, 20, time.Minute))
	return f
}

func (f *fixture) calls(t testing.TB, n int) []sc.Call {
	t.Helper()
	cs, err := sc.Calls(context.Background(), f.client, n)
	must(t, err)
	return cs
}

func (f *fixture) policy(t testing.TB, change func(*meshv1.TrafficPolicy)) time.Time {
	t.Helper()
	tp := sc.Policy()
	change(tp)
	at, err := f.SetPolicy(context.Background(), tp)
	must(t, err)
	return at
}

func weights(a, b string, wa, wb int32) func(*meshv1.TrafficPolicy) {
	return func(tp *meshv1.TrafficPolicy) {
		tp.Weights = []meshv1.ClusterWeight{{Cluster: a, Weight: wa}, {Cluster: b, Weight: wb}}
	}
}

// failover measures the move of a steady load (a call every 10 ms) from A to B when event
// happens: the time until every call succeeds on B, and the calls that failed.
func (f *fixture) failover(t testing.TB, event func()) (steady float64, failed []sc.Call, load *sc.Load, at time.Time, cs []sc.Call) {
	t.Helper()
	ctx := context.Background()
	load, err := sc.StartLoad(ctx, f.client, 10*time.Millisecond)
	must(t, err)
	must(t, testbed.Poll(ctx, 10*time.Second, "calls before the event", func() error {
		cs, err := load.Results(ctx)
		if err == nil && len(cs) < 20 {
			err = fmt.Errorf("%d calls", len(cs))
		}
		return err
	}))
	at = time.Now()
	event()
	must(t, sc.AllOn(ctx, f.client, f.b.Name, 20, 10*time.Second))
	settled := load.Offset(time.Now())
	must(t, testbed.Poll(ctx, 10*time.Second, "calls after the move", func() error {
		cs, err := load.Results(ctx)
		n := 0
		for _, c := range cs {
			if c.At > settled {
				n++
			}
		}
		if err == nil && n < 20 {
			err = fmt.Errorf("%d calls since", n)
		}
		return err
	}))
	cs, err = load.Stop(ctx)
	must(t, err)
	for _, c := range cs {
		if !c.OK {
			failed = append(failed, c)
		}
	}
	return sc.SteadyAfter(cs, load.Offset(at), f.b.Name), failed, load, at, cs
}

// TestProxylessGRPC: real grpc-go xDS clients and servers on the testbed, configured by the
// members' control planes: local first, weighted splits and their changes, failover when
// servers die or turn unready, SPIFFE mTLS (a foreign certificate is refused), and a NACK
// that leaves the other proxies alone.
func TestProxylessGRPC(t *testing.T) {
	f := start(t)
	a, b := f.a, f.b
	ctx := context.Background()
	must(t, testbed.Poll(ctx, 10*time.Second, "A's Mesh reports its proxies and snapshot", func() error {
		mesh, err := sc.GetMesh(ctx, a)
		if err != nil {
			return err
		}
		// The server and the client in A hold an ADS stream each, to whichever operator
		// replica the Service gave them: the status counts both replicas' proxies.
		streams := a.OperatorMetric(ctx, "meshfed_xds_connected_proxies")
		if mesh.Status.ConnectedProxies < 2 || mesh.Status.SnapshotVersion == "" || streams != fmt.Sprint(mesh.Status.ConnectedProxies) {
			return fmt.Errorf("connected proxies %d (the replicas count %s streams), snapshot %q", mesh.Status.ConnectedProxies, streams, mesh.Status.SnapshotVersion)
		}
		return nil
	}))
	t.Run("calls are mutually authenticated with SPIFFE identities", func(t *testing.T) {
		for _, c := range f.calls(t, 10) {
			if c.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || c.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("the client saw %q, the server saw %q", c.Peer, c.Caller)
			}
		}
	})

	var clientJS *testbed.Workload
	// clients are A's echo clients on grpc-go and on grpc-js.
	clients := func(t *testing.T) map[sc.Implementation]*testbed.Workload {
		if clientJS == nil {
			var err error
			clientJS, err = f.RunInjectedOn(ctx, sc.GRPCJS, a, "client-js", "client", "client", sc.ClientPort, nil)
			must(t, err)
		}
		return map[sc.Implementation]*testbed.Workload{sc.GRPCGo: f.client, sc.GRPCJS: clientJS}
	}
	traffic := func(t *testing.T, tr *meshv1.ServiceTraffic) *meshv1.ServicePolicy {
		p := &meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "echo-traffic"}, Spec: meshv1.ServicePolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Group: "multicluster.x-k8s.io", Kind: "ServiceImport", Name: "echo"}}, Traffic: tr}}
		testbed.MustCreate(ctx, t, a.Client, p)
		return p
	}

	t.Run("fault injection: delays and aborts at the configured percentages", func(t *testing.T) {
		// In A, the cluster of the client: its calls to echo are delayed (20 %) and
		// aborted (10 %, Unavailable).
		fault := &meshv1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "echo-faults"}, Spec: meshv1.ServicePolicySpec{
			TargetRefs: []meshv1.PolicyTargetReference{{Group: "multicluster.x-k8s.io", Kind: "ServiceImport", Name: "echo"}},
			FaultInjection: &meshv1.FaultInjection{
				Delay: &meshv1.FaultDelay{FixedDelay: metav1.Duration{Duration: 300 * time.Millisecond}, Percentage: 20},
				Abort: &meshv1.FaultAbort{GRPCStatus: 14, Percentage: 10},
			}}}
		testbed.MustCreate(ctx, t, a.Client, fault)
		for impl, client := range clients(t) {
			measureFaults(ctx, t, impl, client)
		}
		must(t, a.Client.Delete(ctx, fault))
		must(t, testbed.Poll(ctx, 30*time.Second, "no fault once the policy is gone", func() error {
			for _, c := range f.calls(t, 50) {
				if !c.OK || c.Millis >= 300 {
					return fmt.Errorf("a call: ok %v in %.0f ms: %s", c.OK, c.Millis, c.Error)
				}
			}
			return nil
		}))
	})

	t.Run("circuit breaking: calls over the limit fail at once, the others are served", func(t *testing.T) {
		// Calls every 5 ms that the server holds 100 ms: some 20 in flight, against a
		// limit of 3.
		const limit, hold = 3, 100.0
		p := traffic(t, &meshv1.ServiceTraffic{CircuitBreaker: &meshv1.CircuitBreaker{MaxRequests: limit}})
		slow := map[string]string{"x-echo-delay-ms": fmt.Sprint(hold)}
		for impl, client := range clients(t) {
			// Once a call is refused the limit is in force; a new load then measures it.
			must(t, testbed.Poll(ctx, 30*time.Second, string(impl)+": the first call over the limit refused", func() error {
				cs, err := loadOf(ctx, client, slow, 50)
				for _, c := range cs {
					if strings.Contains(c.Error, "Unavailable") {
						return nil
					}
				}
				return errors.Join(err, errors.New("no call refused"))
			}))
			cs, err := loadOf(ctx, client, slow, 200)
			must(t, err)
			served, refused, first, last := 0, 0, math.Inf(1), 0.0
			for _, c := range cs {
				switch {
				case c.OK:
					served++
					first, last = min(first, c.At), max(last, c.At+c.Millis)
				case strings.Contains(c.Error, "Unavailable") && c.Millis < hold:
					refused++
				case strings.Contains(c.Error, "DeadlineExceeded") || strings.Contains(c.Error, "Canceled"):
					// cut short by the load's end
				default:
					t.Errorf("%s: a call failed otherwise: %s in %.0f ms", impl, c.Error, c.Millis)
				}
			}
			// Each served call holds one of the limit's places for hold ms at least, within
			// the span of the served calls: at most limit × span / hold of them.
			most := int(float64(limit) * (last - first) / hold)
			t.Logf("CIRCUIT BREAKING (%s, max %d in flight): %d calls, %d served (at most %d possible), %d refused at once", impl, limit, len(cs), served, most, refused)
			if refused == 0 || served == 0 || served > most {
				t.Errorf("%s: %d served in %.0f ms (at most %d with %d in flight), %d refused", impl, served, last-first, most, limit, refused)
			}
		}
		must(t, a.Client.Delete(ctx, p))
		must(t, testbed.Poll(ctx, 30*time.Second, "no call refused once the policy is gone", func() error {
			cs, err := loadOf(ctx, f.client, slow, 100)
			for _, c := range cs {
				if !c.OK && strings.Contains(c.Error, "Unavailable") {
					return fmt.Errorf("a call refused: %s", c.Error)
				}
			}
			return err
		}))
	})

	t.Run("outlier detection ejects a failing server and fails over to the next cluster", func(t *testing.T) {
		p := traffic(t, &meshv1.ServiceTraffic{OutlierDetection: &meshv1.OutlierDetection{ConsecutiveErrors: 5,
			Interval: &metav1.Duration{Duration: time.Second}, BaseEjectionTime: &metav1.Duration{Duration: 30 * time.Second}}})
		// grpc-js counts calls for outlier detection only on channels that connect once
		// the policy is there (grpc-js 1.14.7: a ready channel keeps a picker that does not
		// count until its connection's state changes; docs/user-guide.md): a client that
		// starts after the policy.
		clientJS, err := f.RunInjectedOn(ctx, sc.GRPCJS, a, "client-js-outlier", "client", "client", sc.ClientPort, nil)
		must(t, err)
		t.Cleanup(func() {
			_ = a.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: clientJS.Name}})
		})
		outlierClients := map[sc.Implementation]*testbed.Workload{sc.GRPCGo: f.client, sc.GRPCJS: clientJS}
		for _, client := range outlierClients {
			must(t, sc.AllOn(ctx, client, a.Name, 20, 30*time.Second))
		}
		must(t, sc.SetFailing(ctx, f.serverA, true))
		// The server in A still reports ready: only its calls say it is broken.
		for _, client := range outlierClients {
			must(t, sc.AllOn(ctx, client, b.Name, 20, 20*time.Second))
		}
		must(t, sc.SetFailing(ctx, f.serverA, false))
		must(t, a.Client.Delete(ctx, p))
		for _, client := range clients(t) {
			must(t, sc.AllOn(ctx, client, a.Name, 20, 45*time.Second))
		}
	})

	t.Run("a retry succeeds on another endpoint", func(t *testing.T) {
		// A second server in A; the first fails every call. Without retries about half
		// of the calls fail; with two attempts on Unavailable, a failed attempt is made
		// again on the next endpoint and every call succeeds.
		second, err := f.Server(ctx, a, "echo-a-second")
		must(t, err)
		must(t, sc.SetFailing(ctx, f.serverA, true))
		t.Cleanup(func() {
			// The later subtests count on one server in A, serving.
			must(t, sc.SetFailing(ctx, f.serverA, false))
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: second.Name}}
			must(t, a.Client.Delete(ctx, pod))
			testbed.Eventually(t, time.Minute, "echo-a-second gone", func() error {
				err := a.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
				if apierrors.IsNotFound(err) {
					return nil
				}
				if err != nil {
					return err
				}
				return errors.New("still there")
			})
		})
		must(t, testbed.Poll(ctx, 30*time.Second, "calls failing on the failing server", func() error {
			for _, c := range f.calls(t, 20) {
				if strings.Contains(c.Error, "failing on purpose") {
					return nil
				}
			}
			return errors.New("no call failed yet")
		}))
		// The per-try timeout is Envoy's: the gRPC clients take the route and ignore it.
		p := traffic(t, &meshv1.ServiceTraffic{Retries: &meshv1.RetryPolicy{Attempts: 2, On: []string{"unavailable"},
			PerTryTimeout: &metav1.Duration{Duration: 2 * time.Second}}})
		for impl, client := range clients(t) {
			must(t, testbed.Poll(ctx, 30*time.Second, string(impl)+": every call served, retried", func() error {
				for _, c := range mustCalls(ctx, t, client, 100) {
					if !c.OK || c.Pod != second.Name {
						return fmt.Errorf("a call: ok %v by %q: %s", c.OK, c.Pod, c.Error)
					}
				}
				return nil
			}))
		}
		must(t, a.Client.Delete(ctx, p))
	})

	t.Run("a weighted split and its change", func(t *testing.T) {
		f.policy(t, weights(a.Name, b.Name, 20, 80))
		for impl, client := range clients(t) {
			must(t, testbed.Poll(ctx, 30*time.Second, string(impl)+": the split reaches the client", func() error {
				if s := sc.Split(mustCalls(ctx, t, client, 50)); s[b.Name] == 0 {
					return fmt.Errorf("split %v", s)
				}
				return nil
			}))
			s := sc.Split(mustCalls(ctx, t, client, sc.SplitCalls))
			t.Logf("SPLIT (%s) {A:20, B:80} over %d calls: A %d, B %d, failed %d", impl, sc.SplitCalls, s[a.Name], s[b.Name], s[""])
			if err := sc.CheckSplit(s[a.Name], sc.SplitCalls, 20); err != nil || s[""] > 0 {
				t.Errorf("%s: split %v: A %v, %d failed", impl, s, err, s[""])
			}
		}

		// The time a change takes: {A:20, B:80} → {A:100, B:0}, so that the moment every
		// call goes to A is exact.
		load, err := sc.StartLoad(ctx, f.client, 5*time.Millisecond)
		must(t, err)
		changed := f.policy(t, weights(a.Name, b.Name, 100, 0))
		offset := load.Offset(changed)
		must(t, testbed.Poll(ctx, 10*time.Second, "two seconds of calls after the change", func() error {
			cs, err := load.Results(ctx)
			if err == nil && (len(cs) == 0 || cs[len(cs)-1].At < offset+2000) {
				err = fmt.Errorf("%d calls", len(cs))
			}
			return err
		}))
		cs, err := load.Stop(ctx)
		must(t, err)
		holds := sc.SteadyAfter(cs, offset, a.Name)
		t.Logf("WEIGHT CHANGE: every call follows the new weights %.0f ms after the MeshFederation update (%d calls, %d failed)", holds, len(cs), sc.Split(cs)[""])
		for _, c := range cs {
			if !c.OK {
				t.Errorf("a call %.0f ms after the change failed: %s", c.At-offset, c.Error)
			}
		}
		if holds < 0 || holds > 1000 {
			t.Errorf("the new weights took %.0f ms (want < 1000)", holds)
		}
		f.policy(t, weights(a.Name, b.Name, 50, 50))
		must(t, testbed.Poll(ctx, 10*time.Second, "B back in the split", func() error {
			if s := sc.Split(f.calls(t, 50)); s[b.Name] == 0 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		}))
		s := sc.Split(f.calls(t, sc.SplitCalls))
		t.Logf("SPLIT {A:50, B:50} over %d calls: A %d, B %d, failed %d", sc.SplitCalls, s[a.Name], s[b.Name], s[""])
		if err := sc.CheckSplit(s[a.Name], sc.SplitCalls, 50); err != nil || s[""] > 0 {
			t.Errorf("split %v: A %v, %d failed", s, err, s[""])
		}
	})

	f.policy(t, func(tp *meshv1.TrafficPolicy) { tp.Failover = []string{b.Name} })
	must(t, sc.AllOn(ctx, f.client, a.Name, 50, 30*time.Second))

	t.Run("failover when A's servers turn unready, and back", func(t *testing.T) {
		moved, failed, _, _, cs := f.failover(t, func() { must(t, f.serverA.SetReady(ctx, false)) })
		t.Logf("READINESS FAILOVER: %d calls, %d failed; all on B %.0f ms after the pod turned unready", len(cs), len(failed), moved)
		if len(failed) != 0 {
			t.Errorf("%d calls failed when the endpoint turned unready: %+v", len(failed), failed[0])
		}
		must(t, f.serverA.SetReady(ctx, true))
		must(t, sc.AllOn(ctx, f.client, a.Name, 20, 10*time.Second))
	})

	t.Run("failover when A's servers die, and back", func(t *testing.T) {
		var dead time.Time
		recovered, failed, load, _, cs := f.failover(t, func() {
			must(t, f.serverA.Kill(ctx))
			dead = time.Now() // the process is gone: calls started later must not fail
		})
		t.Logf("KILL FAILOVER: %d calls, %d failed (in flight at the kill); 100%% success on B %.0f ms after the kill", len(cs), len(failed), recovered)
		// In flight: started before the server was gone. (The slack covers the client
		// reading the reset a moment after the kernel sent it.)
		limit := load.Offset(dead) + 20
		for _, c := range failed {
			if c.At > limit {
				t.Errorf("a call started %.0f ms after the server was gone failed: %s", c.At-limit+20, c.Error)
			}
		}
		var err error
		killed := f.serverA
		f.serverA, err = f.Server(ctx, a, "echo-a2")
		must(t, err)
		must(t, sc.AllOn(ctx, f.client, a.Name, 20, 20*time.Second))
		// The dead pod is cleaned up, as its owner would: its agent's certificate goes too.
		must(t, a.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: killed.Namespace, Name: killed.Name}}, client.GracePeriodSeconds(0)))
	})

	t.Run("a root rotation under load: no call fails, and every agent re-issues", func(t *testing.T) {
		load, err := sc.StartLoad(ctx, f.client, 20*time.Millisecond)
		must(t, err)
		start := time.Now()
		// Longer than a pod's files take to follow a ConfigMap (5 s on the testbed's node)
		// and the app to re-read them (1 s).
		before, after, err := f.RotateRoot(ctx, "r2", 8*time.Second)
		must(t, err)
		cs, err := load.Stop(ctx)
		must(t, err)
		t.Logf("ROTATION UNDER LOAD: %d calls in %s, %d failed (root %.12s → %.12s)", len(cs), time.Since(start).Round(time.Second), sc.Split(cs)[""], before, after)
		for _, c := range cs {
			if !c.OK {
				t.Errorf("a call %.0f ms into the rotation failed: %s", c.At, c.Error)
			}
		}
		if len(cs) < 100 {
			t.Errorf("only %d calls during the rotation", len(cs))
		}
		for _, c := range []*testbed.Cluster{a, b} {
			mesh, err := sc.GetMesh(ctx, c)
			must(t, err)
			tr := mesh.Status.Trust
			// The agents of the echo server and the client in A, the server in B, and the
			// control plane's and the gateway's certificates.
			if tr == nil || tr.WorkloadCertificates < 3 || tr.WorkloadCertificatesCurrent != tr.WorkloadCertificates {
				t.Errorf("%s: trust status %+v, want every workload certificate current", c.Name, tr)
			}
		}
		if s := sc.Split(f.calls(t, 20)); s[""] > 0 {
			t.Errorf("calls after the rotation: %v", s)
		}
	})

	t.Run("a certificate from another root is refused", func(t *testing.T) {
		identity := foreignIdentity(t, a)
		rogue, err := f.RunEcho(ctx, a, "rogue", "client", "rogue", identity, sc.ClientPort, nil)
		must(t, err)
		cs, err := sc.Calls(ctx, rogue, 5)
		must(t, err)
		for _, c := range cs {
			if c.OK {
				t.Fatalf("a client with a foreign certificate was served by %s", c.Cluster)
			}
		}
		t.Logf("refused: %s", cs[0].Error)
	})

	t.Run("a NACK is counted and logged, other proxies keep working", func(t *testing.T) {
		// No certificate provider in its bootstrap: the mTLS clusters are refused.
		nacker, err := f.RunEcho(ctx, a, "nacker", "client", "nacker", "", sc.ClientPort, nil)
		must(t, err)
		cs, err := sc.Calls(ctx, nacker, 1)
		must(t, err)
		if cs[0].OK {
			t.Fatalf("a client without certificates was served: %+v", cs[0])
		}
		must(t, testbed.Poll(ctx, 10*time.Second, "the NACK counted", func() error {
			if v := a.OperatorMetric(ctx, `meshfed_xds_nacks_total{type="Cluster"} `); v == "" || v == "0" {
				return fmt.Errorf("nacks %q", v)
			}
			return nil
		}))
		log, err := a.OperatorLogs(ctx)
		must(t, err)
		if !strings.Contains(log, "nacker.shop") || !strings.Contains(log, "NACK") {
			t.Error("the operator log does not name the node whose NACK it got")
		}
		if s := sc.Split(f.calls(t, 20)); s[a.Name] != 20 {
			t.Errorf("the other client: %v", s)
		}
	})
}

// foreignIdentity writes a SPIFFE certificate from a self-signed CA outside the federation
// (and the federation's bundle, so that it would accept the server) into an identity
// Secret of the shop namespace, and returns its name.
func foreignIdentity(t *testing.T, c *testbed.Cluster) string {
	t.Helper()
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "foreign"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: sc.Namespace, Name: "foreign"},
		Spec: cmapi.CertificateSpec{SecretName: "foreign", URIs: []string{"spiffe://cluster.local/ns/shop/sa/client"},
			Usages:    []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: "foreign", Kind: cmapi.IssuerKind}}})
	var s corev1.Secret
	testbed.Eventually(t, time.Minute, "the foreign certificate", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: sc.Namespace, Name: "foreign"}, &s)
	})
	var ca corev1.Secret
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &ca))
	must(t, sc.WriteIdentitySecret(ctx, c, "foreign-identity", s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], ca.Data[trust.KeyBundle]))
	return "foreign-identity"
}

// BenchmarkFailoverAndSplit measures, with real proxyless gRPC clients and servers: the
// time until every call succeeds on B after A's server is killed (and the calls lost), the
// same when A's server turns unready, and how far a {A:20, B:80} split over 1000 calls is
// from 20 %. One iteration is one kill, one readiness flip and one split.
func BenchmarkFailoverAndSplit(b *testing.B) {
	f := start(b)
	ctx := context.Background()
	var kills, flips, splitErr []float64
	lost, lostFlip := 0, 0
	i := 0
	for b.Loop() {
		f.policy(b, func(tp *meshv1.TrafficPolicy) { tp.Failover = []string{f.b.Name} })
		must(b, sc.AllOn(ctx, f.client, f.a.Name, 20, time.Minute))
		ms, failed, _, _, _ := f.failover(b, func() { must(b, f.serverA.Kill(ctx)) })
		kills, lost = append(kills, ms), lost+len(failed)
		i++
		var err error
		f.serverA, err = f.Server(ctx, f.a, fmt.Sprintf("echo-a%d", i))
		must(b, err)
		must(b, sc.AllOn(ctx, f.client, f.a.Name, 20, time.Minute))
		ms, failed, _, _, _ = f.failover(b, func() { must(b, f.serverA.SetReady(ctx, false)) })
		flips, lostFlip = append(flips, ms), lostFlip+len(failed)
		must(b, f.serverA.SetReady(ctx, true))
		// Traffic back on A first: calls reaching B must come from the split, not from the
		// failover that A's return ends.
		must(b, sc.AllOn(ctx, f.client, f.a.Name, 20, time.Minute))
		f.policy(b, weights(f.a.Name, f.b.Name, 20, 80))
		must(b, testbed.Poll(ctx, 30*time.Second, "the split in force", func() error {
			if s := sc.Split(f.calls(b, 50)); s[f.b.Name] == 0 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		}))
		s := sc.Split(f.calls(b, 1000))
		splitErr = append(splitErr, float64(s[f.a.Name])/10-20)
	}
	slices.Sort(kills)
	slices.Sort(flips)
	b.ReportMetric(kills[len(kills)/2], "ms-kill-failover-p50")
	b.ReportMetric(kills[len(kills)-1], "ms-kill-failover-max")
	b.ReportMetric(float64(lost)/float64(len(kills)), "calls-lost/kill")
	b.ReportMetric(flips[len(flips)/2], "ms-unready-failover-p50")
	b.ReportMetric(float64(lostFlip), "calls-lost-unready")
	worst := 0.0
	for _, e := range splitErr {
		worst = max(worst, math.Abs(e))
	}
	b.ReportMetric(worst, "pct-split-error-max")
}

// measureFaults checks that the fault policy on echo delays 20 % of the calls of client
// by 300 ms and aborts 10 % as Unavailable, each within 3 points, over 3,000 calls.
func measureFaults(ctx context.Context, t *testing.T, impl sc.Implementation, client *testbed.Workload) {
	t.Helper()
	must(t, testbed.Poll(ctx, 30*time.Second, "the first injected abort", func() error {
		for _, c := range mustCalls(ctx, t, client, 50) {
			if strings.Contains(c.Error, "Unavailable") {
				return nil
			}
		}
		return fmt.Errorf("no call aborted yet")
	}))
	// Calls every 5 ms, each on its own (a delayed call holds no other back).
	load, err := sc.StartLoad(ctx, client, 5*time.Millisecond)
	must(t, err)
	// Only calls that had their full second (the load's deadline) before the load
	// stopped count, so that none is left out for being slow.
	settled := func(cs []sc.Call) []sc.Call {
		slices.SortFunc(cs, func(x, y sc.Call) int { return cmp.Compare(x.At, y.At) })
		last := 0.0
		for _, c := range cs {
			last = max(last, c.At)
		}
		return slices.DeleteFunc(cs, func(c sc.Call) bool { return c.At > last-1500 })
	}
	must(t, testbed.Poll(ctx, time.Minute, "3,000 settled calls", func() error {
		cs, err := load.Results(ctx)
		if n := len(settled(cs)); err == nil && n < sc.SplitCalls {
			err = fmt.Errorf("%d calls", n)
		}
		return err
	}))
	cs, err := load.Stop(ctx)
	must(t, err)
	cs = settled(cs)[:sc.SplitCalls]
	delayed, aborted := 0, 0
	for _, c := range cs {
		if c.Millis >= 300 {
			delayed++
		}
		switch {
		case strings.Contains(c.Error, "Unavailable"):
			aborted++
		case !c.OK:
			t.Errorf("%s: a call failed otherwise: %s", impl, c.Error)
		}
	}
	t.Logf("FAULT INJECTION (%s) over %d calls: %d delayed ≥ 300 ms (20 %% asked), %d aborted Unavailable (10 %% asked)", impl, len(cs), delayed, aborted)
	if err := sc.CheckSplit(delayed, len(cs), 20); err != nil {
		t.Errorf("%s: delayed: %v", impl, err)
	}
	if err := sc.CheckSplit(aborted, len(cs), 10); err != nil {
		t.Errorf("%s: aborted: %v", impl, err)
	}
}

func mustCalls(ctx context.Context, t *testing.T, client *testbed.Workload, n int) []sc.Call {
	t.Helper()
	cs, err := sc.Calls(ctx, client, n)
	must(t, err)
	return cs
}

// loadOf runs a load of calls every 5 ms with headers on client until n have ended, and
// returns them.
func loadOf(ctx context.Context, client *testbed.Workload, headers map[string]string, n int) ([]sc.Call, error) {
	load, err := sc.StartLoadWith(ctx, client, 5*time.Millisecond, headers)
	if err != nil {
		return nil, err
	}
	err = testbed.Poll(ctx, 30*time.Second, fmt.Sprintf("%d calls of the load", n), func() error {
		cs, err := load.Results(ctx)
		if err == nil && len(cs) < n {
			err = fmt.Errorf("%d calls", len(cs))
		}
		return err
	})
	cs, stopErr := load.Stop(ctx)
	return cs, errors.Join(err, stopErr)
}
