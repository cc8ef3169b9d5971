// Package e2e_test resolves clusterset.local names the way an application does: through
// each member's cluster DNS (CoreDNS), which forwards the zone to the meshfed-dns pods the
// member's operator runs.
package e2e_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/testbed"
	"github.com/meshfed/meshfed/testbed/scenario"
)

const ttl = 5 // the Mesh's default spec.dns.ttl

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// name is the clusterset.local name of a service of the shop namespace.
func name(svc string) string { return svc + ".shop.svc.clusterset.local." }

// importIPs reads c's ServiceImport of svc once it holds ClusterSet IPs.
func importIPs(t *testing.T, c *testbed.Cluster, svc string) []string {
	t.Helper()
	var si mcsv1beta1.ServiceImport
	testbed.Eventually(t, time.Minute, c.Name+": ClusterSet IPs of "+svc, func() error {
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: svc}, &si); err != nil {
			return err
		}
		if len(si.Spec.IPs) == 0 {
			return fmt.Errorf("no ips yet")
		}
		return nil
	})
	return si.Spec.IPs
}

// answers waits until c's cluster DNS answers name with rcode and exactly want (the A,
// AAAA or SRV data, sorted), each with the Mesh's TTL.
func answers(t *testing.T, c *testbed.Cluster, q string, qtype uint16, rcode int, want ...string) {
	t.Helper()
	slices.Sort(want)
	err := testbed.Poll(context.Background(), 30*time.Second, fmt.Sprintf("%s: %s %s → %s %v", c.Name, dns.TypeToString[qtype], q, dns.RcodeToString[rcode], want), func() error {
		resp, err := c.Resolve(context.Background(), q, qtype)
		if err != nil {
			return err
		}
		got := data(resp)
		if resp.Rcode != rcode || !slices.Equal(got, want) {
			return fmt.Errorf("%s %v", dns.RcodeToString[resp.Rcode], got)
		}
		for _, rr := range resp.Answer {
			if rr.Header().Ttl != ttl {
				return fmt.Errorf("TTL %d in %s, want %d", rr.Header().Ttl, rr, ttl)
			}
		}
		if !resp.Authoritative {
			return fmt.Errorf("the answer is not authoritative")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, diagnose(c, q, qtype))
	}
}

// diagnose says which leg of a failed question works: the cluster DNS for its own zone,
// and meshfed-dns asked directly.
func diagnose(c *testbed.Cluster, q string, qtype uint16) string {
	ctx := context.Background()
	out := "the cluster DNS for kubernetes.default.svc.cluster.local: "
	if resp, err := c.Resolve(ctx, "kubernetes.default.svc.cluster.local.", dns.TypeA); err != nil {
		out += err.Error()
	} else {
		out += dns.RcodeToString[resp.Rcode] + fmt.Sprint(data(resp))
	}
	mesh, err := scenario.GetMesh(ctx, c)
	if err != nil {
		return out + "; the Mesh: " + err.Error()
	}
	out += "; meshfed-dns at " + mesh.Status.DNSAddress + ": "
	ask := func(address string) string {
		resp, err := c.AskDNS(ctx, address, q, qtype)
		if err != nil {
			return err.Error()
		}
		return dns.RcodeToString[resp.Rcode] + fmt.Sprint(data(resp))
	}
	out += ask(net.JoinHostPort(mesh.Status.DNSAddress, "53"))
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(testbed.MeshfedNamespace), client.MatchingLabels{"app.kubernetes.io/name": "meshfed-dns"}); err != nil {
		return out + "; its pods: " + err.Error()
	}
	for _, p := range pods.Items {
		out += fmt.Sprintf("; pod %s (%s, %s): %s", p.Name, p.Status.PodIP, p.Status.Phase, ask(net.JoinHostPort(p.Status.PodIP, "1053")))
	}
	return out
}

