package translate

import (
	"encoding/binary"
	"encoding/hex"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Translator translates models one after the other and re-translates only the services
// whose part of the model changed since the last run; the others keep their resources.
// It is not safe for concurrent use.
type Translator struct {
	services map[string]*translated
	run      uint64
}

// translated is one service's resources with the fingerprint of the input that made them.
// tokens name the content of each type of resource: a token is made from the input's
// fingerprint when a service is first translated, and kept when a re-translation leaves
// that type's content as it was, so a type's version (made of the tokens) moves only when
// its content does. Versions are only compared within this process: a new xDS stream is
// sent everything whatever version its client had.
type translated struct {
	input uint64
	res   *Resources
	// listening are the listening addresses of the server listeners, the last of
	// res.Listeners.
	listening []string
	tokens    [4]uint64
	// hashes are the content hashes of each type, computed when the service changes (a
	// cold build needs none).
	hashes *[4]uint64
	seen   uint64
}

// NewTranslator returns a Translator with nothing cached.
func NewTranslator() *Translator { return &Translator{services: map[string]*translated{}} }

// Translate is like the package's Translate, with the lists in the order of the model's
// services, and in Versions a version per type that moves only when that type's content
// does.
func (tr *Translator) Translate(m *Model) *Resources {
	tr.run++
	t := newTranslation(m)
	shared := modelFingerprint(m)
	types := [4]*xxhash.Digest{xxhash.New(), xxhash.New(), xxhash.New(), xxhash.New()}
	var buf [8]byte
	// The services whose input changed are translated anew, in parallel (at start, or when
	// something every service depends on changed, they are many).
	cached := make([]*translated, len(m.Services))
	parallel(len(m.Services), func(i int) {
		s := &m.Services[i]
		scratch := buffers.Get().(*[]byte)
		defer buffers.Put(scratch)
		fp := serviceFingerprint(scratch, shared, s)
		prev := tr.services[s.Namespace+"/"+s.Name]
		if prev != nil && prev.input == fp {
			cached[i] = prev
			return
		}
		cached[i] = t.translate(scratch, s, fp, prev)
	})
	var n [4]int
	listening := 0
	for _, c := range cached {
		n[0], n[1], n[2], n[3] = n[0]+len(c.res.Listeners), n[1]+len(c.res.Routes), n[2]+len(c.res.Clusters), n[3]+len(c.res.Endpoints)
		listening += len(c.listening)
	}
	out := &Resources{Listeners: make([]*listenerv3.Listener, 0, n[0]), Routes: make([]*routev3.RouteConfiguration, 0, n[1]),
		Clusters: make([]*clusterv3.Cluster, 0, n[2]), Endpoints: make([]*endpointv3.ClusterLoadAssignment, 0, n[3])}
	servers := make(map[string]struct{}, listening) // by listening address
	for i := range m.Services {
		s := &m.Services[i]
		c := cached[i]
		tr.services[s.Namespace+"/"+s.Name] = c
		c.seen = tr.run
		out.Routes = append(out.Routes, c.res.Routes...)
		out.Clusters = append(out.Clusters, c.res.Clusters...)
		out.Endpoints = append(out.Endpoints, c.res.Endpoints...)
		clients := len(c.res.Listeners) - len(c.listening)
		out.Listeners = append(out.Listeners, c.res.Listeners[:clients]...)
		for k, addr := range c.listening {
			// Two services may select the same pod port: one server listener for it.
			if _, dup := servers[addr]; !dup {
				servers[addr] = struct{}{}
				out.Listeners = append(out.Listeners, c.res.Listeners[clients+k])
			}
		}
		for j, h := range c.tokens {
			binary.LittleEndian.PutUint64(buf[:], h)
			_, _ = types[j].Write(buf[:])
		}
	}
	for key, c := range tr.services {
		if c.seen != tr.run {
			delete(tr.services, key)
		}
	}
	for j := range types {
		out.Versions[j] = hex.EncodeToString(types[j].Sum(nil))
	}
	return out
}

// translate translates s, whose input has the fingerprint fp, anew. Each type's token is
// made from fp, or kept from prev (what s was translated into before, if anything) when
// that type's content is the same.
func (t *translation) translate(scratch *[]byte, s *Service, fp uint64, prev *translated) *translated {
	c := &translated{input: fp}
	c.res, c.listening = t.translateService(s)
	for j := range c.tokens {
		c.tokens[j] = xxhash.Sum64(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64((*scratch)[:0], fp), uint64(j)))
	}
	if prev == nil {
		return c // nothing to compare with: hashing waits until s changes
	}
	var before [4]uint64
	if prev.hashes != nil {
		before = *prev.hashes
	} else {
		before = contentHashes(scratch, prev.res, true)
	}
	after := contentHashes(scratch, c.res, false)
	c.hashes = &after
	for j := range c.tokens {
		if before[j] == after[j] {
			c.tokens[j] = prev.tokens[j]
		}
	}
	return c
}

// Version indexes in Resources.Versions.
const (
	VersionListeners = iota
	VersionRoutes
	VersionClusters
	VersionEndpoints
)

// parallel calls f(i) for i from 0 to n-1, on as many goroutines as there are processors,
// each taking the next i when done with one (so a goroutine held up by the collector does
// not hold up the others). f may read shared state but must write only what belongs to i.
func parallel(n int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n/8+1)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				f(i)
			}
		})
	}
	wg.Wait()
}

