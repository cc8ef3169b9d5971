package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation/join"
	"github.com/meshfed/meshfed/federation/trust"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
	"github.com/meshfed/meshfed/operator/bootstrap"
	"github.com/meshfed/meshfed/testbed"
)

const (
	hubNS    = "meshfed-system"
	ns       = "shop"
	echoPort = 9000
	target   = "xds:///echo.shop.svc.clusterset.local:9000"
)

// mesh is a 3-cluster federation (all in one network) with echo servers and a client.
type mesh struct {
	tb  *testbed.Testbed
	hub *testbed.Cluster
	dir string
}

func startMesh(t testing.TB) *mesh {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 3, Operator: true})
	m := &mesh{tb: tb, hub: tb.Clusters[0], dir: t.TempDir()}
	ctx := context.Background()
	testbed.MustCreate(ctx, t, m.hub.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubNS}})
	fed := &meshv1.MeshFederation{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "global"},
		Spec: meshv1.MeshFederationSpec{Trust: meshv1.TrustSpec{Bootstrap: meshv1.BootstrapSelfSigned}}}
	for _, c := range tb.Clusters {
		if _, err := join.Join(ctx, join.Options{Name: c.Name, Member: c.Client, MemberConfig: c.Config, Hub: m.hub.Client, HubNamespace: hubNS}); err != nil {
			t.Fatal(err)
		}
		testbed.MustCreate(ctx, t, c.Client, &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshSingletonName},
			Spec: meshv1.MeshSpec{ClusterName: c.Name, Network: "net-1"}})
		fed.Spec.Members = append(fed.Spec.Members, meshv1.Member{Name: c.Name, KubeconfigSecretRef: meshv1.SecretKeyRef{Name: join.SecretName(c.Name)}})
		testbed.MustCreate(ctx, t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	testbed.MustCreate(ctx, t, m.hub.Client, fed)
	for _, c := range tb.Clusters {
		testbed.Eventually(t, 2*time.Minute, c.Name+": Mesh TrustReady and ControlPlaneReady", func() error {
			var mesh meshv1.Mesh
			if err := c.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh); err != nil {
				return err
			}
			for _, typ := range []string{meshv1.ConditionTrustReady, meshv1.ConditionControlPlaneReady} {
				if cond := meta.FindStatusCondition(mesh.Status.Conditions, typ); cond == nil || cond.Status != metav1.ConditionTrue {
					return fmt.Errorf("%s %+v", typ, cond)
				}
			}
			return nil
		})
	}
	return m
}

// identityFiles issues the SPIFFE certificate of ns/sa in c and keeps it, with the
// member's trust bundle, in a directory as the file_watcher provider reads it.
func (m *mesh) identityFiles(t testing.TB, c *testbed.Cluster, sa string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := trust.IssueWorkload(ctx, c.Client, join.MemberNamespace, "cluster.local", ns, sa, time.Minute); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.dir, c.Name, sa)
	write := func() error {
		id, err := trust.ReadWorkload(ctx, c.Client, join.MemberNamespace, ns, sa)
		if err != nil {
			return err
		}
		return bootstrap.WriteCertFiles(dir, id.CertPEM, id.KeyPEM, id.BundlePEM)
	}
	if err := write(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			time.Sleep(time.Second)
			_ = write()
		}
	}()
	return dir
}

