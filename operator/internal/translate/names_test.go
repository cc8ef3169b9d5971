package translate

import "testing"

// TestHostPort: the port a bare clusterset host reaches through a gateway is the only
// port, else the only gRPC one; two gRPC ports, or none among several, leave the bare
// host unrouted rather than guessing.
func TestHostPort(t *testing.T) {
	web := Port{Name: "http", Port: 80}
	grpcByName := Port{Name: "grpc-api", Port: 9000}
	grpcByProtocol := Port{Name: "api", Port: 9001, AppProtocol: "grpc"}
	for _, tc := range []struct {
		name  string
		ports []Port
		want  uint32 // 0: not routed
	}{
		{"one port, whatever it serves", []Port{web}, 80},
		{"the gRPC port by name", []Port{web, grpcByName}, 9000},
		{"the gRPC port by appProtocol", []Port{grpcByProtocol, web}, 9001},
		{"a port named grpc", []Port{web, {Name: "grpc", Port: 7070}}, 7070},
		{"two gRPC ports", []Port{grpcByName, grpcByProtocol}, 0},
		{"several ports, none gRPC", []Port{web, {Name: "metrics", Port: 9090}}, 0},
		{"a name that only starts like grpc", []Port{web, {Name: "grpcweb", Port: 8081}}, 0},
		{"no port", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got uint32
			if p, ok := HostPort(tc.ports); ok {
				got = p.Port
			}
			if got != tc.want {
				t.Errorf("HostPort = %d, want %d", got, tc.want)
			}
		})
	}
}