// buffers hold what fingerprints and hashes are written in, one per service being
// translated.
var buffers = sync.Pool{New: func() any { return new([]byte) }}

// contentHashes hashes a service's resources of each type, in their encoding (the fast
// generated marshalers of go-control-plane's types; these resources have no map fields,
// so the encoding is stable), written in buf. served says the resources may be being
// served, so they must only be read.
func contentHashes(buf *[]byte, r *Resources, served bool) [4]uint64 {
	var out [4]uint64
	out[VersionListeners] = hashListeners(buf, r.Listeners, served)
	out[VersionRoutes] = hashAll(buf, r.Routes)
	out[VersionClusters] = hashAll(buf, r.Clusters)
	out[VersionEndpoints] = hashAll(buf, r.Endpoints)
	return out
}

// hashListeners hashes each listener without its filter chains, then each chain; a chain
// that listeners share (every server listener has the same one) is encoded once. The
// chains of listeners not yet served are taken off for a moment; a served listener is
// encoded through a copy without them.
func hashListeners(scratch *[]byte, ls []*listenerv3.Listener, served bool) uint64 {
	h := xxhash.New()
	buf := *scratch
	defer func() { *scratch = buf }()
	var last *listenerv3.FilterChain
	var lastSum uint64
	for _, l := range ls {
		if served {
			buf = appendEncoding(buf[:0], withoutChains(l))
		} else {
			fcs := l.FilterChains
			l.FilterChains = nil
			buf = appendEncoding(buf[:0], l)
			l.FilterChains = fcs
		}
		_, _ = h.Write(buf)
		for _, fc := range l.FilterChains {
			if fc != last {
				last, lastSum = fc, xxhash.Sum64(appendEncoding(buf[:0], fc))
			}
			_, _ = h.Write(binary.LittleEndian.AppendUint64(buf[:0], lastSum))
		}
		_, _ = h.Write([]byte{0xff}) // ends the listener
	}
	return h.Sum64()
}

// withoutChains is a shallow copy of l without its filter chains; l is only read.
func withoutChains(l *listenerv3.Listener) *listenerv3.Listener {
	c := &listenerv3.Listener{}
	dst := c.ProtoReflect()
	l.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != filterChainsField {
			dst.Set(fd, v)
		}
		return true
	})
	return c
}

var filterChainsField = (&listenerv3.Listener{}).ProtoReflect().Descriptor().Fields().ByName("filter_chains").Number()

// vtMarshaler is the fast marshaler go-control-plane generates for its types.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

// appendEncoding appends the encoding of m to buf (reused when large enough) and returns it.
func appendEncoding(buf []byte, m proto.Message) []byte {
	if vt, ok := m.(vtMarshaler); ok {
		n := vt.SizeVT()
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := vt.MarshalToSizedBufferVTStrict(buf); err == nil {
			return buf
		}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf[:0], m)
	return b
}

func hashAll[T proto.Message](scratch *[]byte, msgs []T) uint64 {
	h := xxhash.New()
	buf := *scratch
	defer func() { *scratch = buf }()
	for _, m := range msgs {
		buf = appendEncoding(buf[:0], m)
		_, _ = h.Write(buf)
		// Lengths keep the boundaries: encodings of a, b and of a', b' differ when a+b = a'+b'.
		_, _ = h.Write(binary.LittleEndian.AppendUint64(buf[:0], uint64(len(buf))))
	}
	return h.Sum64()
}

// fingerprint collects the model's inputs as bytes, each string with its length so that
// ("ab", "c") and ("a", "bc") differ, and hashes them at the end.
type fingerprint struct{ b []byte }

func (f *fingerprint) str(s string) {
	f.b = binary.AppendUvarint(f.b, uint64(len(s)))
	f.b = append(f.b, s...)
}

func (f *fingerprint) num(n uint64) { f.b = binary.LittleEndian.AppendUint64(f.b, n) }

func (f *fingerprint) flag(b bool) { f.b = append(f.b, byte(boolNum(b))) }

func (f *fingerprint) sum() uint64 { return xxhash.Sum64(f.b) }

// modelFingerprint covers what every service's translation depends on besides the service.
func modelFingerprint(m *Model) uint64 {
	f := &fingerprint{}
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
	return f.sum()
}

// serviceFingerprint covers one service's part of the model, written in buf.
func serviceFingerprint(buf *[]byte, shared uint64, s *Service) uint64 {
	f := &fingerprint{b: (*buf)[:0]}
	defer func() { *buf = f.b }()
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
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		// Endpoints of one slice share their cluster, network and ports: a flag says when
		// an endpoint has those of the one before it.
		if i > 0 && sameOrigin(e, &s.Endpoints[i-1]) {
			f.flag(true)
		} else {
			f.flag(false)
			f.str(e.Cluster)
			f.str(e.Network)
			f.num(uint64(len(e.Ports)))
			for _, p := range e.Ports {
				f.str(p.Name)
				f.num(uint64(p.Port))
			}
		}
		f.str(e.Address)
		f.flag(e.Ready)
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
	return f.sum()
}

// sameOrigin says whether a and b have the same cluster, network and ports.
func sameOrigin(a, b *Endpoint) bool {
	return a.Cluster == b.Cluster && a.Network == b.Network && slices.Equal(a.Ports, b.Ports)
}

func boolNum(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
