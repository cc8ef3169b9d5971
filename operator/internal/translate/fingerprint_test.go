package translate

import (
	"slices"
	"testing"
	"time"
)

// TestFingerprintSeesEveryChange: a service's fingerprint changes with every part of the
// service the translation reads, endpoints sharing their cluster, network and ports
// included, and stays for an equal copy.
func TestFingerprintSeesEveryChange(t *testing.T) {
	base := func() Service {
		grpc := []Port{{Name: "grpc", Port: 8080}}
		return Service{Namespace: "shop", Name: "reviews", Local: true, Imported: true, ServiceAccount: "reviews",
			Ports: []Port{{Name: "grpc", Port: 9080}}, ImportPorts: []Port{{Name: "grpc", Port: 9080}},
			Endpoints: []Endpoint{
				{Cluster: "a", Network: "net-1", Address: "10.0.0.1", Ports: grpc, Ready: true},
				{Cluster: "a", Network: "net-1", Address: "10.0.0.2", Ports: grpc, Ready: true},
				{Cluster: "b", Network: "net-1", Address: "10.1.0.1", Ports: grpc, Ready: true},
			},
			Policy: Policy{Failover: []string{"b"}}}
	}
	fp := func(s Service) uint64 { return serviceFingerprint(1, &s) }
	want := fp(base())
	if got := fp(base()); got != want {
		t.Fatalf("equal services: fingerprints %x and %x", got, want)
	}
	for name, change := range map[string]func(*Service){
		"second endpoint in another cluster": func(s *Service) { s.Endpoints[1].Cluster = "b" },
		"second endpoint in another network": func(s *Service) { s.Endpoints[1].Network = "net-2" },
		"second endpoint's port": func(s *Service) {
			s.Endpoints[1].Ports = []Port{{Name: "grpc", Port: 8081}}
		},
		"second endpoint's port name": func(s *Service) {
			s.Endpoints[1].Ports = []Port{{Name: "http", Port: 8080}}
		},
		"third endpoint in the first's cluster": func(s *Service) { s.Endpoints[2].Cluster = "a" },
		"an address":                            func(s *Service) { s.Endpoints[2].Address = "10.1.0.2" },
		"a readiness":                           func(s *Service) { s.Endpoints[0].Ready = false },
		"an endpoint fewer":                     func(s *Service) { s.Endpoints = s.Endpoints[:2] },
		"service port":                          func(s *Service) { s.Ports[0].Port = 9081 },
		"import port":                           func(s *Service) { s.ImportPorts = nil },
		"not local":                             func(s *Service) { s.Local = false },
		"exported here":                         func(s *Service) { s.ExportedHere = true },
		"service account":                       func(s *Service) { s.ServiceAccount = "" },
		"failover":                              func(s *Service) { s.Policy.Failover = []string{"c"} },
		"weights":                               func(s *Service) { s.Policy.Weights = []Weight{{Cluster: "a", Weight: 1}} },
		"timeout":                               func(s *Service) { s.Policy.Timeout = time.Second },
		"retries":                               func(s *Service) { s.Policy.Retry = &Retry{Attempts: 2, On: []string{"unavailable"}} },
		"outlier detection":                     func(s *Service) { s.Policy.Outlier = &Outlier{ConsecutiveErrors: 5} },
	} {
		s := base()
		s.Endpoints = slices.Clone(s.Endpoints)
		change(&s)
		if fp(s) == want {
			t.Errorf("%s: the fingerprint did not change", name)
		}
	}
	if s := base(); fp(s) == serviceFingerprint(2, &s) {
		t.Error("what every service shares changed and the fingerprint did not")
	}
}