// run starts an echo workload (server or client) in c with its bootstrap.
func (m *mesh) run(t testing.TB, c *testbed.Cluster, name, mode, sa, certDir string, port int32, labels map[string]string) *testbed.Workload {
	t.Helper()
	boot, err := bootstrap.JSON(bootstrap.Options{XDSAddress: c.XDSHost() + ":15010", NodeID: name + "." + ns, Cluster: c.Name, CertDir: certDir, Refresh: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	path := filepath.Join(m.dir, c.Name+"-"+name+".json")
	if err := os.WriteFile(path, boot, 0o600); err != nil {
		t.Fatal(err)
	}
	echo, err := m.tb.Binary(context.Background(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.RunWorkload(context.Background(), testbed.WorkloadSpec{Namespace: ns, Name: name, Labels: labels, ServiceAccount: sa,
		Ports:   []corev1.ContainerPort{{ContainerPort: port}},
		Command: []string{echo, mode},
		Env:     map[string]string{"GRPC_XDS_BOOTSTRAP": path, "GRPC_EXPERIMENTAL_XDS_SNI": "true", "GRPC_GO_LOG_SEVERITY_LEVEL": "warning"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WaitReady(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return w
}

func (m *mesh) server(t testing.TB, c *testbed.Cluster, name string) *testbed.Workload {
	return m.run(t, c, name, "server", "echo", m.identityFiles(t, c, "echo"), echoPort, map[string]string{"app": "echo"})
}

// exportEcho creates the echo Service and its ServiceExport in c.
func exportEcho(t testing.TB, c *testbed.Cluster) {
	t.Helper()
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"}, Ports: []corev1.ServicePort{{Name: "grpc", Port: echoPort, TargetPort: intstr.FromInt32(echoPort)}}}})
	testbed.MustCreate(ctx, t, c.Client, &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}})
}

type call struct {
	At      float64 `json:"at"`
	OK      bool    `json:"ok"`
	Cluster string  `json:"cluster"`
	Peer    string  `json:"peer"`
	Caller  string  `json:"caller"`
	Error   string  `json:"error"`
}

func httpJSON(t testing.TB, method, url string, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", method, url, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
	}
}

// calls makes n calls from the client workload now.
func calls(t testing.TB, client *testbed.Workload, n int) []call {
	t.Helper()
	var out []call
	httpJSON(t, http.MethodGet, fmt.Sprintf("http://%s/call?target=%s&n=%d", client.Addr(8080), target, n), &out)
	return out
}

// split counts calls by the cluster that answered; failures count under "".
func split(cs []call) map[string]int {
	out := map[string]int{}
	for _, c := range cs {
		if c.OK {
			out[c.Cluster]++
		} else {
			out[""]++
		}
	}
	return out
}

func (m *mesh) setPolicy(t testing.TB, tp *meshv1.TrafficPolicy) time.Time {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fed meshv1.MeshFederation
		if err := m.hub.Client.Get(context.Background(), client.ObjectKey{Namespace: hubNS, Name: "global"}, &fed); err != nil {
			return err
		}
		fed.Spec.TrafficPolicies = nil
		if tp != nil {
			fed.Spec.TrafficPolicies = []meshv1.TrafficPolicy{*tp}
		}
		return m.hub.Client.Update(context.Background(), &fed)
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// load runs calls every interval until the returned function stops them and returns them.
func load(t testing.TB, client *testbed.Workload, interval time.Duration) (started time.Time, stop func() []call) {
	t.Helper()
	httpJSON(t, http.MethodPost, fmt.Sprintf("http://%s/load?target=%s&interval=%s", client.Addr(8080), target, interval), nil)
	started = time.Now()
	return started, func() []call {
		var out []call
		httpJSON(t, http.MethodGet, "http://"+client.Addr(8080)+"/results", &out)
		httpJSON(t, http.MethodPost, "http://"+client.Addr(8080)+"/stop", nil)
		return out
	}
}

// sinceFirstSteady is when, counted from offset (ms into the load), every later call
// succeeded on cluster; -1 if never.
func sinceFirstSteady(cs []call, offset float64, cluster string) float64 {
	steady := -1.0
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		if c.At < offset {
			break
		}
		if !c.OK || c.Cluster != cluster {
			break
		}
		steady = c.At - offset
	}
	return steady
}

func metricValue(t testing.TB, url, prefix string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(line, prefix))
		}
	}
	return ""
}

// TestProxylessGRPC: real grpc-go xDS clients and servers on the testbed, configured by the
// members' control planes: local first, weighted splits and their changes, failover when
// servers die or turn unready, SPIFFE mTLS (a foreign certificate is refused), and a NACK
// that leaves the other proxies alone.
func TestProxylessGRPC(t *testing.T) {
	m := startMesh(t)
	a, b := m.tb.Clusters[0], m.tb.Clusters[1]
	exportEcho(t, a)
	exportEcho(t, b)
	echoA := m.server(t, a, "echo-a")
	m.server(t, b, "echo-b")
	client := m.run(t, a, "client", "client", "client", m.identityFiles(t, a, "client"), 8080, nil)

	testbed.Eventually(t, time.Minute, "calls from A reach the servers in A", func() error {
		got := calls(t, client, 20)
		if s := split(got); s[a.Name] != 20 {
			return fmt.Errorf("split %v, first %+v", s, got[0])
		}
		return nil
	})
	testbed.Eventually(t, 10*time.Second, "A's Mesh reports its proxies and snapshot", func() error {
		mesh, err := getMesh(a)
		if err != nil {
			return err
		}
		// The server and the client in A hold an ADS stream each.
		if mesh.Status.ConnectedProxies < 2 || mesh.Status.SnapshotVersion == "" {
			return fmt.Errorf("connected proxies %d, snapshot %q", mesh.Status.ConnectedProxies, mesh.Status.SnapshotVersion)
		}
		return nil
	})
	t.Run("calls are mutually authenticated with SPIFFE identities", func(t *testing.T) {
		for _, c := range calls(t, client, 10) {
			if c.Peer != "spiffe://cluster.local/ns/shop/sa/echo" || c.Caller != "spiffe://cluster.local/ns/shop/sa/client" {
				t.Fatalf("the client saw %q, the server saw %q", c.Peer, c.Caller)
			}
		}
	})

	t.Run("a weighted split and its change", func(t *testing.T) {
		m.setPolicy(t, &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"},
			Weights: []meshv1.ClusterWeight{{Cluster: a.Name, Weight: 20}, {Cluster: b.Name, Weight: 80}}})
		testbed.Eventually(t, 30*time.Second, "the split reaches the client", func() error {
			if s := split(calls(t, client, 50)); s[b.Name] == 0 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
		s := split(calls(t, client, 1000))
		t.Logf("SPLIT {A:20, B:80} over 1000 calls: A %d, B %d, failed %d", s[a.Name], s[b.Name], s[""])
		if s[""] > 0 || s[a.Name] < 170 || s[a.Name] > 230 {
			t.Errorf("split %v, want A 200±30 and no failure", s)
		}

		// The time a change takes: {A:20, B:80} → {A:100, B:0}, so that the moment every
		// call goes to A is exact.
		started, stop := load(t, client, 5*time.Millisecond)
		time.Sleep(500 * time.Millisecond) // calls under the old split first
		changed := m.setPolicy(t, &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"},
			Weights: []meshv1.ClusterWeight{{Cluster: a.Name, Weight: 100}, {Cluster: b.Name, Weight: 0}}})
		offset := float64(changed.Sub(started).Milliseconds())
		testbed.Eventually(t, 10*time.Second, "two seconds of calls after the change", func() error {
			var cs []call
			httpJSON(t, http.MethodGet, "http://"+client.Addr(8080)+"/results", &cs)
			if len(cs) == 0 || cs[len(cs)-1].At < offset+2000 {
				return fmt.Errorf("%d calls", len(cs))
			}
			return nil
		})
		cs := stop()
		holds := sinceFirstSteady(cs, offset, a.Name)
		t.Logf("WEIGHT CHANGE: every call follows the new weights %.0f ms after the MeshFederation update (%d calls, %d failed)", holds, len(cs), split(cs)[""])
		if holds < 0 || holds > 1000 || split(cs)[""] > 0 {
			t.Errorf("the new weights took %.0f ms (want < 1000) with %d failed calls", holds, split(cs)[""])
		}
		m.setPolicy(t, &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"},
			Weights: []meshv1.ClusterWeight{{Cluster: a.Name, Weight: 50}, {Cluster: b.Name, Weight: 50}}})
		testbed.Eventually(t, 10*time.Second, "B back in the split", func() error {
			if s := split(calls(t, client, 50)); s[b.Name] == 0 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
		s = split(calls(t, client, 1000))
		t.Logf("SPLIT {A:50, B:50} over 1000 calls: A %d, B %d, failed %d", s[a.Name], s[b.Name], s[""])
		if s[""] > 0 || s[a.Name] < 470 || s[a.Name] > 530 {
			t.Errorf("split %v, want A 500±30", s)
		}
	})

	m.setPolicy(t, &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"}, Failover: []string{b.Name}})
	testbed.Eventually(t, 30*time.Second, "all calls on A again", func() error {
		if s := split(calls(t, client, 50)); s[a.Name] != 50 {
			return fmt.Errorf("split %v", s)
		}
		return nil
	})

	t.Run("failover when A's servers turn unready, and back", func(t *testing.T) {
		started, stop := load(t, client, 10*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		flipped := time.Now()
		if err := echoA.SetReady(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 10*time.Second, "calls move to B", func() error {
			if s := split(calls(t, client, 20)); s[b.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
		cs := stop()
		s := split(cs)
		moved := sinceFirstSteady(cs, float64(flipped.Sub(started).Milliseconds()), b.Name)
		t.Logf("READINESS FAILOVER: %d calls, %d failed; all on B %.0f ms after the pod turned unready", len(cs), s[""], moved)
		if s[""] != 0 {
			t.Errorf("%d calls failed when the endpoint turned unready", s[""])
		}
		if err := echoA.SetReady(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		testbed.Eventually(t, 10*time.Second, "calls return to A", func() error {
			if s := split(calls(t, client, 20)); s[a.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
	})

	t.Run("failover when A's servers die, and back", func(t *testing.T) {
		started, stop := load(t, client, 10*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		echoA.Kill()
		dead := time.Now() // the process is gone: calls started later must not fail
		testbed.Eventually(t, 10*time.Second, "calls succeed on B", func() error {
			if s := split(calls(t, client, 20)); s[b.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond)
		cs := stop()
		s := split(cs)
		recovered := sinceFirstSteady(cs, float64(killed.Sub(started).Milliseconds()), b.Name)
		t.Logf("KILL FAILOVER: %d calls, %d failed (in flight at the kill); 100%% success on B %.0f ms after the kill", len(cs), s[""], recovered)
		// In flight: started before the server was gone. (The slack covers the client
		// reading the reset a moment after the kernel sent it.)
		limit := float64(dead.Sub(started).Milliseconds()) + 20
		var late []string
		for _, c := range cs {
			if !c.OK && c.At > limit {
				late = append(late, fmt.Sprintf("%.0f ms: %s", c.At, c.Error))
			}
		}
		if len(late) > 0 {
			t.Errorf("%d calls started after the server was gone (at %.0f ms) failed:\n%s", len(late), limit-20, strings.Join(late, "\n"))
		}
		m.server(t, a, "echo-a2")
		testbed.Eventually(t, 20*time.Second, "calls return to A's new server", func() error {
			if s := split(calls(t, client, 20)); s[a.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
	})

	t.Run("a certificate from another root is refused", func(t *testing.T) {
		dir := foreignIdentity(t, m, a)
		rogue := m.run(t, a, "rogue", "client", "rogue", dir, 8080, nil)
		for _, c := range calls(t, rogue, 5) {
			if c.OK {
				t.Fatalf("a client with a foreign certificate was served by %s", c.Cluster)
			}
		}
		t.Logf("refused: %s", calls(t, rogue, 1)[0].Error)
	})

	t.Run("a NACK is counted and logged, other proxies keep working", func(t *testing.T) {
		// No certificate provider in its bootstrap: the mTLS clusters are refused.
		nacker := m.run(t, a, "nacker", "client", "nacker", "", 8080, nil)
		if c := calls(t, nacker, 1)[0]; c.OK {
			t.Fatalf("a client without certificates was served: %+v", c)
		}
		testbed.Eventually(t, 10*time.Second, "the NACK counted", func() error {
			if v := metricValue(t, a.OperatorMetricsURL, `meshfed_xds_nacks_total{type="Cluster"} `); v == "" || v == "0" {
				return fmt.Errorf("nacks %q", v)
			}
			return nil
		})
		log, _ := os.ReadFile(filepath.Join(a.Dir, "operator.log"))
		if !strings.Contains(string(log), "nacker.shop") || !strings.Contains(string(log), "NACK") {
			t.Error("the operator log does not name the node whose NACK it got")
		}
		if s := split(calls(t, client, 20)); s[a.Name] != 20 {
			t.Errorf("the other client: %v", s)
		}
	})
}

func getMesh(c *testbed.Cluster) (*meshv1.Mesh, error) {
	var mesh meshv1.Mesh
	err := c.Client.Get(context.Background(), client.ObjectKey{Name: meshv1.MeshSingletonName}, &mesh)
	return &mesh, err
}

// foreignIdentity writes a SPIFFE certificate from a self-signed CA outside the federation.
func foreignIdentity(t *testing.T, m *mesh, c *testbed.Cluster) string {
	t.Helper()
	ctx := context.Background()
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "foreign"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}})
	testbed.MustCreate(ctx, t, c.Client, &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "foreign"},
		Spec: cmapi.CertificateSpec{SecretName: "foreign", URIs: []string{"spiffe://cluster.local/ns/shop/sa/client"},
			Usages:    []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: "foreign", Kind: cmapi.IssuerKind}}})
	var s corev1.Secret
	testbed.Eventually(t, time.Minute, "the foreign certificate", func() error {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "foreign"}, &s)
	})
	var ca corev1.Secret
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: join.MemberNamespace, Name: trust.CACertsSecret}, &ca); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.dir, c.Name, "foreign")
	// It trusts the federation (so it would accept the server) but holds a foreign cert.
	if err := bootstrap.WriteCertFiles(dir, s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], ca.Data[trust.KeyBundle]); err != nil {
		t.Fatal(err)
	}
	return dir
}

// BenchmarkFailoverAndSplit measures, with real proxyless gRPC clients and servers: the
// time until every call succeeds on B after A's server is killed (and the calls lost), the
// same when A's server turns unready, and how far a {A:20, B:80} split over 1000 calls is
// from 20 %. One iteration is one kill, one readiness flip and one split.
func BenchmarkFailoverAndSplit(b *testing.B) {
	m := startMesh(b)
	a, bb := m.tb.Clusters[0], m.tb.Clusters[1]
	exportEcho(b, a)
	exportEcho(b, bb)
	serverA := m.server(b, a, "echo-a0")
	m.server(b, bb, "echo-b")
	client := m.run(b, a, "client", "client", "client", m.identityFiles(b, a, "client"), 8080, nil)
	policy := func(tp *meshv1.TrafficPolicy) { m.setPolicy(b, tp) }
	onA := func() {
		testbed.Eventually(b, time.Minute, "all calls on A", func() error {
			if s := split(calls(b, client, 20)); s[a.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
	}
	onB := func() {
		testbed.Eventually(b, 10*time.Second, "all calls on B", func() error {
			if s := split(calls(b, client, 20)); s[bb.Name] != 20 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
	}
	measure := func(event func()) (float64, int) {
		started, stop := load(b, client, 10*time.Millisecond)
		time.Sleep(300 * time.Millisecond) // calls before the event
		at := time.Now()
		event()
		onB()
		time.Sleep(300 * time.Millisecond) // calls after recovery
		cs := stop()
		return sinceFirstSteady(cs, float64(at.Sub(started).Milliseconds()), bb.Name), split(cs)[""]
	}
	failover := &meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"}, Failover: []string{bb.Name}}
	var kills, flips, splitErr []float64
	lost, lostFlip := 0, 0
	i := 0
	for b.Loop() {
		policy(failover)
		onA()
		ms, failed := measure(serverA.Kill)
		kills, lost = append(kills, ms), lost+failed
		i++
		serverA = m.server(b, a, fmt.Sprintf("echo-a%d", i))
		onA()
		ms, failed = measure(func() {
			if err := serverA.SetReady(context.Background(), false); err != nil {
				b.Fatal(err)
			}
		})
		flips, lostFlip = append(flips, ms), lostFlip+failed
		if err := serverA.SetReady(context.Background(), true); err != nil {
			b.Fatal(err)
		}
		policy(&meshv1.TrafficPolicy{Service: meshv1.ServiceRef{Namespace: ns, Name: "echo"},
			Weights: []meshv1.ClusterWeight{{Cluster: a.Name, Weight: 20}, {Cluster: bb.Name, Weight: 80}}})
		testbed.Eventually(b, 30*time.Second, "the split in force", func() error {
			if s := split(calls(b, client, 50)); s[bb.Name] == 0 {
				return fmt.Errorf("split %v", s)
			}
			return nil
		})
		s := split(calls(b, client, 1000))
		splitErr = append(splitErr, float64(s[a.Name])/10-20)
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
