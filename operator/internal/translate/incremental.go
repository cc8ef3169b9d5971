package translate

import (
	"encoding/binary"
	"encoding/hex"
	"hash"
	"hash/fnv"
	"slices"

	"google.golang.org/protobuf/proto"
)

// Translator translates models one after the other and re-translates only the services
// whose part of the model changed since the last run; the others keep their resources.
// It is not safe for concurrent use.
type Translator struct {
	services map[string]*translated
	run      uint64
}

// translated is one service's resources with the fingerprint of the input that made them
// and the content hash of each resource type.
type translated struct {
	input  uint64
	res    *Resources
	hashes [4]uint64
	seen   uint64
}

// NewTranslator returns a Translator with nothing cached.
func NewTranslator() *Translator { return &Translator{services: map[string]*translated{}} }

// Translate is like the package's Translate, with the lists in the order of the model's
// services, and the per-type content versions in Versions.
func (tr *Translator) Translate(m *Model) *Resources {
	tr.run++
	t := newTranslation(m)
	t.serverChain = m.serverFilterChain()
	shared := modelFingerprint(m)
	out := &Resources{}
	types := [4]hash.Hash64{fnv.New64a(), fnv.New64a(), fnv.New64a(), fnv.New64a()}
	servers := map[string]bool{}
	var buf [8]byte
	for i := range m.Services {
		s := &m.Services[i]
		key := s.Namespace + "/" + s.Name
		fp := serviceFingerprint(shared, s)
		c := tr.services[key]
		if c == nil || c.input != fp {
			res := t.translateService(s)
			c = &translated{input: fp, res: res, hashes: contentHashes(res)}
			tr.services[key] = c
		}
		c.seen = tr.run
		out.Routes = append(out.Routes, c.res.Routes...)
		out.Clusters = append(out.Clusters, c.res.Clusters...)
		out.Endpoints = append(out.Endpoints, c.res.Endpoints...)
		for _, l := range c.res.Listeners {
			// Two services may select the same pod port: one server listener for it.
			if l.Address != nil {
				if servers[l.Name] {
					continue
				}
				servers[l.Name] = true
			}
			out.Listeners = append(out.Listeners, l)
		}
		for j, h := range c.hashes {
			binary.LittleEndian.PutUint64(buf[:], h)
			types[j].Write(buf[:])
		}
	}
	for key, c := range tr.services {
		if c.seen != tr.run {
			delete(tr.services, key)
		}
	}
	for j := range types {
		binary.LittleEndian.PutUint64(buf[:], shared)
		types[j].Write(buf[:])
		out.Versions[j] = hex.EncodeToString(types[j].Sum(nil))
	}
	return out
}

// Version indexes in Resources.Versions.
const (
	VersionListeners = iota
	VersionRoutes
	VersionClusters
	VersionEndpoints
)

// contentHashes hashes a service's resources of each type, in their encoding (the fast
// generated marshalers of go-control-plane's types; these resources have no map fields,
// so the encoding is stable).
func contentHashes(r *Resources) [4]uint64 {
	var out [4]uint64
	out[VersionListeners] = hashAll(r.Listeners)
	out[VersionRoutes] = hashAll(r.Routes)
	out[VersionClusters] = hashAll(r.Clusters)
	out[VersionEndpoints] = hashAll(r.Endpoints)
	return out
}

// vtMarshaler is the fast marshaler go-control-plane generates for its types.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

func hashAll[T proto.Message](msgs []T) uint64 {
	h := newFingerprint()
	var buf []byte
	for _, m := range msgs {
		if vt, ok := any(m).(vtMarshaler); ok {
			n := vt.SizeVT()
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := vt.MarshalToSizedBufferVTStrict(buf); err == nil {
				h.bytes(buf)
				continue
			}
		}
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		h.bytes(b)
	}
	return h.h
}

// fingerprint is an FNV-1a hash of the model's inputs, written without allocating.
type fingerprint struct{ h uint64 }

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func newFingerprint() *fingerprint { return &fingerprint{h: fnvOffset} }

func (f *fingerprint) str(s string) {
	for i := 0; i < len(s); i++ {
		f.h = (f.h ^ uint64(s[i])) * fnvPrime
	}
	f.h = (f.h ^ 0xff) * fnvPrime // ends the string, so "ab","c" differs from "a","bc"
}

func (f *fingerprint) bytes(b []byte) {
	for _, c := range b {
		f.h = (f.h ^ uint64(c)) * fnvPrime
	}
	f.h = (f.h ^ 0xff) * fnvPrime
}

func (f *fingerprint) num(n uint64) {
	for range 8 {
		f.h = (f.h ^ (n & 0xff)) * fnvPrime
		n >>= 8
	}
}

// modelFingerprint covers what every service's translation depends on besides the service.
func modelFingerprint(m *Model) uint64 {
	f := newFingerprint()
	f.str(m.Cluster)
	f.str(m.Network)
	f.str(m.TrustDomain)
	f.str(m.Region)
	f.num(boolNum(m.MTLS))
	f.num(uint64(m.GatewayPort))
	names := make([]string, 0, len(m.Peers))
	for n := range m.Peers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := m.Peers[n]
		f.str(n)
		f.str(p.Network)
		f.str(p.GatewayAddress)
		f.num(uint64(p.GatewayPort))
		f.str(p.Region)
	}
	return f.h
}

// serviceFingerprint covers one service's part of the model.
func serviceFingerprint(shared uint64, s *Service) uint64 {
	f := newFingerprint()
	f.num(shared)
	f.str(s.Namespace)
	f.str(s.Name)
	f.num(boolNum(s.Local))
	f.num(boolNum(s.Imported))
	f.num(boolNum(s.ExportedHere))
	f.str(s.ServiceAccount)
	for _, ports := range [][]Port{s.Ports, s.ImportPorts} {
		f.num(uint64(len(ports)))
		for _, p := range ports {
			f.str(p.Name)
			f.num(uint64(p.Port))
		}
	}
	f.num(uint64(len(s.Endpoints)))
	for _, e := range s.Endpoints {
		f.str(e.Cluster)
		f.str(e.Network)
		f.str(e.Address)
		f.num(boolNum(e.Ready))
		// Map order varies: combine the ports' own hashes with a sum, which ignores it.
		var ports uint64
		for n, p := range e.Ports {
			pf := newFingerprint()
			pf.str(n)
			pf.num(uint64(p))
			ports += pf.h
		}
		f.num(ports)
	}
	for _, c := range s.Policy.Failover {
		f.str(c)
	}
	f.num(uint64(len(s.Policy.Weights)))
	for _, w := range s.Policy.Weights {
		f.str(w.Cluster)
		f.num(uint64(w.Weight))
	}
	f.num(uint64(s.Policy.Timeout))
	if r := s.Policy.Retry; r != nil {
		f.num(uint64(r.Attempts))
		for _, c := range r.On {
			f.str(c)
		}
	}
	if o := s.Policy.Outlier; o != nil {
		f.num(uint64(o.ConsecutiveErrors))
		f.num(uint64(o.IntervalSeconds * 1000))
		f.num(uint64(o.BaseEjectionSecs * 1000))
	}
	return f.h
}

func boolNum(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
