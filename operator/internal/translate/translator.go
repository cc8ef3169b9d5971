package translate

import (
	"encoding/binary"
	"encoding/hex"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// Translator translates models one after the other and re-translates only the services
// whose part of the model changed since the last run; the others keep their resources.
// It is not safe for concurrent use.
//
// A service's part of the model is its fingerprint (fingerprint.go): a service whose
// fingerprint is unchanged keeps what it was translated into. TestFingerprintCoversTheModel
// and TestIncrementalEqualsFresh prove that this cache never serves what a fresh Translate
// would not.
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
	// The services whose input changed are translated anew, in parallel (at start, or when
	// something every service depends on changed, they are many).
	cached := make([]*translated, len(m.Services))
	parallel(len(m.Services), func(i int) {
		s := &m.Services[i]
		fp := serviceFingerprint(shared, s)
		prev := tr.services[s.Namespace+"/"+s.Name]
		if prev != nil && prev.input == fp {
			cached[i] = prev
			return
		}
		cached[i] = t.translate(s, fp, prev)
	})
	var n [4]int
	servers := 0
	for _, c := range cached {
		n[0], n[1], n[2], n[3] = n[0]+len(c.res.Listeners), n[1]+len(c.res.Routes), n[2]+len(c.res.Clusters), n[3]+len(c.res.Endpoints)
		servers += len(c.listening)
	}
	out := &Resources{Listeners: make([]*listenerv3.Listener, 0, n[0]), Routes: make([]*routev3.RouteConfiguration, 0, n[1]),
		Clusters: make([]*clusterv3.Cluster, 0, n[2]), Endpoints: make([]*endpointv3.ClusterLoadAssignment, 0, n[3])}
	listening := make(map[string]bool, servers) // the server listeners added, by listening address
	types := [4]*xxhash.Digest{xxhash.New(), xxhash.New(), xxhash.New(), xxhash.New()}
	var buf [8]byte
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
			if !listening[addr] {
				listening[addr] = true
				out.Listeners = append(out.Listeners, c.res.Listeners[clients+k])
			}
		}
		for j, token := range c.tokens {
			binary.LittleEndian.PutUint64(buf[:], token)
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
func (t *translation) translate(s *Service, fp uint64, prev *translated) *translated {
	c := &translated{input: fp}
	c.res, c.listening = t.translateService(s)
	for j := range c.tokens {
		c.tokens[j] = xxhash.Sum64(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, fp), uint64(j)))
	}
	if prev == nil {
		return c // nothing to compare with: hashing waits until s changes
	}
	before := prev.hashes
	if before == nil {
		h := contentHashes(prev.res)
		before = &h
	}
	after := contentHashes(c.res)
	c.hashes = &after
	for j := range c.tokens {
		if before[j] == after[j] {
			c.tokens[j] = prev.tokens[j]
		}
	}
	return c
}

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

// contentHashes hashes a service's resources of each type, in their encoding. The
// resources are only read: they may be being served.
func contentHashes(r *Resources) [4]uint64 {
	var out [4]uint64
	out[VersionListeners] = hashAll(r.Listeners)
	out[VersionRoutes] = hashAll(r.Routes)
	out[VersionClusters] = hashAll(r.Clusters)
	out[VersionEndpoints] = hashAll(r.Endpoints)
	return out
}

// hashAll hashes the encodings of msgs, each followed by its length so that the
// boundaries count: a, b and a', b' differ when a+b = a'+b'.
func hashAll[T proto.Message](msgs []T) uint64 {
	h := xxhash.New()
	var buf []byte
	for _, m := range msgs {
		buf = appendEncoding(buf[:0], m)
		_, _ = h.Write(buf)
		_, _ = h.Write(binary.LittleEndian.AppendUint64(buf[:0], uint64(len(buf))))
	}
	return h.Sum64()
}
