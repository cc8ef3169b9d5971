package clusterset

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Respond answers req, one question about the zone, as an authoritative server: ok is false
// when the question is not about the zone (the caller passes it on). A name the zone lacks
// (a namespace the member imports nothing into, a service it does not import) is NXDOMAIN;
// a name it holds without records of the type asked is an empty NOERROR. Both carry the
// zone's SOA, so that resolvers cache the absence for ttl at most.
func (ix *Index) Respond(req *dns.Msg, ttl uint32) (resp *dns.Msg, ok bool) {
	if len(req.Question) != 1 {
		return nil, false
	}
	q := req.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(Zone, name) {
		return nil, false
	}
	resp = new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	labels := dns.SplitDomainName(strings.TrimSuffix(name, Zone))
	found := ix.lookup(labels, q, ttl, resp)
	if !found {
		resp.Rcode = dns.RcodeNameError
	}
	if len(resp.Answer) == 0 {
		resp.Ns = []dns.RR{soa(ttl)}
	}
	return resp, true
}

// lookup adds the records of the name (its labels under the zone) to resp and tells
// whether the name exists.
func (ix *Index) lookup(labels []string, q dns.Question, ttl uint32, resp *dns.Msg) bool {
	n := len(labels)
	if n == 0 {
		if q.Qtype == dns.TypeSOA {
			resp.Answer = append(resp.Answer, soa(ttl))
		}
		return true
	}
	if labels[n-1] != "svc" {
		return false
	}
	switch n {
	case 1: // svc.clusterset.local
		return len(ix.services) > 0
	case 2: // <ns>.svc.clusterset.local
		return ix.hasNamespace(labels[0])
	}
	s := ix.services[labels[n-2]+"/"+labels[n-3]]
	if s == nil {
		return false
	}
	switch n {
	case 3: // <svc>.<ns>.svc
		ix.addresses(s, q, ttl, resp)
		return true
	case 5:
		if strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_") { // _<port>._<proto>.<svc>.<ns>.svc
			return ix.srv(s, labels[0][1:], labels[1][1:], q, ttl, resp)
		}
		return ix.endpoint(s, labels[0], labels[1], q, ttl, resp) // <host>.<cluster>.<svc>.<ns>.svc
	case 4: // <cluster>.<svc>.<ns>.svc: an empty non-terminal of a headless service's endpoints
		for _, ep := range s.Endpoints {
			if ep.Cluster == labels[0] {
				return true
			}
		}
	}
	return false
}

func (ix *Index) hasNamespace(ns string) bool {
	for _, s := range ix.services {
		if s.Namespace == ns {
			return true
		}
	}
	return false
}

// addresses adds the service's A or AAAA records: its ClusterSet IPs, or a headless
// service's ready endpoints.
func (ix *Index) addresses(s *Service, q dns.Question, ttl uint32, resp *dns.Msg) {
	if s.Headless {
		for _, ep := range s.Endpoints {
			if rr := address(q, ep.Addr, ttl); rr != nil {
				resp.Answer = append(resp.Answer, rr)
			}
		}
		return
	}
	for _, a := range s.IPs {
		if rr := address(q, a, ttl); rr != nil {
			resp.Answer = append(resp.Answer, rr)
		}
	}
}

// srv adds the SRV records of the named port: to the service's name, or to each endpoint's
// name for a headless service, with the addresses they name as additional records.
func (ix *Index) srv(s *Service, port, proto string, q dns.Question, ttl uint32, resp *dns.Msg) bool {
	var p *Port
	for i := range s.Ports {
		if strings.EqualFold(s.Ports[i].Name, port) && strings.EqualFold(string(s.Ports[i].Protocol), proto) {
			p = &s.Ports[i]
		}
	}
	if p == nil {
		return false
	}
	if q.Qtype != dns.TypeSRV && q.Qtype != dns.TypeANY {
		return true
	}
	base := s.Name + "." + s.Namespace + ".svc." + Zone
	if !s.Headless {
		resp.Answer = append(resp.Answer, &dns.SRV{Hdr: header(q.Name, dns.TypeSRV, ttl), Priority: 0, Weight: 100, Port: p.Port, Target: base})
		for _, a := range s.IPs {
			resp.Extra = append(resp.Extra, address(dns.Question{Name: base, Qtype: typeOf(a)}, a, ttl))
		}
		return true
	}
	weight := uint16(max(1, 100/max(1, len(s.Endpoints))))
	for _, ep := range s.Endpoints {
		target := ep.Host + "." + ep.Cluster + "." + base
		resp.Answer = append(resp.Answer, &dns.SRV{Hdr: header(q.Name, dns.TypeSRV, ttl), Priority: 0, Weight: weight, Port: p.Port, Target: target})
		resp.Extra = append(resp.Extra, address(dns.Question{Name: target, Qtype: typeOf(ep.Addr)}, ep.Addr, ttl))
	}
	return true
}

// endpoint adds the address of one endpoint of a headless service.
func (ix *Index) endpoint(s *Service, host, cluster string, q dns.Question, ttl uint32, resp *dns.Msg) bool {
	found := false
	for _, ep := range s.Endpoints {
		if strings.EqualFold(ep.Host, host) && ep.Cluster == cluster {
			found = true
			if rr := address(q, ep.Addr, ttl); rr != nil {
				resp.Answer = append(resp.Answer, rr)
			}
		}
	}
	return found
}

// address is the A or AAAA record of a for q, nil when q asks for the other family.
func address(q dns.Question, a netip.Addr, ttl uint32) dns.RR {
	switch {
	case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		return &dns.A{Hdr: header(q.Name, dns.TypeA, ttl), A: a.AsSlice()}
	case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		return &dns.AAAA{Hdr: header(q.Name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
	}
	return nil
}

func typeOf(a netip.Addr) uint16 {
	if a.Is4() {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// soa is the zone's SOA record; its minimum bounds how long resolvers cache an absence.
func soa(ttl uint32) dns.RR {
	return &dns.SOA{Hdr: header(Zone, dns.TypeSOA, ttl), Ns: "ns.dns." + Zone, Mbox: "hostmaster." + Zone,
		Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}
}
