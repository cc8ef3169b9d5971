package main_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/testbed"
)

// BenchmarkClusterSetVsKubernetes: queries per second and p99 latency of meshfed-dns
// answering clusterset.local against CoreDNS's own kubernetes plugin answering cluster.local
// for the same 100 services, each a CoreDNS process on the same API server, measured in
// turns by the same UDP load (8 clients, each waiting for its answer); neither caches.
func BenchmarkClusterSetVsKubernetes(b *testing.B) {
	tb := testbed.StartForTest(b, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx := context.Background()
	root, err := testbed.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	const services = 100
	testbed.MustCreate(ctx, b, c.Client, testbed.Namespace("shop"))
	var clusterset, cluster []string
	for i := range services {
		svc := fmt.Sprintf("svc-%d", i)
		testbed.MustCreate(ctx, b, c.Client, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: svc},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
		testbed.MustCreate(ctx, b, c.Client, &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: svc},
			Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{fmt.Sprintf("243.0.%d.%d", i/250, i%250+1)},
				Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}})
		clusterset = append(clusterset, svc+".shop.svc.clusterset.local.")
		cluster = append(cluster, svc+".shop.svc.cluster.local.")
	}
	meshfed := serve(b, buildMeshfedDNS(b), func(port, readyPort int) string {
		return fmt.Sprintf("clusterset.local:%d {\n  bind 127.0.0.1\n  ready 127.0.0.1:%d\n  clusterset {\n    kubeconfig %s\n  }\n}\n", port, readyPort, c.KubeconfigPath)
	})
	kubernetes := serve(b, filepath.Join(root, "bin", "coredns"), func(port, readyPort int) string {
		return fmt.Sprintf("cluster.local:%d {\n  ready 127.0.0.1:%d\n  kubernetes cluster.local {\n    kubeconfig %s\n  }\n}\n", port, readyPort, c.KubeconfigPath)
	})
	for _, s := range []struct {
		server string
		names  []string
	}{{meshfed, clusterset}, {kubernetes, cluster}} {
		testbed.Eventually(b, 30*time.Second, "every name answered by "+s.server, func() error {
			for _, n := range s.names {
				if err := ask(s.server, n); err != nil {
					return err
				}
			}
			return nil
		})
	}

	var ours, theirs []time.Duration
	var oursTime, theirsTime time.Duration
	b.ResetTimer()
	for range b.N {
		l, d := load(b, meshfed, clusterset, 3*time.Second)
		ours, oursTime = append(ours, l...), oursTime+d
		l, d = load(b, kubernetes, cluster, 3*time.Second)
		theirs, theirsTime = append(theirs, l...), theirsTime+d
	}
	b.StopTimer()
	oursQPS, theirsQPS := float64(len(ours))/oursTime.Seconds(), float64(len(theirs))/theirsTime.Seconds()
	b.ReportMetric(oursQPS, "clusterset-qps")
	b.ReportMetric(theirsQPS, "kubernetes-qps")
	b.ReportMetric(oursQPS/theirsQPS, "qps-ratio")
	b.ReportMetric(float64(p99(ours).Microseconds()), "clusterset-p99-µs")
	b.ReportMetric(float64(p99(theirs).Microseconds()), "kubernetes-p99-µs")
}

// ask checks that server answers name with one A record.
func ask(server, name string) error {
	req := new(dns.Msg)
	req.SetQuestion(name, dns.TypeA)
	resp, _, err := new(dns.Client).Exchange(req, server)
	if err != nil {
		return err
	}
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		return fmt.Errorf("%s: %s %v", name, dns.RcodeToString[resp.Rcode], resp.Answer)
	}
	return nil
}

// load asks server A questions for names in turn from 8 clients for d, each over its own
// UDP socket and waiting for each answer; it returns every answer's latency and the time
// taken. A wrong answer fails the benchmark.
func load(b *testing.B, server string, names []string, d time.Duration) ([]time.Duration, time.Duration) {
	const clients = 8
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	deadline := start.Add(d)
	for i := range clients {
		wg.Go(func() {
			conn, err := net.Dial("udp", server)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			co := &dns.Conn{Conn: conn}
			client := &dns.Client{Timeout: time.Second}
			var mine []time.Duration
			for n := i; time.Now().Before(deadline); n++ {
				req := new(dns.Msg)
				req.SetQuestion(names[n%len(names)], dns.TypeA)
				t0 := time.Now()
				resp, _, err := client.ExchangeWithConn(req, co)
				if err != nil {
					errs <- err
					return
				}
				if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
					errs <- fmt.Errorf("%s: %s", names[n%len(names)], dns.RcodeToString[resp.Rcode])
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	taken := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return all, taken
}

func p99(ls []time.Duration) time.Duration {
	if len(ls) == 0 {
		return 0
	}
	s := slices.Clone(ls)
	slices.Sort(s)
	return s[len(s)*99/100]
}
