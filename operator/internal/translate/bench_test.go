package translate

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// benchInputs are the objects of member a with services × endpoints: each Service's
// endpoints a third in a (one EndpointSlice), a third in peer b of the same network and
// a third in peer c behind its gateway (imported slices), one in ten not ready, every
// service also imported with a failover policy.
func benchInputs(services, endpoints int) Inputs {
	in := Inputs{
		Mesh: &meshv1.Mesh{Spec: meshv1.MeshSpec{ClusterName: "a", Network: "net-1", TrustDomain: "cluster.local"}},
		Peers: []meshv1.MeshPeer{
			{Spec: meshv1.MeshPeerSpec{ClusterName: "b", Network: "net-1"}},
			{Spec: meshv1.MeshPeerSpec{ClusterName: "c", Network: "net-2", GatewayAddress: "203.0.113.3", GatewayPort: 15443}},
		},
	}
	networks := map[string]string{"a": "net-1", "b": "net-1", "c": "net-2"}
	for i := range services {
		name := fmt.Sprintf("svc-%03d", i)
		meta := metav1.ObjectMeta{Namespace: "ns", Name: name}
		in.Services = append(in.Services, corev1.Service{ObjectMeta: meta,
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080, Protocol: corev1.ProtocolTCP}}}})
		imp := mcsv1beta1.ServiceImport{ObjectMeta: meta, Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP,
			Ports: []mcsv1beta1.ServicePort{{Name: "grpc", Port: 9080, Protocol: corev1.ProtocolTCP}}}}
		imp.Annotations = map[string]string{meshv1.AnnotationTrafficPolicy: `{"failover":["c"]}`}
		imp.Status.Clusters = []mcsv1beta1.ClusterStatus{{Cluster: "a"}, {Cluster: "b"}, {Cluster: "c"}}
		in.Imports = append(in.Imports, imp)
		for k, cluster := range []string{"a", "b", "c"} {
			labels := map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}
			if cluster != "a" {
				labels = map[string]string{discoveryv1.LabelManagedBy: meshv1.EndpointSliceManager, mcsv1beta1.LabelServiceName: name,
					mcsv1beta1.LabelSourceCluster: cluster, meshv1.LabelSourceNetwork: networks[cluster]}
			}
			sl := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-" + cluster, Labels: labels},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
			for j := k; j < endpoints; j += 3 {
				sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", k, i, j)},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(j%10 != 0)}})
			}
			in.Slices = append(in.Slices, sl)
		}
	}
	return in
}

func benchModel(services, endpoints int) (*Model, Inputs) {
	in := benchInputs(services, endpoints)
	m, problems := BuildModel(in)
	if len(problems) > 0 {
		panic(fmt.Sprint(problems))
	}
	return m, in
}

// BenchmarkTranslate100x100 builds the whole configuration of 100 services of 100
// endpoints each from nothing, as the push pipeline does at start (target: < 4 ms per
// build). As in the operator, the objects the model was built from and the configuration
// being served are in memory while the next one is built.
func BenchmarkTranslate100x100(b *testing.B) {
	m, in := benchModel(100, 100)
	served := NewTranslator().Translate(m)
	b.ReportAllocs()
	for b.Loop() {
		served = NewTranslator().Translate(m)
	}
	runtime.KeepAlive(served)
	runtime.KeepAlive(in)
}

// BenchmarkTranslate100x100OneEndpointChange is the push pipeline's case: one endpoint of
// one service changed readiness, the other 99 services are reused.
func BenchmarkTranslate100x100OneEndpointChange(b *testing.B) {
	tr := NewTranslator()
	benchEndpointChanges(b, func(m *Model) error { tr.Translate(m); return nil })
}

// BenchmarkCheck100x100 checks the whole configuration of 100 services of 100 endpoints
// the first time (every resource validated).
func BenchmarkCheck100x100(b *testing.B) {
	m, _ := benchModel(100, 100)
	r := NewTranslator().Translate(m)
	b.ReportAllocs()
	for b.Loop() {
		if err := (&Checker{}).Check(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPush100x100OneEndpointChange is what the push pipeline does for a change of one
// endpoint's readiness: translate, then check (only the changed service's resources are
// validated again; every reference is resolved).
func BenchmarkPush100x100OneEndpointChange(b *testing.B) {
	tr, c := NewTranslator(), &Checker{}
	benchEndpointChanges(b, func(m *Model) error { return c.Check(tr.Translate(m)) })
}

// benchEndpointChanges pushes the 100×100 model once, then measures pushes after each of
// a series of single endpoints changing readiness.
func benchEndpointChanges(b *testing.B, push func(*Model) error) {
	m, _ := benchModel(100, 100)
	if err := push(m); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := &m.Services[i%100].Endpoints[(i*7)%100]
		e.Ready = !e.Ready
		if err := push(m); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkTranslate100x100PeerChange: something every service depends on changed (a
// peer's region, which is in every endpoint set), so every service is translated again
// and its resources compared with the ones served; only the endpoints version moves.
func BenchmarkTranslate100x100PeerChange(b *testing.B) {
	m, _ := benchModel(100, 100)
	tr := NewTranslator()
	served := tr.Translate(m)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := m.Peers["b"]
		p.Region = fmt.Sprintf("region-%d", i%2)
		m.Peers["b"] = p
		next := tr.Translate(m)
		if next.Versions[VersionListeners] != served.Versions[VersionListeners] {
			b.Fatal("a peer's region moved the listeners version")
		}
		served = next
		i++
	}
}
