package translate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// The Translator's cache keeps a service's resources while the service's fingerprint
// stays. These tests prove that the fingerprint sees every field of the model, and that a
// Translator fed one change after another serves exactly what a fresh Translate would.

// fill sets every field reachable from v to a value that is not its zero value: strings
// and numbers from a counter, booleans true, two elements in every list and map, every
// pointer set. A field added to a model type later is filled too.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString("v" + strconv.Itoa(*n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		v.SetUint(uint64(*n))
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v.SetInt(int64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(k, n)
			fill(e, n)
			v.SetMapIndex(k, e)
		}
	default:
		panic(fmt.Sprintf("fill: a model field of kind %s: teach fill, changes and the fingerprint about it", v.Kind()))
	}
}

// changes calls yield for every single change that can be made to what v holds: each
// leaf changed, each list made longer and shorter, each optional part set or unset, each
// map entry added, removed or changed. path names the change; change makes it in v.
func changes(v reflect.Value, path string, yield func(path string, change func())) {
	switch v.Kind() {
	case reflect.String:
		yield(path, func() { v.SetString(v.String() + "x") })
	case reflect.Bool:
		yield(path, func() { v.SetBool(!v.Bool()) })
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		yield(path, func() { v.SetUint(v.Uint() + 1) })
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		yield(path, func() { v.SetInt(v.Int() + 1) }) // a time.Duration by one nanosecond
	case reflect.Float32, reflect.Float64:
		yield(path, func() { v.SetFloat(v.Float() + 1.0/1024) })
	case reflect.Struct:
		for i := range v.NumField() {
			changes(v.Field(i), path+"."+v.Type().Field(i).Name, yield)
		}
	case reflect.Pointer:
		if v.IsNil() {
			yield(path+" set", func() { v.Set(reflect.New(v.Type().Elem())) })
			return
		}
		elem := v.Elem() // taken before any change: one change is made per walk
		yield(path+" unset", func() { v.SetZero() })
		changes(elem, path, yield)
	case reflect.Slice:
		elems := make([]reflect.Value, v.Len())
		for i := range elems {
			elems[i] = v.Index(i)
		}
		yield(path+" one longer", func() { v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem())) })
		if len(elems) > 0 {
			yield(path+" one shorter", func() { v.Set(v.Slice(0, len(elems)-1)) })
		}
		for i, e := range elems {
			changes(e, path+"["+strconv.Itoa(i)+"]", yield)
		}
	case reflect.Map:
		yield(path+" one more", func() {
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString("added")
			v.SetMapIndex(k, reflect.New(v.Type().Elem()).Elem())
		})
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return cmp.Compare(a.String(), b.String()) })
		for _, k := range keys {
			// Map values cannot be changed in place: change a copy and store it.
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			yield(path+"["+k.String()+"] removed", func() { v.SetMapIndex(k, reflect.Value{}) })
			changes(e, path+"["+k.String()+"]", func(p string, change func()) {
				yield(p, func() { change(); v.SetMapIndex(k, e) })
			})
		}
	default:
		panic(fmt.Sprintf("changes: a model field of kind %s at %s", v.Kind(), path))
	}
}

// fingerprints are what the Translator compares to decide what to translate again.
func fingerprints(m *Model) []uint64 {
	shared := modelFingerprint(m)
	out := []uint64{}
	for i := range m.Services {
		out = append(out, serviceFingerprint(shared, &m.Services[i]))
	}
	return out
}