// data is the answer section's data, sorted: addresses, or "port target" of SRV records.
func data(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %s", r.Port, r.Target))
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestClusterSetDNS: in every member, <svc>.<ns>.svc.clusterset.local resolves through the
// cluster DNS to the member's own ClusterSet IP (A and AAAA), named ports have SRV
// records, a headless service resolves to the ready endpoints of every exporting cluster
// and each endpoint to <hostname>.<cluster>.<svc>..., what is not imported is NXDOMAIN,
// changes are answered at once, and the answers outlive an operator restart.
func TestClusterSetDNS(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 2, Operator: true})
	a, b := tb.Clusters[0], tb.Clusters[1]
	ctx := context.Background()
	m, err := scenario.Federate(ctx, tb)
	must(t, err)
	must(t, m.ForwardClusterSetDNS(ctx))

	ports := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}, {Name: "grpc", Port: 9090, Protocol: corev1.ProtocolTCP}}
	for _, c := range tb.Clusters {
		svc := testbed.ClusterIPService(ports...)
		svc.Namespace, svc.Name = "shop", "cart"
		testbed.MustCreate(ctx, t, c.Client, svc)
		testbed.MustCreate(ctx, t, c.Client, testbed.ServiceExport("shop", "cart"))
	}
	v6 := testbed.ClusterIPService(testbed.HTTPPort(80))
	v6.Namespace, v6.Name = "shop", "cart6"
	v6.Spec.IPFamilies, v6.Spec.IPFamilyPolicy = []corev1.IPFamily{corev1.IPv6Protocol}, ptr.To(corev1.IPFamilyPolicySingleStack)
	testbed.MustCreate(ctx, t, a.Client, v6)
	testbed.MustCreate(ctx, t, a.Client, testbed.ServiceExport("shop", "cart6"))
	// A headless service with one named pod in each cluster.
	dbPods := map[string]*testbed.Workload{}
	for _, c := range tb.Clusters {
		db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
		testbed.MustCreate(ctx, t, c.Client, db)
		testbed.MustCreate(ctx, t, c.Client, testbed.ServiceExport("shop", "db"))
		w, err := c.RunWorkload(ctx, testbed.WorkloadSpec{Namespace: "shop", Name: "db-0", Labels: map[string]string{"app": "db"},
			Hostname: "db-0", Subdomain: "db", Ports: []corev1.ContainerPort{{ContainerPort: 5432}}})
		must(t, err)
		dbPods[c.Name] = w
	}
	// A service of a's that is not exported.
	local := testbed.ClusterIPService(testbed.HTTPPort(80))
	local.Namespace, local.Name = "shop", "local"
	testbed.MustCreate(ctx, t, a.Client, local)

	t.Run("A: each member's own ClusterSet IP", func(t *testing.T) {
		for _, c := range tb.Clusters {
			ips := importIPs(t, c, "cart")
			answers(t, c, name("cart"), dns.TypeA, dns.RcodeSuccess, ips...)
			// An IPv4 service has no AAAA record: the name exists, with no data.
			answers(t, c, name("cart"), dns.TypeAAAA, dns.RcodeSuccess)
		}
	})
	t.Run("AAAA: an IPv6 service's ClusterSet IP", func(t *testing.T) {
		for _, c := range tb.Clusters {
			ips := importIPs(t, c, "cart6")
			if ip := net.ParseIP(ips[0]); ip == nil || ip.To4() != nil {
				t.Fatalf("%s: ClusterSet IPs %v of an IPv6 service", c.Name, ips)
			}
			answers(t, c, name("cart6"), dns.TypeAAAA, dns.RcodeSuccess, ips...)
			answers(t, c, name("cart6"), dns.TypeA, dns.RcodeSuccess)
		}
	})
	t.Run("SRV: named ports", func(t *testing.T) {
		for _, c := range tb.Clusters {
			answers(t, c, "_http._tcp."+name("cart"), dns.TypeSRV, dns.RcodeSuccess, "80 "+name("cart"))
			answers(t, c, "_grpc._tcp."+name("cart"), dns.TypeSRV, dns.RcodeSuccess, "9090 "+name("cart"))
			answers(t, c, "_http._udp."+name("cart"), dns.TypeSRV, dns.RcodeNameError)
		}
	})
	t.Run("headless: the ready endpoints of every exporting cluster, and each by name", func(t *testing.T) {
		must(t, dbPods[a.Name].WaitReady(ctx, true))
		must(t, dbPods[b.Name].WaitReady(ctx, true))
		for _, c := range tb.Clusters {
			answers(t, c, name("db"), dns.TypeA, dns.RcodeSuccess, dbPods[a.Name].IP, dbPods[b.Name].IP)
			var srv []string
			for _, exporter := range tb.Clusters {
				answers(t, c, "db-0."+exporter.Name+"."+name("db"), dns.TypeA, dns.RcodeSuccess, dbPods[exporter.Name].IP)
				srv = append(srv, "5432 db-0."+exporter.Name+"."+name("db"))
			}
			answers(t, c, "_pg._tcp."+name("db"), dns.TypeSRV, dns.RcodeSuccess, srv...)
		}
	})
	t.Run("NXDOMAIN for what is not imported here", func(t *testing.T) {
		for _, c := range tb.Clusters {
			answers(t, c, name("local"), dns.TypeA, dns.RcodeNameError)
			answers(t, c, "cart.nowhere.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError)
			answers(t, c, "db-1."+a.Name+"."+name("db"), dns.TypeA, dns.RcodeNameError)
		}
		// meshfed-dns answers its zone only: another name is refused, not forwarded.
		mesh, err := scenario.GetMesh(ctx, a)
		must(t, err)
		resp, err := a.AskDNS(ctx, net.JoinHostPort(mesh.Status.DNSAddress, "53"), "example.com.", dns.TypeA)
		must(t, err)
		if resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
			t.Errorf("meshfed-dns answered example.com with %s %v, want REFUSED", dns.RcodeToString[resp.Rcode], resp.Answer)
		}
	})
	t.Run("changes are answered at once", func(t *testing.T) {
		// An endpoint that goes: its address leaves the headless answer.
		must(t, b.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0"}}))
		answers(t, a, name("db"), dns.TypeA, dns.RcodeSuccess, dbPods[a.Name].IP)
		answers(t, a, "db-0."+b.Name+"."+name("db"), dns.TypeA, dns.RcodeNameError)
		// A new export: resolvable in every member as soon as it is imported there.
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Namespace, svc.Name = "shop", "late"
		testbed.MustCreate(ctx, t, b.Client, svc)
		testbed.MustCreate(ctx, t, b.Client, testbed.ServiceExport("shop", "late"))
		for _, c := range tb.Clusters {
			ips := importIPs(t, c, "late")
			imported := time.Now()
			answers(t, c, name("late"), dns.TypeA, dns.RcodeSuccess, ips...)
			t.Logf("%s: late.shop resolvable %v after its import held its ClusterSet IP", c.Name, time.Since(imported).Round(time.Millisecond))
		}
		// An export withdrawn: the name goes.
		must(t, a.Client.Delete(ctx, testbed.ServiceExport("shop", "cart6")))
		for _, c := range tb.Clusters {
			answers(t, c, name("cart6"), dns.TypeAAAA, dns.RcodeNameError)
		}
	})
	t.Run("an operator restart keeps the answers", func(t *testing.T) {
		before := importIPs(t, a, "cart")
		must(t, a.StopOperator(ctx))
		// meshfed-dns runs on its own: the names resolve while the operator is away.
		answers(t, a, name("cart"), dns.TypeA, dns.RcodeSuccess, before...)
		must(t, a.StartOperator(ctx))
		answers(t, a, name("cart"), dns.TypeA, dns.RcodeSuccess, before...)
		if after := importIPs(t, a, "cart"); !slices.Equal(after, before) {
			t.Errorf("ClusterSet IPs %v after the restart, %v before", after, before)
		}
	})
}

