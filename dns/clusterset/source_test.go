package clusterset_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/dns/clusterset"
	"github.com/meshfed/meshfed/testbed"
)

// TestSourceFollowsTheCluster: a DNS server fed by a Source answers, over UDP, from a real
// API server's ServiceImports and MCS EndpointSlices, and follows their changes.
func TestSourceFollowsTheCluster(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Clusters: 1})
	c := tb.Clusters[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := clusterset.NewSource(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = src.Run(ctx) }()
	addr := clusterset.ServeUDP(t, src.Index)
	resolve := func(name string, qtype uint16) (int, []string, error) {
		req := new(dns.Msg)
		req.SetQuestion(name, qtype)
		resp, _, err := new(dns.Client).Exchange(req, addr)
		if err != nil {
			return 0, nil, err
		}
		var out []string
		for _, rr := range resp.Answer {
			switch v := rr.(type) {
			case *dns.A:
				out = append(out, v.A.String())
			case *dns.SRV:
				out = append(out, fmt.Sprintf("%s:%d", v.Target, v.Port))
			}
		}
		return resp.Rcode, out, nil
	}
	const cart = "cart.shop.svc.clusterset.local."
	testbed.Eventually(t, 30*time.Second, "the source synced", func() error {
		if !src.Synced() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if rcode, _, err := resolve(cart, dns.TypeA); err != nil || rcode != dns.RcodeNameError {
		t.Fatalf("%s before the import: rcode %s (%v), want NXDOMAIN", cart, dns.RcodeToString[rcode], err)
	}

	testbed.MustCreate(ctx, t, c.Client, testbed.Namespace("shop"))
	si := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: mcsv1beta1.ServiceImportSpec{
		Type: mcsv1beta1.ClusterSetIP, IPs: []string{"243.0.0.9"}, Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	testbed.MustCreate(ctx, t, c.Client, si)
	awaitAnswer(t, func() error {
		_, got, err := resolve(cart, dns.TypeA)
		if err != nil || len(got) != 1 || got[0] != "243.0.0.9" {
			return fmt.Errorf("A %v (%w)", got, err)
		}
		return nil
	})
	if _, got, err := resolve("_http._tcp."+cart, dns.TypeSRV); err != nil || len(got) != 1 || got[0] != cart+":80" {
		t.Errorf("SRV %v (%v), want %s:80", got, err, cart)
	}

	// A headless service's endpoints, from the MCS EndpointSlice of a cluster.
	db := &mcsv1beta1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.Headless, Ports: []mcsv1beta1.ServicePort{{Name: "sql", Protocol: corev1.ProtocolTCP, Port: 5432}}}}
	testbed.MustCreate(ctx, t, c.Client, db)
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-west", Labels: map[string]string{
		mcsv1beta1.LabelServiceName: "db", mcsv1beta1.LabelSourceCluster: "west", discoveryv1.LabelManagedBy: "meshfed.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.18.1.10"}, Hostname: ptr.To("db-0"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}
	testbed.MustCreate(ctx, t, c.Client, slice)
	awaitAnswer(t, func() error {
		_, got, err := resolve("db-0.west.db.shop.svc.clusterset.local.", dns.TypeA)
		if err != nil || len(got) != 1 || got[0] != "198.18.1.10" {
			return fmt.Errorf("A %v (%w)", got, err)
		}
		return nil
	})

	if err := c.Client.Delete(ctx, si); err != nil {
		t.Fatal(err)
	}
	awaitAnswer(t, func() error {
		if rcode, _, err := resolve(cart, dns.TypeA); err != nil || rcode != dns.RcodeNameError {
			return fmt.Errorf("rcode %s (%w)", dns.RcodeToString[rcode], err)
		}
		return nil
	})
}

// awaitAnswer waits for the answer check accepts. (How fast answers follow changes is a
// figure of the benchmarks, not of this test.)
func awaitAnswer(t *testing.T, check func() error) {
	t.Helper()
	testbed.Eventually(t, 10*time.Second, "the answer", check)
}