// cloneModel is a deep copy of m, as the feed builds a new model for every push.
func cloneModel(t testing.TB, m *Model) *Model {
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var c Model
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestFingerprintCoversTheModel walks the model types by reflection: every single change
// to a model whose every field is set must change some service's fingerprint. A field
// added to Model, Service, Policy or any type they hold, and not written by the
// fingerprint, fails here by name.
func TestFingerprintCoversTheModel(t *testing.T) {
	base := func() *Model {
		m := &Model{}
		n := 0
		fill(reflect.ValueOf(m).Elem(), &n)
		return m
	}
	want := fingerprints(base())
	if again := fingerprints(base()); !slices.Equal(again, want) {
		t.Fatalf("equal models have fingerprints %x and %x", again, want)
	}
	count := 0
	changes(reflect.ValueOf(base()).Elem(), "Model", func(path string, _ func()) {
		k := count
		count++
		m := base()
		i := 0
		changes(reflect.ValueOf(m).Elem(), "Model", func(_ string, change func()) {
			if i == k {
				change()
			}
			i++
		})
		if slices.Equal(fingerprints(m), want) {
			t.Errorf("%s changed and no fingerprint did: add it to the fingerprint (fingerprint.go)", path)
		}
	})
	if count < 50 {
		t.Fatalf("only %d changes were tried: the walk does not reach the model's fields", count)
	}
}

// randomModel is a small model of clusters a, b and c in two networks, with services whose
// endpoints, ports and policies are drawn from small sets, so that services share pods,
// clusters and names as in a real member.
func randomModel(r *rand.Rand) *Model {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	ports := func() []Port {
		var ps []Port
		for _, name := range []string{"grpc", "http"} {
			if r.IntN(3) > 0 {
				ps = append(ps, Port{Name: name, Port: uint32(9080 + r.IntN(3))})
			}
		}
		return ps
	}
	m := &Model{Cluster: "a", Network: "net-1", TrustDomain: pick("cluster.local", "example.org"), Region: pick("", "eu"),
		MTLS: r.IntN(2) == 0, GatewayPort: 15443, Peers: map[string]Peer{}}
	for _, c := range []string{"b", "c"} {
		if r.IntN(4) > 0 {
			m.Peers[c] = Peer{Network: pick("net-1", "net-2"), GatewayAddress: pick("", "203.0.113.9"), GatewayPort: 15443, Region: pick("", "us")}
		}
	}
	for i := range 1 + r.IntN(4) {
		s := Service{Namespace: pick("shop", "bank"), Name: "svc-" + strconv.Itoa(i), Local: r.IntN(3) > 0, Imported: r.IntN(3) > 0,
			ExportedHere: r.IntN(2) == 0, ServiceAccount: pick("", "reviews"), Ports: ports(), ImportPorts: ports()}
		for range r.IntN(7) {
			cluster := pick("a", "b", "c")
			network := m.Network
			if p, ok := m.Peers[cluster]; ok {
				network = p.Network
			}
			s.Endpoints = append(s.Endpoints, Endpoint{Cluster: cluster, Network: network,
				Address: "10.0.0." + strconv.Itoa(1+r.IntN(5)), Ports: []Port{{Name: "grpc", Port: 8080}, {Name: "http", Port: 8081}}[:1+r.IntN(2)],
				Ready: r.IntN(5) > 0})
		}
		sortEndpoints(s.Endpoints)
		s.Endpoints = slices.CompactFunc(s.Endpoints, func(a, b Endpoint) bool { return compareEndpoints(a, b) == 0 })
		if r.IntN(2) == 0 {
			s.Policy.Failover = []string{pick("b", "c")}
		}
		if r.IntN(3) == 0 {
			s.Policy.Weights = []Weight{{Cluster: "a", Weight: uint32(r.IntN(100))}, {Cluster: pick("b", "c"), Weight: uint32(1 + r.IntN(100))}}
		}
		if r.IntN(3) == 0 {
			s.Policy.Outlier = &Outlier{ConsecutiveErrors: uint32(1 + r.IntN(5)), Interval: time.Duration(1+r.IntN(3)) * time.Second, BaseEjectionTime: 30 * time.Second}
		}
		if r.IntN(3) == 0 {
			s.Policy.Timeout = time.Duration(r.IntN(3)) * time.Second
		}
		if r.IntN(3) == 0 {
			s.Policy.Retry = &Retry{Attempts: uint32(1 + r.IntN(3)), On: []string{pick("unavailable", "cancelled")}}
		}
		m.Services = append(m.Services, s)
	}
	slices.SortFunc(m.Services, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	m.Services = slices.CompactFunc(m.Services, func(a, b Service) bool { return a.Namespace == b.Namespace && a.Name == b.Name })
	return m
}

// TestIncrementalEqualsFresh is the cache's property test: random models, each followed
// by random single changes (any field, list or map entry of the model, as the reflective
// walk finds them); after every change a Translator that has seen the model's history
// serves the same resources as a fresh Translate, resource for resource, and every type
// whose content changed has a new version.
func TestIncrementalEqualsFresh(t *testing.T) {
	seeds, steps := 300, 12
	if testing.Short() {
		seeds = 60
	}
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		m := randomModel(r)
		tr := NewTranslator()
		last := tr.Translate(cloneModel(t, m))
		last.sort()
		for step := range steps {
			var all []func()
			var names []string
			changes(reflect.ValueOf(m).Elem(), "Model", func(path string, change func()) {
				names, all = append(names, path), append(all, change)
			})
			k := r.IntN(len(all))
			all[k]()
			got := tr.Translate(cloneModel(t, m))
			got.sort()
			want := Translate(cloneModel(t, m))
			where := fmt.Sprintf("seed %d, step %d (%s)", seed, step, names[k])
			if diff := diffResources(got, want); diff != "" {
				t.Fatalf("%s: the Translator serves what a fresh Translate does not: %s", where, diff)
			}
			for j, typ := range []string{"listeners", "routes", "clusters", "endpoints"} {
				if diffResources(typeOnly(got, j), typeOnly(last, j)) != "" && got.Versions[j] == last.Versions[j] {
					t.Fatalf("%s: the %s changed and their version %s did not", where, typ, got.Versions[j])
				}
			}
			last = got
		}
	}
}

// typeOnly is r with only the resources of type j (VersionListeners...).
func typeOnly(r *Resources, j int) *Resources {
	switch j {
	case VersionListeners:
		return &Resources{Listeners: r.Listeners}
	case VersionRoutes:
		return &Resources{Routes: r.Routes}
	case VersionClusters:
		return &Resources{Clusters: r.Clusters}
	default:
		return &Resources{Endpoints: r.Endpoints}
	}
}

// diffResources names the first resource in which a and b (sorted) differ, or is empty.
func diffResources(a, b *Resources) string {
	if d := diffList(a.Listeners, b.Listeners); d != "" {
		return "listeners: " + d
	}
	if d := diffList(a.Routes, b.Routes); d != "" {
		return "routes: " + d
	}
	if d := diffList(a.Clusters, b.Clusters); d != "" {
		return "clusters: " + d
	}
	if d := diffList(a.Endpoints, b.Endpoints); d != "" {
		return "endpoints: " + d
	}
	return ""
}

func diffList[T proto.Message](a, b []T) string {
	for i := range max(len(a), len(b)) {
		switch {
		case i >= len(a):
			return fmt.Sprintf("missing %s", describe(b[i]))
		case i >= len(b):
			return fmt.Sprintf("extra %s", describe(a[i]))
		case !proto.Equal(a[i], b[i]):
			return fmt.Sprintf("%s differs from %s", describe(a[i]), describe(b[i]))
		}
	}
	return ""
}