// BenchmarkExportToResolvable: from a ServiceExport's creation in one member until its
// clusterset.local name resolves to the ClusterSet IP through the cluster DNS of every
// member (each polled every 5 ms, a question unanswered in 100 ms asked again). That bounds
// import → resolvable from above: it includes the hub's sync and the ClusterSet IP
// allocation. Unanswered questions are counted.
func BenchmarkExportToResolvable(b *testing.B) {
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 2, Operator: true})
	ctx := context.Background()
	m, err := scenario.Federate(ctx, tb)
	must(b, err)
	must(b, m.ForwardClusterSetDNS(ctx))
	exporter := tb.Clusters[1]
	var lags []time.Duration
	var timeouts atomic.Int64
	b.ResetTimer()
	for i := range b.N {
		svc := testbed.ClusterIPService(testbed.HTTPPort(80))
		svc.Namespace, svc.Name = "shop", fmt.Sprintf("bench-%d", i)
		must(b, exporter.Client.Create(ctx, svc))
		start := time.Now()
		must(b, exporter.Client.Create(ctx, testbed.ServiceExport("shop", svc.Name)))
		var wg sync.WaitGroup
		for _, c := range tb.Clusters {
			wg.Go(func() {
				err := testbed.PollEvery(ctx, 30*time.Second, 5*time.Millisecond, c.Name+": "+svc.Name, func(ctx context.Context) error {
					// A question unanswered within 100 ms is asked again: the poll measures
					// when the name resolves, not how long a resolver waits for a lost packet.
					ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					defer cancel()
					resp, err := c.Resolve(ctx, name(svc.Name), dns.TypeA)
					if err != nil {
						timeouts.Add(1)
						return err
					}
					if len(resp.Answer) != 1 {
						return fmt.Errorf("%s %v", dns.RcodeToString[resp.Rcode], resp.Answer)
					}
					return nil
				})
				if err != nil {
					b.Errorf("%v\n%s", err, diagnose(c, name(svc.Name), dns.TypeA))
				}
			})
		}
		wg.Wait()
		lags = append(lags, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Milliseconds()), "max-ms")
	b.ReportMetric(float64(timeouts.Load()), "unanswered-queries")
	b.Logf("slowest: %v", lags[max(0, len(lags)-5):])
}
