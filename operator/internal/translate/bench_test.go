package translate

import (
	"fmt"
	"testing"
)

// benchModel is a member with services × endpoints, half of each service's endpoints in
// this cluster and half in a peer of the same network, every service also imported.
func benchModel(services, endpoints int) *Model {
	m := &Model{Cluster: "a", Network: "net-1", TrustDomain: "cluster.local", MTLS: true,
		Peers: map[string]Peer{"b": {Network: "net-1"}, "c": {Network: "net-2", GatewayAddress: "203.0.113.3", GatewayPort: 15443}}}
	ports := []Port{{Name: "grpc", Port: 9080}}
	for i := range services {
		s := Service{Namespace: "ns", Name: fmt.Sprintf("svc-%03d", i), Local: true, Ports: ports, Imported: true, ImportPorts: ports,
			Policy: Policy{Failover: []string{"c"}}}
		for j := range endpoints {
			cluster := []string{"a", "b", "c"}[j%3]
			s.Endpoints = append(s.Endpoints, Endpoint{Cluster: cluster, Network: map[string]string{"a": "net-1", "b": "net-1", "c": "net-2"}[cluster],
				Address: fmt.Sprintf("10.%d.%d.%d", j%3, i, j), Ports: map[string]uint32{"grpc": 8080}, Ready: j%10 != 0})
		}
		m.Services = append(m.Services, s)
	}
	return m
}

// BenchmarkTranslate100x100 builds the whole configuration of 100 services of 100
// endpoints each (target: < 4 ms per build).
func BenchmarkTranslate100x100(b *testing.B) {
	m := benchModel(100, 100)
	b.ReportAllocs()
	for b.Loop() {
		Translate(m)
	}
}

// BenchmarkTranslate100x100OneEndpointChange is the push pipeline's case: one endpoint of
// one service changed readiness, the other 99 services are reused.
func BenchmarkTranslate100x100OneEndpointChange(b *testing.B) {
	m := benchModel(100, 100)
	tr := NewTranslator()
	tr.Translate(m)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := &m.Services[i%100].Endpoints[(i*7)%100]
		e.Ready = !e.Ready
		tr.Translate(m)
		i++
	}
}
