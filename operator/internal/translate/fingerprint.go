package translate

import (
	"encoding/binary"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// A fingerprint covers everything a translation reads: the Translator re-translates a
// service only when its fingerprint changes. Every field of the model types is written
// (TestFingerprintCoversTheModel fails for one that is not), each string and list with
// its length and each optional part with its presence, so two different inputs cannot
// write the same bytes.
type fingerprint struct{ b []byte }

func (f *fingerprint) str(s string) {
	f.b = binary.AppendUvarint(f.b, uint64(len(s)))
	f.b = append(f.b, s...)
}

func (f *fingerprint) num(n uint64) { f.b = binary.LittleEndian.AppendUint64(f.b, n) }

func (f *fingerprint) flag(b bool) {
	if b {
		f.b = append(f.b, 1)
	} else {
		f.b = append(f.b, 0)
	}
}

func (f *fingerprint) strs(ss []string) {
	f.num(uint64(len(ss)))
	for _, s := range ss {
		f.str(s)
	}
}

func (f *fingerprint) ports(ps []Port) {
	f.num(uint64(len(ps)))
	for _, p := range ps {
		f.str(p.Name)
		f.num(uint64(p.Port))
		f.str(p.AppProtocol)
	}
}

func (f *fingerprint) sum() uint64 { return xxhash.Sum64(f.b) }

// modelFingerprint covers what every service's translation depends on besides the service.
func modelFingerprint(m *Model) uint64 {
	f := &fingerprint{}
	f.str(m.Cluster)
	f.str(m.Network)
	f.str(m.TrustDomain)
	f.str(m.Region)
	f.flag(m.MTLS)
	f.num(uint64(m.GatewayPort))
	names := make([]string, 0, len(m.Peers))
	for n := range m.Peers {
		names = append(names, n)
	}
	slices.Sort(names)
	f.num(uint64(len(names)))
	for _, n := range names {
		p := m.Peers[n]
		f.str(n)
		f.str(p.Network)
		f.str(p.GatewayAddress)
		f.num(uint64(p.GatewayPort))
		f.str(p.Region)
	}
	return f.sum()
}

// serviceFingerprint covers one service's part of the model and shared, the fingerprint
// of what every service depends on.
func serviceFingerprint(shared uint64, s *Service) uint64 {
	f := &fingerprint{b: make([]byte, 0, 256+32*len(s.Endpoints))} // an endpoint of a slice takes ~20 bytes
	f.num(shared)
	f.str(s.Namespace)
	f.str(s.Name)
	f.flag(s.Local)
	f.ports(s.Ports)
	f.flag(s.Imported)
	f.ports(s.ImportPorts)
	f.strs(s.ClusterSetIPs)
	f.flag(s.ClientIPAffinity)
	f.flag(s.ExportedHere)
	f.str(s.ServiceAccount)
	f.num(uint64(len(s.Endpoints)))
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		// Endpoints of one slice share their cluster, network and ports: a flag says when
		// an endpoint has those of the one before it.
		same := i > 0 && sameOrigin(e, &s.Endpoints[i-1])
		f.flag(same)
		if !same {
			f.str(e.Cluster)
			f.str(e.Network)
			f.ports(e.Ports)
		}
		f.str(e.Address)
		f.flag(e.Ready)
	}
	p := &s.Policy
	f.strs(p.Failover)
	f.num(uint64(len(p.Weights)))
	for _, w := range p.Weights {
		f.str(w.Cluster)
		f.num(uint64(w.Weight))
	}
	f.flag(p.Outlier != nil)
	if o := p.Outlier; o != nil {
		f.num(uint64(o.ConsecutiveErrors))
		f.num(uint64(o.Interval))
		f.num(uint64(o.BaseEjectionTime))
	}
	f.num(uint64(p.Timeout))
	f.flag(p.Retry != nil)
	if r := p.Retry; r != nil {
		f.num(uint64(r.Attempts))
		f.strs(r.On)
		f.num(uint64(r.PerTry))
	}
	f.flag(p.CircuitBreaker != nil)
	if cb := p.CircuitBreaker; cb != nil {
		f.num(uint64(cb.MaxRequests))
		f.num(uint64(cb.MaxPending))
	}
	f.flag(s.Authz != nil)
	if a := s.Authz; a != nil {
		for _, rules := range [][]AuthzRule{a.Deny, a.Allow} {
			f.num(uint64(len(rules)))
			for _, r := range rules {
				f.str(r.Name)
				f.num(uint64(len(r.Principals)))
				for _, p := range r.Principals {
					f.str(p.Exact)
					f.str(p.Prefix)
				}
				f.strs(r.Methods)
			}
		}
	}
	f.flag(s.Fault != nil)
	if ft := s.Fault; ft != nil {
		f.num(uint64(ft.Delay))
		f.num(uint64(ft.DelayPercent))
		f.num(uint64(ft.AbortCode))
		f.num(uint64(ft.AbortPercent))
	}
	f.routes(s.LocalRoutes)
	f.routes(s.ClusterSetRoutes)
	return f.sum()
}

func (f *fingerprint) routes(rules []RouteRule) {
	f.num(uint64(len(rules)))
	for _, r := range rules {
		f.str(r.Name)
		f.num(uint64(r.Port))
		f.num(uint64(r.Timeout))
		f.num(uint64(len(r.Matches)))
		for _, m := range r.Matches {
			f.str(m.Path)
			f.flag(m.PathRegex)
			f.num(uint64(len(m.Headers)))
			for _, h := range m.Headers {
				f.str(h.Name)
				f.str(h.Value)
				f.flag(h.Regex)
			}
		}
		f.num(uint64(len(r.Backends)))
		for _, b := range r.Backends {
			f.str(b.Cluster)
			f.num(uint64(b.Weight))
		}
		f.flag(r.EnvoyOnly)
		f.num(uint64(r.TryTimeout))
		f.flag(r.Retry != nil)
		if rt := r.Retry; rt != nil {
			f.num(uint64(rt.Attempts))
			f.num(uint64(rt.Backoff))
			f.num(uint64(len(rt.Codes)))
			for _, c := range rt.Codes {
				f.num(uint64(c))
			}
		}
		f.flag(r.Headers != nil)
		if h := r.Headers; h != nil {
			for _, vs := range [][]HeaderValue{h.Set, h.Add} {
				f.num(uint64(len(vs)))
				for _, v := range vs {
					f.str(v.Name)
					f.str(v.Value)
				}
			}
			f.strs(h.Remove)
		}
	}
}

// sameOrigin says whether a and b have the same cluster, network and ports.
func sameOrigin(a, b *Endpoint) bool {
	return a.Cluster == b.Cluster && a.Network == b.Network && slices.Equal(a.Ports, b.Ports)
}
