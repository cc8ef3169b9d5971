package clusterset

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

func testIndex() *Index {
	imports := []mcsv1beta1.ServiceImport{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: mcsv1beta1.ServiceImportSpec{
			Type: mcsv1beta1.ClusterSetIP, IPs: []string{"243.0.0.7", "fd43:4c53::7"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: mcsv1beta1.ServiceImportSpec{
			Type: mcsv1beta1.Headless, Ports: []mcsv1beta1.ServicePort{{Name: "sql", Port: 5432}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pending"}, Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP}},
	}
	slice := func(cluster string, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-" + cluster, Labels: map[string]string{
			mcsv1beta1.LabelServiceName: "db", mcsv1beta1.LabelSourceCluster: cluster}}, Endpoints: eps}
	}
	slices := []discoveryv1.EndpointSlice{
		slice("west", discoveryv1.Endpoint{Addresses: []string{"198.18.1.10"}, Hostname: ptr.To("db-0")},
			discoveryv1.Endpoint{Addresses: []string{"198.18.1.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}),
		slice("east", discoveryv1.Endpoint{Addresses: []string{"198.18.2.10"}}),
		// An EndpointSlice of a service not imported here, and one without its cluster.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "x", Labels: map[string]string{mcsv1beta1.LabelServiceName: "gone", mcsv1beta1.LabelSourceCluster: "west"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.1"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "y", Labels: map[string]string{mcsv1beta1.LabelServiceName: "db"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.2"}}}},
	}
	return Build(imports, slices)
}

func ask(t *testing.T, ix *Index, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	resp, ok := ix.Respond(req, 5)
	if !ok {
		t.Fatalf("%s %s: not answered", name, dns.TypeToString[qtype])
	}
	return resp
}

// rrs spells the answer's records as "TYPE value" strings, sorted.
func rrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return out
}

// TestRespond: the names of KEP-1645 resolve to the ClusterSet IPs, a headless service's
// ready endpoints of every cluster, its per-endpoint names and its named ports; what is not
// imported here is NXDOMAIN; every answer carries the TTL; other zones are not answered.
func TestRespond(t *testing.T) {
	ix := testIndex()
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"cart.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 243.0.0.7"}},
		{"CART.Shop.svc.clusterset.local.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA fd43:4c53::7"}},
		{"db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 198.18.1.10", "A 198.18.2.10"}},
		{"db.shop.svc.clusterset.local.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"db-0.west.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 198.18.1.10"}},
		{"198-18-2-10.east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 198.18.2.10"}},
		{"198-18-1-11.west.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil}, // not ready
		{"db-0.east.db.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"_http._tcp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 0 100 80 cart.shop.svc.clusterset.local."}},
		{"_dns._udp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 0 100 53 cart.shop.svc.clusterset.local."}},
		{"_http._udp.cart.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"_sql._tcp.db.shop.svc.clusterset.local.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"SRV 0 50 5432 198-18-2-10.east.db.shop.svc.clusterset.local.", "SRV 0 50 5432 db-0.west.db.shop.svc.clusterset.local."}},
		{"pending.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, nil}, // no ClusterSet IP yet
		{"gone.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},  // not imported here
		{"cart.pay.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},   // a namespace without imports
		{"shop.svc.clusterset.local.", dns.TypeA, dns.RcodeSuccess, nil},
		{"pay.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"cart.shop.pod.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"a.b.c.d.cart.shop.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, tc := range cases {
		resp := ask(t, ix, tc.name, tc.qtype)
		if resp.Rcode != tc.rcode || !slices.Equal(rrs(resp), tc.want) {
			t.Errorf("%s %s: %s %v, want %s %v", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[resp.Rcode], rrs(resp),
				dns.RcodeToString[tc.rcode], tc.want)
		}
		if !resp.Authoritative {
			t.Errorf("%s: not authoritative", tc.name)
		}
		for _, rr := range append(resp.Answer, resp.Ns...) {
			if rr.Header().Ttl != 5 {
				t.Errorf("%s: TTL %d in %s", tc.name, rr.Header().Ttl, rr)
			}
		}
		if len(resp.Answer) == 0 && (len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s: a negative answer without the zone's SOA: %v", tc.name, resp.Ns)
		}
	}
	for _, name := range []string{"cart.shop.svc.cluster.local.", "example.com.", "clusterset.local.example.com."} {
		req := new(dns.Msg)
		req.SetQuestion(name, dns.TypeA)
		if _, ok := ix.Respond(req, 5); ok {
			t.Errorf("%s was answered: another zone's", name)
		}
	}
}

// ServeUDP serves the zone of index() over UDP on 127.0.0.1 until the test ends and returns
// its address; names of other zones are REFUSED. (Exported for this package's external
// tests.)
func ServeUDP(t testing.TB, index func() *Index) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp, ok := index().Respond(req, 5)
		if !ok {
			resp = new(dns.Msg)
			resp.SetRcode(req, dns.RcodeRefused)
		}
		_ = w.WriteMsg(resp)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestRespondOverTheWire: the answers pack and travel as DNS messages (UDP, miekg/dns).
func TestRespondOverTheWire(t *testing.T) {
	ix := testIndex()
	addr := ServeUDP(t, func() *Index { return ix })
	req := new(dns.Msg)
	req.SetQuestion("_sql._tcp.db.shop.svc.clusterset.local.", dns.TypeSRV)
	resp, _, err := new(dns.Client).Exchange(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Answer) != 2 || len(resp.Extra) != 2 {
		t.Fatalf("SRV answer %v, extra %v: want two of each", resp.Answer, resp.Extra)
	}
	if a, ok := resp.Extra[0].(*dns.A); !ok || a.Hdr.Name != resp.Answer[0].(*dns.SRV).Target {
		t.Errorf("the additional record %v is not the address of %v", resp.Extra[0], resp.Answer[0])
	}
}
